"""Mutation testing of the harness (issue 11): at its defaults (seed 0, 50 drawn cases, the pinned cases first) it
reports every mutant of ``tests/mutants.py`` as failing, and passes every correct kernel in every dtype.

The mutants stop at their first failing case (``fail_fast``; the search order is the default run's, so a mutant
caught here is caught by the default run). The full default runs, with counts of failing cases per mutant, are in
docs/differential_harness.md ("Mutation results").
"""

from __future__ import annotations

import pytest

from proofs_checks.differential import run
from tests import mutants

ALL_DTYPES = ("float64", "float32", "float16", "bfloat16")


@pytest.mark.parametrize("name", list(mutants.MUTANTS))
def test_harness_reports_the_mutant(name: str) -> None:
    op, _, bug = name.partition("__")
    dtypes = ("float16", "bfloat16") if bug in mutants.LOW_PRECISION_BUGS else ("float64", "float32")
    summary = run(mutants.MUTANTS[name], op, dtypes=dtypes, shrink=False, fail_fast=True)
    assert not summary.passed, summary.report()
    assert summary.failures[0].kind.split(" ")[0] != "raised", summary.report()  # a finding, not a crash


@pytest.mark.parametrize("name", list(mutants.CORRECT))
def test_harness_passes_the_correct_kernel_in_every_dtype(name: str) -> None:
    """Catches: a budget or a consistency allowance too tight for a correct kernel (same-precision references,
    float64-inside kernels), and spurious failures of the pinned regimes (gap, cancellation) in any dtype."""
    op = name.partition("__")[0]
    summary = run(mutants.CORRECT[name], op, dtypes=ALL_DTYPES, examples=6, shrink=False)
    assert summary.passed, summary.report()
