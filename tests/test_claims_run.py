"""The main command's contract: the table, the exit status, --only, --list and the --json schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proofs_checks import __main__ as cli
from proofs_checks.claims import registry
from proofs_checks.claims.declaration import EVIDENCE_KINDS, Check, Outcome

PASSING = Check(id="C1", claim="always true", provenance="derived", evidence="exact", spec_functions=(),
                run=lambda profile: Outcome(measured=0.0, bound=1.0, passed=True, detail="fine"))
FAILING = Check(id="C2", claim="always false", provenance="paper", evidence="measured", spec_functions=(),
                run=lambda profile: Outcome(measured=2.0, bound=1.0, passed=False))
CRASHING = Check(id="C3", claim="raises", provenance="paper", evidence="enclosed", spec_functions=(),
                 run=lambda profile: 1 / 0)  # type: ignore[arg-type, return-value]


@pytest.fixture
def fake_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "all_checks", lambda: (PASSING, FAILING, CRASHING))


@pytest.mark.usefixtures("fake_checks")
def test_exit_status_is_nonzero_when_any_check_fails_and_zero_when_all_pass(capsys: pytest.CaptureFixture[str]
                                                                             ) -> None:
    assert cli.main([]) == 1
    out = capsys.readouterr().out
    assert "1 passed, 2 failed" in out and "raised ZeroDivisionError" in out
    assert cli.main(["--only", "C1"]) == 0


@pytest.mark.usefixtures("fake_checks")
def test_json_output_has_the_documented_schema(tmp_path: Path) -> None:
    path = tmp_path / "out" / "results.json"
    cli.main(["--json", str(path)])
    payload = json.loads(path.read_text())
    assert payload["passed"] is False
    assert [c["id"] for c in payload["checks"]] == ["C1", "C2", "C3"]
    for entry in payload["checks"]:
        assert {"id", "claim", "provenance", "evidence", "passed", "measured", "bound"} <= set(entry)
        assert isinstance(entry["passed"], bool)
    assert [c["evidence"] for c in payload["checks"]] == ["exact", "measured", "enclosed"]
    assert payload["checks"][2]["measured"] is None  # NaN from a crashed check is JSON null, not invalid JSON


@pytest.mark.usefixtures("fake_checks")
def test_list_prints_ids_and_unknown_only_ids_are_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--list"]) == 0
    assert "C2    [paper] (measured) always false" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["--only", "C99"])


def test_registry_checks_have_unique_ids_and_valid_provenance() -> None:
    checks = registry.all_checks()
    ids = [check.id for check in checks]
    assert len(ids) == len(set(ids))
    assert all(check.provenance in {"paper", "code", "reconstructed", "derived", "literature"} for check in checks)
    assert all(check.evidence in EVIDENCE_KINDS for check in checks)


def test_the_table_has_an_evidence_column(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    monkeypatch.setattr(cli, "all_checks", lambda: (PASSING,))
    cli.main([])
    header, _, row = capsys.readouterr().out.splitlines()[:3]
    assert header.split()[3] == "evidence" and row.split()[3:5] == ["derived", "exact"]


def _draw_line(profile: object, path: Path) -> None:
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots()
    axis.plot([0, 1], [0, 1])
    figure.savefig(path)
    plt.close(figure)


@pytest.mark.usefixtures("fake_checks")
def test_plots_writes_every_figure_and_a_report_embedding_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    from proofs_checks.claims.declaration import Figure

    monkeypatch.setattr(cli, "all_figures", lambda: (Figure("line.png", "A line.", _draw_line),))
    cli.main(["--only", "C1", "--plots", str(tmp_path)])
    assert (tmp_path / "line.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (tmp_path / "report.md").read_text()
    assert "![A line.](line.png)" in report and "| C1 | always true |" in report
