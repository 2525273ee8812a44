"""Evidence kinds: a check may say ``proved`` only when a machine-checked proof for every size backs its claim."""

from __future__ import annotations

from pathlib import Path

from proofs_checks.claims.declaration import EVIDENCE_KINDS, Check, Outcome
from proofs_checks.claims.registry import all_checks, unbacked_proved_checks
from proofs_checks.proofs.record import Proof, ProofResult
from proofs_checks.proofs.registry import all_proofs


def _check(check_id: str, evidence: str) -> Check:
    return Check(id=check_id, claim="a claim", provenance="derived", evidence=evidence,  # type: ignore[arg-type]
                 spec_functions=(), run=lambda profile: Outcome(0.0, 1.0, True))


def _proof(claim: str, scope: str) -> Proof:
    result = ProofResult("P", "a statement", claim, "symbolic", scope, True, "", 0.0)
    return Proof("P", "a statement", claim, "symbolic", scope, lambda: result, lambda: result)


def test_every_check_declares_one_of_the_four_evidence_kinds() -> None:
    assert EVIDENCE_KINDS == ("proved", "enclosed", "exact", "measured")
    assert all(check.evidence in EVIDENCE_KINDS for check in all_checks())


def test_a_check_is_declared_proved_only_if_a_proof_for_every_size_backs_it() -> None:
    assert unbacked_proved_checks(all_checks(), all_proofs()) == []


def test_the_consistency_rule_rejects_a_finite_scope_or_another_claims_proof() -> None:
    checks = [_check("C6", "proved"), _check("C7", "proved"), _check("C9", "enclosed")]
    proofs = [_proof("C6", "all T (induction)"), _proof("C7", "T <= 4"), _proof("C9", "all t")]
    assert unbacked_proved_checks(checks, proofs) == ["C7"]
    assert unbacked_proved_checks([_check("C12", "proved")], proofs) == ["C12"]


def test_at_least_eight_checks_are_proved_enclosed_or_exact() -> None:
    strong = [check.id for check in all_checks() if check.evidence != "measured"]
    assert len(strong) >= 8, strong


def test_the_readme_evidence_table_matches_the_declarations() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = readme[readme.index("| check | evidence |"):]
    declared: dict[str, str] = {}
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            break
        ids, evidence = (cell.strip() for cell in line.split("|")[1:3])
        declared.update(dict.fromkeys((i.strip() for i in ids.split(",")), evidence))
    assert declared == {check.id: check.evidence for check in all_checks()}
