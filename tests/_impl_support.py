"""Shared helpers for the impl tests: example counts scaled by the Hypothesis profile, NaN-poisoned torch.empty (the
harness's own, re-exported), and the harness assertion (the same ``check_case`` the public CLI runs)."""

from __future__ import annotations

import math
from collections.abc import Callable

from hypothesis import settings, target
from hypothesis.control import currently_in_test_context

from proofs_checks.differential import Problem, check_case
from proofs_checks.differential.poison import poisoned_empty

__all__ = ["assert_matches_spec", "examples", "poisoned_empty"]


def examples(at_ci: int) -> int:
    """``at_ci`` examples under the ci profile (60 examples), scaled for dev (25) and deep (1000)."""
    return max(3, round(at_ci * settings.default.max_examples / 60))


def assert_matches_spec(fn: Callable[..., object], problem: Problem, *, grads: bool = True) -> None:
    """Outputs (and gradients) of ``fn`` within the error model of proofs_checks.differential.tolerances."""
    result = check_case(fn, problem, grads=grads)  # check_case poisons torch.empty during the kernel's calls
    _, ratio = result.worst()
    if currently_in_test_context():
        target(ratio if math.isfinite(ratio) else 1e300, label="error/budget")
    assert result.passed, result.report()
