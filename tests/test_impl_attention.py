"""impl.softmax_attn vs spec.deltaformer.causal_softmax_readout (DF.8) through the harness; varlen; gradcheck."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings

import impl
from proofs_checks.differential import Problem, problems
from tests._impl_support import assert_matches_spec, examples


@settings(max_examples=examples(10))
@given(problem=problems("softmax_attn", dtypes=("float64", "float32", "float16", "bfloat16"), max_t=40,
                        long_t=200))
def test_softmax_attn_matches_spec(problem: object) -> None:
    """Catches: a non-causal or off-by-one mask, a wrong default scale, a wrong SDPA backward."""
    assert_matches_spec(impl.softmax_attn, problem)  # type: ignore[arg-type]


def test_varlen_equals_per_sequence_calls() -> None:
    gen = torch.Generator().manual_seed(0)
    bounds = [0, 1, 5, 6, 20]
    q, k, v = (torch.randn(1, bounds[-1], 2, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    o = impl.softmax_attn(q, k, v, cu_seqlens=torch.tensor(bounds))
    for start, end in itertools.pairwise(bounds):
        part = impl.softmax_attn(*(x[:, start:end].contiguous() for x in (q, k, v)))
        torch.testing.assert_close(o[:, start:end], part, rtol=0, atol=0)


def test_gradcheck_fp64() -> None:
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 6, 2, 3, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(impl.softmax_attn, (q, k, v), fast_mode=True)


@pytest.mark.parametrize("scale", [-0.5, 0.0])
@pytest.mark.parametrize("K", [4, 3], ids=["flash", "K!=V"])
def test_non_positive_scale_matches_spec(scale: float, K: int) -> None:
    """scale <= 0 is a valid softmax temperature (0: uniform weights). Before: CPU SDPA's fused causal op returned
    NaN in every row but the last."""
    assert_matches_spec(impl.softmax_attn, Problem("softmax_attn", B=1, T=23, H=2, K=K, V=4, scale=scale, seed=4))


def test_gradgradcheck_fp64() -> None:
    """Second-order gradients (the fused CPU op has no derivative of its backward; the create_graph path does)."""
    gen = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 6, 2, 3, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradgradcheck(lambda q, k, v: impl.softmax_attn(q, k, v, scale=-0.7), (q, k, v),
                                        fast_mode=True)
