"""The equation index is generated from the spec's docstrings; it must cover every public spec function."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from spec import deltaformer, index


def test_every_public_spec_function_has_an_index_line() -> None:
    assert index.unindexed_functions() == []


def test_index_ids_and_tags_are_well_formed_and_cover_the_deltaformer_contract() -> None:
    entries = index.equation_index()
    assert entries, "the index is empty"
    for entry in entries:
        assert re.fullmatch(r"[A-Z]+\.\d+[a-z]?", entry.id), entry
        assert entry.tags and set(entry.tags) <= set(index.PROVENANCE_TAGS), entry
    functions = {entry.function for entry in entries}
    assert {"spec.deltaformer.deltaformer_u", "spec.deltaformer.deltaformer_attn"} <= functions


def test_an_unindexed_function_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deltaformer.deltaformer_u_solve, "__doc__", "Solve it.")
    assert index.unindexed_functions() == ["spec.deltaformer.deltaformer_u_solve"]


def test_the_docs_copy_of_the_index_is_current() -> None:
    docs = Path(__file__).resolve().parents[1] / "docs" / "equation_index.md"
    assert index.markdown_table(index.equation_index()) in docs.read_text(), (
        "docs/equation_index.md is stale: regenerate it with `python -m spec.index --write docs/equation_index.md`"
    )
