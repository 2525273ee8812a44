"""``python -m proofs_checks.proofs``: exit status, --only, --list, the --json schema; the symbolic decision rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sympy as sp

from proofs_checks.proofs import __main__ as cli
from proofs_checks.proofs.record import Step, Verdict, conclude, declare
from proofs_checks.proofs.symbolic import equal, nc_symbols, symbols, vanishes


def _holds() -> Verdict:
    return conclude([Step("identity", True, "residual 0")])


def _fails() -> Verdict:
    return conclude([Step("identity", False, "residual 1")])


def _crashes() -> Verdict:
    raise ZeroDivisionError("division by zero")


GOOD = declare("P.good", "always true", "C6", "symbolic", "all T", _holds, "false twin", _fails)
BAD = declare("P.bad", "always false", "C7", "exact", "d_k = 64", _fails, "false twin", _fails)
CRASH = declare("P.crash", "raises", "C4", "interval", "N = 2^4..2^40", _crashes, "false twin", _fails)


@pytest.fixture
def fake_proofs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "all_proofs", lambda: (GOOD, BAD, CRASH))


@pytest.mark.usefixtures("fake_proofs")
def test_exit_status_is_one_when_any_proof_fails_and_zero_when_all_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 1
    out = capsys.readouterr().out
    assert "1 proved, 2 failed" in out and "raised ZeroDivisionError" in out
    assert cli.main(["--only", "P.good"]) == 0
    assert "1 proved, 0 failed" in capsys.readouterr().out


@pytest.mark.usefixtures("fake_proofs")
def test_json_output_has_the_documented_schema(tmp_path: Path) -> None:
    path = tmp_path / "out" / "proofs.json"
    assert cli.main(["--json", str(path)]) == 1
    payload = json.loads(path.read_text())
    assert payload["passed"] is False
    assert [p["id"] for p in payload["proofs"]] == ["P.good", "P.bad", "P.crash"]
    for entry in payload["proofs"]:
        assert set(entry) == {"id", "statement", "claim", "method", "scope", "passed", "detail", "seconds"}
        assert isinstance(entry["passed"], bool) and isinstance(entry["seconds"], float)
    assert payload["proofs"][0]["scope"] == "all T" and payload["proofs"][1]["method"] == "exact"


@pytest.mark.usefixtures("fake_proofs")
def test_list_prints_every_proof_and_unknown_only_ids_are_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "P.bad" in out and "d_k = 64: always false" in out
    with pytest.raises(SystemExit):
        cli.main(["--only", "P.nope"])


def test_a_twin_reports_its_own_id_and_statement() -> None:
    twin = GOOD.twin()
    assert (twin.id, twin.statement, twin.passed) == ("P.good/twin", "false twin", False)
    assert "FAILS identity: residual 1" in twin.detail


def test_vanishes_proves_identities_and_gives_a_counterexample_otherwise() -> None:
    x, y = symbols("x y", positive=True)
    assert vanishes("square", (x + y) ** 2 - x**2 - 2 * x * y - y**2).holds
    wrong = vanishes("not an identity", sp.sin(x) ** 2 + sp.cos(x) ** 2 - 1 - x / 100)
    assert not wrong.holds and " at x=" in wrong.evidence


def test_vanishes_on_noncommutative_symbols_does_not_assume_commutativity() -> None:
    A, B = nc_symbols("A B")
    assert equal("associativity", (A * B) * A, A * (B * A)).holds
    commutator = equal("commutes?", A * B, B * A)
    assert not commutator.holds and "non-zero on random rational 3x3 matrices" in commutator.evidence


def test_vanishes_checks_every_branch_of_a_piecewise_residual() -> None:
    b = sp.Symbol("b")
    n, t = sp.Symbol("n", integer=True, nonnegative=True), sp.Symbol("t", integer=True, positive=True)
    geometric = sp.Sum(b**n, (n, 0, t)).doit()
    assert vanishes("index shift", geometric - 1 - b * sp.Sum(b**n, (n, 0, t - 1)).doit()).holds
    assert not vanishes("off by one", geometric - b * sp.Sum(b**n, (n, 0, t - 1)).doit()).holds
