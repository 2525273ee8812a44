"""Run proofs, render the verdict table, write JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from proofs_checks.proofs.record import Proof, ProofResult

__all__ = ["render_table", "run_proofs", "write_json"]


def run_proofs(proofs: Sequence[Proof]) -> list[ProofResult]:
    """Run every proof in order (a proof that raises is reported as failed by ``record.declare``)."""
    return [proof.run() for proof in proofs]


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def render_table(results: Sequence[ProofResult], statement_width: int = 60, scope_width: int = 34,
                 details: bool = False) -> str:
    """A plain-text table: id, statement, method, scope, verdict, seconds (and the detail line if ``details``)."""
    id_width = max([len(r.id) for r in results] + [2])
    header = (f"{'id':<{id_width}} {'claim':<5} {'statement':<{statement_width}} {'method':<9} "
              f"{'scope':<{scope_width}} verdict   time")
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(f"{r.id:<{id_width}} {r.claim:<5} {_clip(r.statement, statement_width):<{statement_width}} "
                     f"{r.method:<9} {_clip(r.scope, scope_width):<{scope_width}} "
                     f"{'PASS' if r.passed else 'FAIL':<7} {r.seconds:5.1f}s")
        if details or not r.passed:
            lines.append(f"{'':<{id_width}} {r.detail}")
    passed = sum(r.passed for r in results)
    lines.append("-" * len(header))
    lines.append(f"{passed} proved, {len(results) - passed} failed")
    return "\n".join(lines)


def write_json(results: Sequence[ProofResult], path: Path) -> None:
    """Machine-readable results: ``{"passed": bool, "proofs": [{id, statement, claim, method, scope, ...}]}``."""
    payload = {"passed": all(r.passed for r in results), "proofs": [r.to_json() for r in results]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
