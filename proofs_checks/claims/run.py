"""Run checks, render the verdict table, write JSON and the markdown report with figures."""

from __future__ import annotations

import json
import math
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from proofs_checks.claims.declaration import Check, Figure, Outcome, Profile

__all__ = ["Result", "render_table", "run_checks", "write_json", "write_report"]


@dataclass(frozen=True)
class Result:
    """A check and what it measured, with its wall time in seconds."""

    check: Check
    outcome: Outcome
    seconds: float


def _run_one(check: Check, profile: Profile) -> Outcome:
    try:
        return check.run(profile)
    except Exception as error:  # a crashing check is a failing check, reported with its cause
        last = traceback.format_exception_only(error)[-1].strip()
        return Outcome(measured=float("nan"), bound=float("nan"), passed=False, detail=f"raised {last}")


def run_checks(checks: Sequence[Check], profile: Profile, progress: TextIO | None = sys.stderr) -> list[Result]:
    """Run every check in order, printing a one-line progress bar to ``progress`` (None for silence)."""
    results = []
    width = 24
    interactive = progress is not None and progress.isatty()
    for index, check in enumerate(checks):
        done = width * index // max(len(checks), 1)
        bar = f"[{'#' * done}{'.' * (width - done)}] {index}/{len(checks)} running {check.id:<6}"
        if progress is not None:
            # On a terminal the bar redraws in place; in a log (CI) it is one line per check.
            progress.write(f"\r{bar}" if interactive else f"{bar}\n")
            progress.flush()
        start = time.perf_counter()
        outcome = _run_one(check, profile)
        results.append(Result(check, outcome, time.perf_counter() - start))
    if progress is not None:
        progress.write(f"{chr(13) if interactive else ''}[{'#' * width}] {len(checks)}/{len(checks)} done\n")
    return results


def _number(x: float) -> str:
    return f"{x:.3g}" if math.isnan(x) or abs(x) < 1e4 else f"{x:.3e}"


def render_table(results: Sequence[Result], claim_width: int = 62) -> str:
    """A plain-text table: id, claim, provenance, evidence, measured, bound, verdict, seconds (and the detail)."""
    header = (f"{'id':<5} {'claim':<{claim_width}} {'provenance':<14} {'evidence':<9} {'measured':>10} "
              f"{'bound':>10} verdict   time")
    lines = [header, "-" * len(header)]
    for r in results:
        claim = r.check.claim if len(r.check.claim) <= claim_width else r.check.claim[: claim_width - 3] + "..."
        verdict = "PASS" if r.outcome.passed else "FAIL"
        lines.append(f"{r.check.id:<5} {claim:<{claim_width}} {r.check.provenance:<14} {r.check.evidence:<9} "
                     f"{_number(r.outcome.measured):>10} {_number(r.outcome.bound):>10} {verdict:<7} "
                     f"{r.seconds:5.1f}s")
        if r.outcome.detail:
            lines.append(f"{'':<5} {r.outcome.detail}")
    passed = sum(r.outcome.passed for r in results)
    lines.append("-" * len(header))
    lines.append(f"{passed} passed, {len(results) - passed} failed")
    return "\n".join(lines)


def write_json(results: Sequence[Result], profile: Profile, path: Path) -> None:
    """Machine-readable results: ``{"profile": ..., "checks": [{id, claim, provenance, evidence, passed, ...}]}``."""
    payload = {
        "profile": {"name": profile.name, "dps": profile.dps, "samples": profile.samples, "seed": profile.seed},
        "passed": all(r.outcome.passed for r in results),
        "checks": [
            {
                "id": r.check.id,
                "claim": r.check.claim,
                "provenance": r.check.provenance,
                "evidence": r.check.evidence,
                "spec_functions": list(r.check.spec_functions),
                "passed": r.outcome.passed,
                "measured": None if math.isnan(r.outcome.measured) else r.outcome.measured,
                "bound": None if math.isnan(r.outcome.bound) else r.outcome.bound,
                "detail": r.outcome.detail,
                "seconds": round(r.seconds, 3),
            }
            for r in results
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def write_report(results: Sequence[Result], figures: Sequence[Figure], profile: Profile, directory: Path) -> Path:
    """Render every figure as PNG into ``directory`` and write ``report.md`` that embeds them after the table."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = [
        "# DeltaFormer reference: the paper's claims, checked",
        "",
        f"Profile `{profile.name}` ({profile.dps} digits, sample multiplier {profile.samples}, seed {profile.seed}).",
        "",
        "| id | claim | provenance | evidence | measured | bound | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        claim = r.check.claim.replace("|", "\\|")
        lines.append(f"| {r.check.id} | {claim} | [{r.check.provenance}] | {r.check.evidence} | "
                     f"{_number(r.outcome.measured)} | "
                     f"{_number(r.outcome.bound)} | {'PASS' if r.outcome.passed else 'FAIL'} |")
    lines.append("")
    for figure in figures:
        figure.render(profile, directory / figure.filename)
        lines += [f"![{figure.caption}]({figure.filename})", "", figure.caption, ""]
    report = directory / "report.md"
    report.write_text("\n".join(lines))
    return report
