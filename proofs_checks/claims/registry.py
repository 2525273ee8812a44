"""The explicit list of check modules, in the order of equations.md section 6. Each exports ``CHECKS`` and may
export ``FIGURES``; nothing is discovered by magic."""

from __future__ import annotations

import importlib

from proofs_checks.claims.declaration import Check, Figure

__all__ = ["CHECK_MODULES", "all_checks", "all_figures"]

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
