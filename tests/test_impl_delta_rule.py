"""impl.delta_rule and impl.linear_attn vs spec.updates (UPD.3a DeltaNet, UPD.1a linear attention) through the harness,
state chaining, varlen, state orientation ([K, V] = the paper's S transposed), and fp64 gradcheck."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import example, given, settings

import impl
from proofs_checks.differential import Problem, problems
from tests._impl_support import assert_matches_spec, examples

OPS = {"delta_rule": impl.delta_rule, "linear_attn": impl.linear_attn}


@settings(max_examples=examples(14))
@given(problem=problems("delta_rule", max_t=40, long_t=200))
@example(problem=Problem("delta_rule", B=1, T=1, H=1, K=2, V=3, with_state=True))
@example(problem=Problem("delta_rule", B=1, T=70, H=2, K=8, V=4, chunk_size=31, beta_regime="two", seed=2))
def test_delta_rule_matches_spec(problem: Problem) -> None:
    """Catches: a wrong UT solve, the diagonal in the wrong triangle, state not carried across chunks, a missing
    transpose of the state, initial_state ignored."""
    assert_matches_spec(impl.delta_rule, problem)


@settings(max_examples=examples(10))
@given(problem=problems("linear_attn", max_t=40, long_t=200))
def test_linear_attn_matches_spec(problem: Problem) -> None:
    assert_matches_spec(impl.linear_attn, problem)


@settings(max_examples=examples(6))
@given(problem=problems("delta_rule", dtypes=("float16", "bfloat16"), max_t=40, long_t=100))
def test_delta_rule_low_precision_matches_spec(problem: Problem) -> None:
    assert_matches_spec(impl.delta_rule, problem)


def _inputs(B: int, T: int, H: int, K: int, V: int, seed: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, K, generator=gen, dtype=torch.float64)
    k = torch.nn.functional.normalize(torch.randn(B, T, H, K, generator=gen, dtype=torch.float64), dim=-1)
    v = torch.randn(B, T, H, V, generator=gen, dtype=torch.float64)
    beta = torch.rand(B, T, H, generator=gen, dtype=torch.float64)
    return q, k, v, beta


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("split", [1, 7, 16])
def test_state_chaining_equals_one_pass(op: str, split: int) -> None:
    """Running [0, split) then [split, T) from its final state equals one pass (outputs and final state)."""
    q, k, v, beta = _inputs(2, 23, 2, 4, 3, seed=split)
    extra = (beta,) if op == "delta_rule" else ()
    fn = OPS[op]
    o_full, s_full = fn(q, k, v, *extra, output_final_state=True, chunk_size=5)
    first = [x[:, :split].contiguous() for x in (q, k, v, *extra)]
    second = [x[:, split:].contiguous() for x in (q, k, v, *extra)]
    o1, s1 = fn(*first, output_final_state=True, chunk_size=5)
    o2, s2 = fn(*second, initial_state=s1, output_final_state=True, chunk_size=5)
    torch.testing.assert_close(torch.cat([o1, o2], dim=1), o_full, rtol=1e-12, atol=1e-12)
    assert s2 is not None and s_full is not None
    torch.testing.assert_close(s2, s_full, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("op", sorted(OPS))
def test_varlen_equals_per_sequence_calls(op: str) -> None:
    bounds = [0, 1, 2, 12, 13, 30]
    q, k, v, beta = _inputs(1, bounds[-1], 2, 4, 3, seed=3)
    extra = (beta,) if op == "delta_rule" else ()
    fn = OPS[op]
    state0 = torch.randn(len(bounds) - 1, 2, 4, 3, dtype=torch.float64)
    o, s = fn(q, k, v, *extra, initial_state=state0, output_final_state=True, chunk_size=4,
              cu_seqlens=torch.tensor(bounds, dtype=torch.int32))
    assert s is not None
    for n, (start, end) in enumerate(itertools.pairwise(bounds)):
        parts = [x[:, start:end].contiguous() for x in (q, k, v, *extra)]
        o_n, s_n = fn(*parts, initial_state=state0[n:n + 1].contiguous(), output_final_state=True, chunk_size=4)
        torch.testing.assert_close(o[:, start:end], o_n, rtol=0, atol=0)
        assert s_n is not None
        torch.testing.assert_close(s[n:n + 1], s_n, rtol=0, atol=0)


def test_state_orientation_is_paper_transpose() -> None:
    """One token from zero state: S = beta v k^T (paper, [V, K]); ours is its transpose [K, V], and o = S^T q."""
    q, k, v, beta = _inputs(1, 1, 1, 3, 2, seed=4)
    o, state = impl.delta_rule(q, k, v, beta, scale=1.0, output_final_state=True)
    S_paper = beta[0, 0, 0] * torch.outer(v[0, 0, 0], k[0, 0, 0])
    assert state is not None
    torch.testing.assert_close(state[0, 0], S_paper.T)
    torch.testing.assert_close(o[0, 0, 0], S_paper @ q[0, 0, 0])


def test_final_state_is_none_unless_requested() -> None:
    q, k, v, beta = _inputs(1, 3, 1, 2, 2, seed=5)
    assert impl.delta_rule(q, k, v, beta).final_state is None
    assert impl.linear_attn(q, k, v).final_state is None


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("order", [1, 2], ids=["grad", "gradgrad"])
def test_gradcheck_fp64(op: str, order: int) -> None:
    """First and second order (plain autograd through the chunk loop, so create_graph=True is exact)."""
    q, k, v, beta = (x.requires_grad_(True) for x in _inputs(1, 7, 2, 3, 2, seed=6))
    state = torch.randn(1, 2, 3, 2, dtype=torch.float64, requires_grad=True)
    fn = OPS[op]

    def run(*args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        *tensors, s0 = args
        o, s = fn(*tensors, initial_state=s0, output_final_state=True, chunk_size=3)
        assert s is not None
        return o, s

    args = (q, k, v, beta, state) if op == "delta_rule" else (q, k, v, state)
    check = torch.autograd.gradcheck if order == 1 else torch.autograd.gradgradcheck
    assert check(run, args, fast_mode=True)
