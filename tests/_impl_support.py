"""Shared helpers for the impl tests: example counts scaled by the Hypothesis profile, NaN-poisoned torch.empty,
and the harness assertion (the same ``check_case`` the public CLI runs)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from hypothesis import settings, target
from hypothesis.control import currently_in_test_context

from proofs_checks.differential import Problem, check_case


def examples(at_ci: int) -> int:
    """``at_ci`` examples under the ci profile (60 examples), scaled for dev (25) and deep (1000)."""
    return max(3, round(at_ci * settings.default.max_examples / 60))


@contextmanager
def poisoned_empty() -> Iterator[None]:
    """torch.empty / torch.empty_like return NaN-filled floating tensors while active (catches unwritten rows)."""
    empty, empty_like = torch.empty, torch.empty_like

    def poison(t: torch.Tensor) -> torch.Tensor:
        if t.is_floating_point():
            t.fill_(math.nan)
        return t

    def fake_empty(*args: Any, **kwargs: Any) -> torch.Tensor:
        return poison(empty(*args, **kwargs))

    def fake_empty_like(*args: Any, **kwargs: Any) -> torch.Tensor:
        return poison(empty_like(*args, **kwargs))

    torch.empty, torch.empty_like = fake_empty, fake_empty_like  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.empty, torch.empty_like = empty, empty_like  # type: ignore[assignment]


def assert_matches_spec(fn: Callable[..., object], problem: Problem, *, grads: bool = True) -> None:
    """Outputs (and gradients) of ``fn`` within the error model of proofs_checks.differential.tolerances."""
    with poisoned_empty():
        result = check_case(fn, problem, grads=grads)
    _, ratio = result.worst()
    if currently_in_test_context():
        target(ratio if math.isfinite(ratio) else 1e300, label="error/budget")
    assert result.passed, result.report()
