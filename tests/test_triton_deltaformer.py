"""impl.triton_ops DeltaFormer forward (DF.1 via DF.4, DF.8, DF.9) against the float64 spec, in Triton's interpreter.

TRITON_INTERPRET=1 is set before the kernels are defined, so these run on CPU tensors in fp32 and fp64 (bf16 is
refused there: the interpreter's bf16 ``tl.dot`` is unreliable). Every case goes through the public differential
harness (``proofs_checks.differential.check_case``, outputs only; the gradients are in
tests/test_triton_deltaformer_backward.py): the same error model as every other kernel
(``proofs_checks/differential/tolerances.py``: normwise relative error within ``LAMBDA sqrt(T + K + V) kappa u``,
kappa measured on the case), not a second one of this file's own.

The shapes hit each shipped-bug shape with the interpreter's 16-row tiles: a chunk (24) that is not a multiple of
the tile, so a key tile straddles the chunk start; T not a multiple of the chunk; T smaller than one tile; chunks
smaller than a tile; head dims that are not powers of two; variable-length packing. Every ``torch.empty`` inside the
backend is NaN-poisoned, so an unwritten row or an unmasked load of an unwritten row shows up as NaN.
"""

from __future__ import annotations

import functools
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

from collections.abc import Iterator

import numpy as np
import pytest
import torch
import triton
import triton.language as tl

import impl
from impl.triton_ops._runtime import interpreting
from impl.triton_ops.shared_kernels import inverse_unit_lower_blocked
from proofs_checks.differential import Problem, check_case
from spec import deltaformer as spec
from tests._impl_support import assert_overflow_contained, overflow_at_row_11, poisoned_empty

pytestmark = pytest.mark.skipif(not interpreting() and not torch.cuda.is_available(),
                                reason="needs TRITON_INTERPRET=1 or a CUDA device")


@pytest.fixture(autouse=True)
def nan_poisoned_empty() -> Iterator[None]:
    """torch.empty / empty_like return NaN-filled floating tensors during every test (catches unwritten rows)."""
    with poisoned_empty():
        yield


def assert_triton_matches_spec(problem: Problem) -> None:
    """Outputs of ``impl.<op>(..., backend="triton")`` within the harness's budget, which must be tight enough to
    see a semantic error (a wrong mask or a skipped tile changes the output by far more than 1e-2 relative)."""
    result = check_case(functools.partial(getattr(impl, problem.op), backend="triton"), problem, grads=False)
    assert result.skipped is None, f"case skipped by the harness ({result.skipped}): pick another seed"
    assert all(b < 1e-2 for b in result.budgets.values()), f"budget too loose to detect a bug\n{result.report()}"
    assert result.passed, result.report()


KERNELS = ("softmax", "exp", "linear", "round")
DTYPES = ("float32", "float64")
# (B, T, H, K, V, chunk): chunk 24 is not a multiple of the 16-row tile and T = 37 is not a multiple of the chunk;
# T = 5 is below one tile; chunk 5 < tile with several chunks; K = 20 and V = 33 are not powers of two
SHAPES: dict[str, tuple[int, int, int, int, int, int]] = {
    "chunk24-straddles-tile": (1, 37, 2, 20, 33, 24),
    "T-below-tile": (2, 5, 1, 16, 16, 64),
    "chunk-below-tile": (1, 19, 1, 16, 8, 5),
}


def _problem(op: str, shape: str, kernel: str, dtype: str, **options: object) -> Problem:
    B, T, H, K, V, C = SHAPES[shape]
    seed = sum(map(ord, shape + kernel + dtype))
    return Problem(op, B=B, T=T, H=H, K=K, V=V, dtype=dtype, chunk_size=C, kernel=kernel, seed=seed,
                   **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_triton_attn_matches_spec_within_budget(shape: str, kernel: str, dtype: str) -> None:
    """u stage and read-out together (o depends on every row of u). Catches: key tile straddling the chunk start,
    T % C != 0, T < tile, masks on padded head dims."""
    assert_triton_matches_spec(_problem("deltaformer_attn", shape, kernel, dtype))


@pytest.mark.parametrize("kernel", KERNELS)
def test_triton_u_matches_spec_within_budget(kernel: str) -> None:
    """The u stage alone on the straddling shape (the read-out cannot mask an error in u here)."""
    assert_triton_matches_spec(_problem("deltaformer_u", "chunk24-straddles-tile", kernel, "float32"))


@pytest.mark.parametrize("kernel", KERNELS)
def test_triton_varlen_matches_spec(kernel: str) -> None:
    """Catches: state or keys leaking across packed sequences, and chunks counted from the batch start."""
    assert_triton_matches_spec(Problem("deltaformer_attn", B=1, T=41, H=1, K=16, V=16, chunk_size=12,
                                       cu_seqlens=(0, 3, 20, 41), kernel=kernel, seed=7))


@pytest.mark.parametrize("write", ["k", "q"])
@pytest.mark.parametrize("scale", [None, 0.3])
def test_triton_write_modes_and_scales_match_spec(write: str, scale: float | None) -> None:
    """Catches: w = q and w = k swapped; the default scales (1/sqrt(K) read-out, per-kernel write) or a given
    scale not reaching both the write kernel and the read-out."""
    assert_triton_matches_spec(Problem("deltaformer_attn", B=1, T=21, H=1, K=16, V=16, chunk_size=16,
                                       kernel="linear", write=write, scale=scale, seed=3))


def test_triton_round_kernel_rounds_ties_to_even() -> None:
    """Catches: round-half-up instead of numpy's rint (the spec's nint); scores here hit exact .5 ties, so the
    comparison is exact (every value is a small dyadic rational)."""
    w = torch.tensor([[[[0.5, 0.5]]], [[[0.5, 1.0]]], [[[1.0, 1.0]]], [[[1.0, 0.5]]]], dtype=torch.float64)
    w = w.reshape(1, 4, 1, 2)
    k = torch.tensor([1.0, 0.0], dtype=torch.float64).expand(1, 4, 1, 2).contiguous()
    k[0, 0, 0] = torch.tensor([0.5, 0.0])
    v = torch.ones(1, 4, 1, 2, dtype=torch.float64)
    beta = torch.ones(1, 4, 1, dtype=torch.float64)
    u = impl.deltaformer_u(w, k, v, beta, kernel="round", scale=5.0, chunk_size=2, backend="triton")
    ref = spec.deltaformer_u(w[0, :, 0].numpy(), k[0, :, 0].numpy(), v[0, :, 0].numpy(), beta[0, :, 0].numpy(),
                             kernel="round", scale=5.0)
    assert np.array_equal(u[0, :, 0].numpy(), ref), (u[0, :, 0], ref)


def test_triton_fp16_residual_is_kept_in_fp32() -> None:
    """fp16 inputs (fp16 tl.dot works in the interpreter): the residual v - beta acc must be formed in fp32, not
    after rounding acc to fp16 (a bug the established kernels shipped; fp32 and fp64 runs cannot see it, the cast
    being a no-op there).

    Error model: exact. The exp kernel with w = 0 makes every write weight exp(0) = 1 in any precision; beta = 0
    on the first chunk makes its u equal to v, exactly representable in fp16. So the fp16 and fp32 runs do the same
    fp32 arithmetic (products of fp16 numbers are exact in fp32, the accumulations are the same code in the same
    order) and differ only by the final rounding of u to fp16: the fp16 output must be exactly the fp16 rounding of
    the fp32 output. The second chunk's prefix sums acc_t = sum_{j<C} v_j are not fp16 numbers (checked), so
    rounding acc_t changes u (the mutant "acc rounded to fp16 before the subtraction" fails 57 of 512 entries).
    """
    g = torch.Generator().manual_seed(0)
    T, K, V, C = 32, 16, 16, 16
    w = torch.zeros(1, T, 1, K)
    k = torch.randn(1, T, 1, K, generator=g)
    v = torch.randn(1, T, 1, V, generator=g)
    v[:, :C] *= 50.0  # large prefix sums: rounding one of them to fp16 moves u by many fp16 units
    v = v.half().float()
    beta = torch.full((1, T, 1), 0.5)
    beta[:, :C] = 0.0
    acc = v[:, :C].double().sum(1)
    assert bool((acc.half().double() != acc).any()), "prefix sums are fp16 numbers: the test could not fail"
    u32 = impl.deltaformer_u(w, k, v, beta, kernel="exp", scale=1.0, chunk_size=C, backend="triton")
    u16 = impl.deltaformer_u(w.half(), k.half(), v.half(), beta.half(), kernel="exp", scale=1.0, chunk_size=C,
                             backend="triton")
    mismatches = int((u16 != u32.half()).sum())
    assert mismatches == 0, f"{mismatches} of {u16.numel()} fp16 outputs differ from the fp16 rounding of fp32"


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the interpreter's NumPy, on purpose
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_triton_overflow_at_a_late_row_leaves_earlier_rows_exact() -> None:
    """As the torch test of the same name: before, the read-out's 0 * inf for masked later keys made every row NaN."""
    assert_overflow_contained(*overflow_at_row_11("triton"))


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_triton_overflow_in_one_packed_sequence_leaves_the_next_exact() -> None:
    """The running sum of the non-finite values restarts at each packed sequence (cu_seqlens)."""
    gen = torch.Generator().manual_seed(13)
    q, k, v = (torch.randn(1, 17, 1, 4, generator=gen) for _ in range(3))
    k = k / k.norm(dim=-1, keepdim=True)
    beta = torch.rand(1, 17, 1, generator=gen)
    v[0, 10], v[0, 11] = 3.3e38, -3.4e38  # u_11 = -3.4e38 - beta_11 (a positive mix including u_10): -inf
    packed = impl.deltaformer_attn(q, k, v, beta, chunk_size=4, cu_seqlens=torch.tensor([0, 12, 17]),
                                   backend="triton")
    alone = impl.deltaformer_attn(*(x[:, 12:].contiguous() for x in (q, k, v, beta)), chunk_size=4,
                                  backend="triton")
    assert not bool(torch.isfinite(packed[:, 11]).all()), "no overflow in the first sequence"
    assert torch.equal(packed[:, 12:], alone)


@pytest.mark.parametrize("op", ["deltaformer_attn", "softmax_attn"])
@pytest.mark.parametrize("scale", [-0.5, 0.0])
def test_triton_non_positive_scale_matches_spec(op: str, scale: float) -> None:
    """scale <= 0 (a negative or zero temperature): the Triton kernels mask by position, not by score, so they
    were right where the torch backend's fused CPU read-out was not; kept right."""
    assert_triton_matches_spec(Problem(op, B=1, T=23, H=1, K=16, V=16, chunk_size=8, scale=scale, seed=5))


def test_triton_softmax_write_weights_stay_normalised_at_huge_logits() -> None:
    """As the torch test of the same name: all write scores -1e39, uniform weights, u = [1, 1, 2, 8/3, 10/3]."""
    k = torch.ones(1, 5, 1, 1, dtype=torch.float64)
    v = torch.arange(1.0, 6.0, dtype=torch.float64).reshape(1, 5, 1, 1)
    u = impl.deltaformer_u(-k, k, v, scale=1e39, chunk_size=2, backend="triton")
    want = torch.tensor([1.0, 1.0, 2.0, 8.0 / 3.0, 10.0 / 3.0], dtype=torch.float64)
    torch.testing.assert_close(u[0, :, 0, 0], want, rtol=8 * 2.0**-53, atol=0)


@pytest.mark.parametrize(("kernel", "dtype"), [("softmax", "float32"), ("exp", "float64")])
def test_triton_split_prefix_partials_merge_to_the_spec(kernel: str, dtype: str) -> None:
    """T = 90 in chunks of 12: later chunks' prefixes are split over up to 3 key ranges of 16 keys (the interpreter's
    split size), computed one launch ahead and merged by log-sum-exp. Catches: a split boundary dropping or
    double-counting a key, the previous chunk folded twice or not at all, partial buffers swapped between launches."""
    assert_triton_matches_spec(Problem("deltaformer_attn", B=1, T=90, H=1, K=16, V=16, dtype=dtype, chunk_size=12,
                                       kernel=kernel, seed=5))  # type: ignore[arg-type]


@triton.jit
def _invert_kernel(A, X, BT: tl.constexpr):
    o = tl.arange(0, BT)
    b_x = inverse_unit_lower_blocked(tl.load(A + o[:, None] * BT + o[None, :]), BT, "ieee")
    tl.store(X + o[:, None] * BT + o[None, :], b_x)


@pytest.mark.parametrize("BT", [16, 32, 64])
def test_triton_blocked_inverse_matches_the_exact_inverse(BT: int) -> None:
    """The in-chunk inverse (16 x 16 diagonal substitutions merged by recursive doubling) against torch's inverse in
    fp64. Error model: both are backward stable, cond(I + A) < 10 for these entries, so the difference is below
    ~BT cond u_64 ~ 1e-13; 1e-12 catches any wrong block (an O(1) entry)."""
    g = torch.Generator().manual_seed(BT)
    A = torch.tril(0.1 * torch.randn(BT, BT, generator=g, dtype=torch.float64), -1)
    X = torch.empty_like(A)
    _invert_kernel[(1,)](A, X, BT=BT)
    eye = torch.eye(BT, dtype=torch.float64)
    ref = torch.linalg.inv(eye + A)
    assert float((X - ref).abs().max()) <= 1e-12 * float(ref.abs().max())
