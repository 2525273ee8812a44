"""The explicit list of proof modules; each exports ``PROOFS``. Nothing is discovered by magic."""

from __future__ import annotations

import importlib

from proofs_checks.proofs.record import Proof

__all__ = ["PROOF_MODULES", "all_proofs"]

PROOF_MODULES: tuple[str, ...] = (
    "proofs_checks.proofs.deltaformer_forms",
    "proofs_checks.proofs.update_rules",
    "proofs_checks.proofs.softmax_limit",
    "proofs_checks.proofs.snr_moments",
    "proofs_checks.proofs.snr_closed_forms",
    "proofs_checks.proofs.required_dimension",
    "proofs_checks.proofs.swap_margin",
)


def all_proofs() -> tuple[Proof, ...]:
    """Every proof, module by module in the order of ``PROOF_MODULES``."""
    proofs: list[Proof] = []
    for name in PROOF_MODULES:
        proofs.extend(importlib.import_module(name).PROOFS)
    return tuple(proofs)
