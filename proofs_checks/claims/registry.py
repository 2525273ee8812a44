"""The explicit list of check modules, in the order of equations.md section 6. Each exports ``CHECKS`` and may
export ``FIGURES``; nothing is discovered by magic."""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from proofs_checks.claims.declaration import Check, Figure
from proofs_checks.proofs.record import Proof

__all__ = ["CHECK_MODULES", "all_checks", "all_figures", "unbacked_proved_checks"]

CHECK_MODULES: tuple[str, ...] = (
    "proofs_checks.claims.snr",
    "proofs_checks.claims.update_rules",
    "proofs_checks.claims.deltaformer_identities",
    "proofs_checks.claims.swap_tracking",
)


def all_checks() -> tuple[Check, ...]:
    """Every check, module by module, in the order of ``CHECK_MODULES``, then sorted by claim number."""
    checks: list[Check] = []
    for name in CHECK_MODULES:
        checks.extend(importlib.import_module(name).CHECKS)
    return tuple(sorted(checks, key=_claim_order))


def all_figures() -> tuple[Figure, ...]:
    """Every figure the check modules declare."""
    figures: list[Figure] = []
    for name in CHECK_MODULES:
        figures.extend(getattr(importlib.import_module(name), "FIGURES", ()))
    return tuple(figures)


def _claim_order(check: Check) -> tuple[int, str]:
    digits = "".join(ch for ch in check.id[1:] if ch.isdigit())
    return (int(digits) if digits else 0, check.id)


def unbacked_proved_checks(checks: Iterable[Check], proofs: Iterable[Proof]) -> list[str]:
    """Ids of checks declared ``proved`` that no proof for every size backs (a proof naming the check's id as its
    claim with a scope starting "all"). Empty when the declarations are honest."""
    backed = {proof.claim for proof in proofs if proof.scope.startswith("all")}
    return [check.id for check in checks if check.evidence == "proved" and check.id not in backed]
