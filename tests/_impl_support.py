"""Shared helpers for the impl tests: example counts scaled by the Hypothesis profile, NaN-poisoned torch.empty (the
harness's own, re-exported), the harness assertion (the same ``check_case`` the public CLI runs), and the
late-overflow case run on every backend."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from hypothesis import settings, target
from hypothesis.control import currently_in_test_context

import impl
from proofs_checks.differential import Problem, check_case
from proofs_checks.differential.poison import poisoned_empty

__all__ = ["assert_matches_spec", "assert_overflow_contained", "examples", "overflow_at_row_11", "poisoned_empty"]


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


def overflow_at_row_11(backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(o with v_10 = 3.3e38 and v_11 = -3.3e38, o with ordinary values there, u of the first): unit keys, fp32;
    u_11 overflows to -inf in one head, and rows 0..9 depend on neither row (causality)."""
    gen = torch.Generator().manual_seed(12)
    q, k, v = (torch.randn(1, 12, 2, 4, generator=gen) for _ in range(3))
    k = k / k.norm(dim=-1, keepdim=True)
    beta = torch.rand(1, 12, 2, generator=gen)
    ordinary = impl.deltaformer_attn(q, k, v, beta, chunk_size=4, backend=backend)
    v[0, 10], v[0, 11] = 3.3e38, -3.3e38
    u = impl.deltaformer_u(k, k, v, beta, chunk_size=4, backend=backend)
    return impl.deltaformer_attn(q, k, v, beta, chunk_size=4, backend=backend), ordinary, u


def assert_overflow_contained(overflowed: torch.Tensor, ordinary: torch.Tensor, u: torch.Tensor) -> None:
    """Rows before the overflow are bit for bit those of the same call with ordinary values in rows 10 and 11 (the
    same arithmetic: a later row enters an earlier one only through an exactly zero weight); an output entry is
    non-finite exactly where some u_j, j <= t, of its column is."""
    assert bool(torch.isfinite(u[:, :11]).all()) and not bool(torch.isfinite(u[:, 11]).all()), "no overflow"
    assert torch.equal(overflowed[:, :10], ordinary[:, :10]), (overflowed[:, :10] - ordinary[:, :10]).abs().max()
    reached = torch.cummax((~torch.isfinite(u)).to(torch.int8), dim=1).values.bool()
    assert torch.equal(~torch.isfinite(overflowed), reached)
