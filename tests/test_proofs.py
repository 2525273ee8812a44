"""The machine-checked proofs: every proof passes, every twin (the same argument on a perturbed statement) fails.

A twin that passed would mean the argument cannot tell a right statement from a wrong one. Each proof and twin
runs once per session (``outcomes``), so the parametrised tests only read results.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from proofs_checks.proofs.record import Proof, ProofResult
from proofs_checks.proofs.registry import all_proofs

PROOFS = all_proofs()
CLAIM_ID = re.compile(r"^C([1-9]|1[0-2])[a-z]?$")


@pytest.fixture(scope="session")
def outcomes() -> dict[str, tuple[ProofResult, ProofResult]]:
    return {proof.id: (proof.run(), proof.twin()) for proof in PROOFS}


@pytest.mark.parametrize("proof", PROOFS, ids=[p.id for p in PROOFS])
def test_every_proof_passes(proof: Proof, outcomes: dict[str, tuple[ProofResult, ProofResult]]) -> None:
    result, _ = outcomes[proof.id]
    assert result.passed, result.detail
    assert (result.id, result.claim, result.method, result.scope) == (proof.id, proof.claim, proof.method,
                                                                      proof.scope)


@pytest.mark.parametrize("proof", PROOFS, ids=[p.id for p in PROOFS])
def test_every_twin_fails_and_says_where(proof: Proof, outcomes: dict[str, tuple[ProofResult, ProofResult]]) -> None:
    _, twin = outcomes[proof.id]
    assert not twin.passed, f"the twin of {proof.id} passed: {twin.detail}"
    assert twin.id == f"{proof.id}/twin"
    # The failing step is named, with its residual or counterexample, not just "raised".
    assert "FAILS" in twin.detail and "raised" not in twin.detail, twin.detail


def test_proofs_are_well_formed_with_unique_ids_and_known_claims() -> None:
    ids = [p.id for p in PROOFS]
    assert len(ids) == len(set(ids))
    for proof in PROOFS:
        assert CLAIM_ID.match(proof.claim), proof.claim
        assert proof.method in ("symbolic", "interval", "exact")
        assert proof.scope and proof.statement
        assert proof.scope.startswith("all") or re.search(r"\d", proof.scope), proof.scope


def test_the_docs_page_lists_every_proof() -> None:
    page = (Path(__file__).resolve().parents[1] / "docs" / "proofs.md").read_text()
    missing = [p.id for p in PROOFS if f"| {p.id} |" not in page]
    assert not missing, f"docs/proofs.md has no row for {missing}"


def test_the_proofs_meet_the_issue_targets_of_count_scope_and_methods() -> None:
    assert len(PROOFS) >= 10
    assert sum(p.scope.startswith("all") for p in PROOFS) >= 5
    assert {p.method for p in PROOFS} == {"symbolic", "interval", "exact"}
