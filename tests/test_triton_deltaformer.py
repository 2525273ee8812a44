"""impl.triton_ops DeltaFormer kernels (DF.1 via DF.4, DF.8, DF.9) against the float64 spec, in Triton's interpreter.

TRITON_INTERPRET=1 is set before the kernels are defined, so these run on CPU tensors in fp32 and fp64 (the
interpreter's bf16 ``tl.dot`` is unreliable). Problem sizes are chosen to hit each shipped-bug shape with 16-row
interpreter tiles: a chunk (24) that is not a multiple of the tile, so a key tile straddles the chunk start; T not
a multiple of the chunk; T smaller than one tile; chunks smaller than a tile; head dims that are not powers of two;
variable-length packing. Every ``torch.empty`` inside the backend is NaN-poisoned, so an unwritten row or an
unmasked load of an unwritten row shows up as NaN.

Error model (u_r = unit roundoff of the dtype, gamma(n) = n u_r; first order, worst case, no tuning):
the kernel computes u from M u = v, M = I + diag(beta) P. Perturbation theory for a linear system gives
    ||du||_inf <= ||M^-1||_inf * ( ||beta||_inf * max_t sum_j E_tj * ||u||_inf        (error in the scores P)
                                  + gamma(T + BT) * ||M||_inf * ||u||_inf            (sums of <= T terms, and the
                                                                                      triangular inverse on a tile,
                                                                                      Higham 2002 Thm 8.5 / 14.1)
                                  + u_r ||v||_inf )                                  (the residual v - beta acc)
        + u_r ||u||_inf                                                              (rounding u to the output type)
with E_tj the error of P_tj. A score s = scale w.k carries |ds| <= gamma(K) sbar, sbar = scale max_tj sum_i |w_ti k_ji|:
    softmax: E_tj <= P_tj (2 gamma(K) sbar + gamma(T))   -> sum_j E_tj <= 2 gamma(K) sbar + gamma(T)
    exp:     E_tj <= P_tj gamma(K) sbar                 -> sum_j E_tj <= gamma(K) sbar ||P||_inf
    linear:  E_tj <= gamma(K) sbar                      -> sum_j E_tj <= T gamma(K) sbar
    round:   0 (the round tests draw w, k in {-1, -1/2, 0, 1/2, 1}: scores are exact multiples of 1/4, including
             exact ties, so the spec and the kernel round the same number; half to even is then checked exactly)
The read-out o = A u with A the causal softmax of scale q.k (||A||_inf = 1):
    ||do||_inf <= ||du||_inf + (2 gamma(K) qbar + gamma(T)) ||u||_inf + u_r ||o||_inf.
The asserted budget is twice the bound (the factor 2 covers the dropped second-order terms). Each test also checks
that its budget is below 1e-2 of the solution's size, so a wrong mask or a skipped tile cannot hide inside it.
"""

from __future__ import annotations

import itertools
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import triton
import triton.language as tl

from impl._write_kernels import resolve_scales
from impl.triton_ops import deltaformer as tri
from impl.triton_ops._runtime import interpreting
from impl.triton_ops.shared_kernels import inverse_unit_lower_blocked
from spec import deltaformer as spec
from tests._impl_support import poisoned_empty

DEVICE = "cpu" if interpreting() else "cuda"
pytestmark = pytest.mark.skipif(not interpreting() and not torch.cuda.is_available(),
                                reason="needs TRITON_INTERPRET=1 or a CUDA device")
TILE = 16  # the interpreter's tile (impl.triton_ops.deltaformer.SMALL_TILES)


def unit_roundoff(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).eps) / 2


@pytest.fixture(autouse=True)
def nan_poisoned_empty() -> Iterator[None]:
    """torch.empty / empty_like return NaN-filled floating tensors during every test (catches unwritten rows)."""
    with poisoned_empty():
        yield


@dataclass
class Problem:
    """One DeltaFormer problem in [B, T, H, D] layout (float64 master copy) plus the sequences it packs."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    beta: torch.Tensor
    kernel: str
    chunk: int
    cu_seqlens: torch.Tensor | None

    def cast(self, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        return tuple(x.to(device=DEVICE, dtype=dtype) for x in (self.q, self.k, self.v, self.beta))

    def sequences(self) -> Iterator[tuple[int, slice]]:
        """(batch index, row slice) of every packed sequence."""
        if self.cu_seqlens is None:
            for b in range(self.q.shape[0]):
                yield b, slice(0, self.q.shape[1])
        else:
            cu = self.cu_seqlens.tolist()
            for a, e in itertools.pairwise(cu):
                yield 0, slice(a, e)

    def repro(self) -> str:
        cu = None if self.cu_seqlens is None else self.cu_seqlens.tolist()
        return (f"kernel={self.kernel} shape={tuple(self.q.shape)} V={self.v.shape[-1]} chunk={self.chunk} "
                f"cu_seqlens={cu}")


def make_problem(B: int, T: int, H: int, K: int, V: int, *, kernel: str, chunk: int, seed: int,
                 cu_seqlens: list[int] | None = None) -> Problem:
    g = torch.Generator().manual_seed(seed)
    if kernel == "round":
        # scores are exact quarter-integers (with ties), see the module docstring
        q, k = (torch.randint(-2, 3, (B, T, H, K), generator=g).double() / 2 for _ in range(2))
    else:
        q, k = (0.5 * torch.randn(B, T, H, K, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(B, T, H, V, generator=g, dtype=torch.float64)
    # |beta| < 1 and, for the unnormalised kernels, small enough that M stays well conditioned
    beta = torch.rand(B, T, H, generator=g, dtype=torch.float64) * (0.9 if kernel == "softmax" else 0.1)
    cu = None if cu_seqlens is None else torch.tensor(cu_seqlens, dtype=torch.int32, device=DEVICE)
    return Problem(q, k, v, beta, kernel, chunk, cu)


def gamma(n: float, u_r: float) -> float:
    return n * u_r


def u_bound(w: np.ndarray, k: np.ndarray, v: np.ndarray, beta: np.ndarray, u: np.ndarray, *, kernel: str,
            scale: float, u_r: float) -> float:
    """The first-order bound on ||u_impl - u||_inf of the module docstring, for one head."""
    T, K = w.shape
    P = spec.write_scores(w, k, kernel=kernel, scale=scale)
    M = np.eye(T) + beta[:, None] * P
    inf = lambda X: float(np.abs(X).sum(axis=1).max()) if X.ndim == 2 else float(np.abs(X).max())  # noqa: E731
    sbar = scale * float((np.abs(w) @ np.abs(k).T).max())
    if kernel == "softmax":
        e_row = 2 * gamma(K, u_r) * sbar + gamma(T, u_r)
    elif kernel == "exp":
        e_row = gamma(K, u_r) * sbar * inf(P)
    elif kernel == "linear":
        e_row = T * gamma(K, u_r) * sbar
    else:
        e_row = 0.0
    Minv = np.linalg.inv(M)
    return inf(Minv) * (inf(beta) * e_row * inf(u) + gamma(T + TILE, u_r) * inf(M) * inf(u) + u_r * inf(v)) \
        + u_r * inf(u)


def read_bound(q: np.ndarray, k: np.ndarray, u: np.ndarray, o: np.ndarray, du: float, *, scale: float,
               u_r: float) -> float:
    T, K = q.shape
    qbar = scale * float((np.abs(q) @ np.abs(k).T).max())
    return du + (2 * gamma(K, u_r) * qbar + gamma(T, u_r)) * float(np.abs(u).max()) + u_r * float(np.abs(o).max())


def write_scale(kernel: str, K: int) -> float:
    return 1.0 if kernel in ("linear", "round") else K ** -0.5


def check_u_and_read(problem: Problem, dtype: torch.dtype, write: str = "k") -> None:
    """Run the u stage and the read-out; compare every sequence and head with the spec within its budget."""
    q, k, v, beta = problem.cast(dtype)
    K = q.shape[-1]
    w = k if write == "k" else q
    ws, rs = write_scale(problem.kernel, K), K ** -0.5
    u, _, _ = tri.u_fwd(w, k, v, beta, kernel=problem.kernel, scale=ws, chunk_size=problem.chunk,
                     cu_seqlens=problem.cu_seqlens)
    o, _ = tri.read_fwd(q, k, u, scale=rs, cu_seqlens=problem.cu_seqlens)
    u_r = unit_roundoff(dtype)
    for b, rows in problem.sequences():
        for h in range(q.shape[2]):
            def np_(x: torch.Tensor) -> np.ndarray:
                return x[b, rows, h].double().cpu().numpy()  # noqa: B023
            qs, ks, vs, bs = (np_(x) for x in (problem.q, problem.k, problem.v, problem.beta))
            ws_in = ks if write == "k" else qs
            u_ref = spec.deltaformer_u(ws_in, ks, vs, bs, kernel=problem.kernel, scale=ws)
            o_ref = spec.causal_softmax_readout(qs, ks, u_ref, rs)
            bu = 2 * u_bound(ws_in, ks, vs, bs, u_ref, kernel=problem.kernel, scale=ws, u_r=u_r)
            bo = 2 * read_bound(qs, ks, u_ref, o_ref, bu / 2, scale=rs, u_r=u_r)
            where = f"{problem.repro()} dtype={dtype} write={write} batch={b} rows={rows} head={h}"
            assert bu < 1e-2 * np.abs(u_ref).max(), f"budget too loose to detect a bug: {bu:.2e}; {where}"
            err_u = float(np.abs(np_(u) - u_ref).max())
            err_o = float(np.abs(np_(o) - o_ref).max())
            assert err_u <= bu, f"DF.1 u: error {err_u:.2e} > budget {bu:.2e} ({err_u / bu:.1f}x); {where}"
            assert err_o <= bo, f"DF.8 read-out: error {err_o:.2e} > budget {bo:.2e} ({err_o / bo:.1f}x); {where}"


KERNELS = ("softmax", "exp", "linear", "round")
DTYPES = (torch.float32, torch.float64)
# (B, T, H, K, V, chunk): chunk 24 is not a multiple of the 16-row tile and T = 37 is not a multiple of the chunk;
# T = 5 is below one tile; chunk 5 < tile with several chunks; K = 20 and V = 33 are not powers of two
SHAPES: dict[str, tuple[int, int, int, int, int, int]] = {
    "chunk24-straddles-tile": (1, 37, 2, 20, 33, 24),
    "T-below-tile": (2, 5, 1, 16, 16, 64),
    "chunk-below-tile": (1, 19, 1, 16, 8, 5),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
def test_triton_u_and_readout_match_spec_within_budget(shape: str, kernel: str, dtype: torch.dtype) -> None:
    """Catches: key tile straddling the chunk start, T % C != 0, T < tile, masks on padded head dims."""
    B, T, H, K, V, C = SHAPES[shape]
    check_u_and_read(make_problem(B, T, H, K, V, kernel=kernel, chunk=C, seed=hash((shape, kernel)) % 2**31),
                     dtype)


@pytest.mark.parametrize("kernel", KERNELS)
def test_triton_varlen_matches_each_sequence_alone(kernel: str) -> None:
    """Catches: state or keys leaking across packed sequences, and chunks counted from the batch start."""
    cu = [0, 3, 20, 41]
    problem = make_problem(1, 41, 1, 16, 16, kernel=kernel, chunk=12, seed=7, cu_seqlens=cu)
    check_u_and_read(problem, torch.float64)


@pytest.mark.parametrize("write", ["k", "q"])
def test_triton_write_modes_match_spec(write: str) -> None:
    """Catches: w = q and w = k swapped in the write similarity."""
    check_u_and_read(make_problem(1, 21, 1, 16, 16, kernel="softmax", chunk=16, seed=3), torch.float64, write=write)


@pytest.mark.parametrize("write", ["k", "q"])
@pytest.mark.parametrize("scale", [None, 0.3])
def test_triton_deltaformer_attn_matches_spec(write: str, scale: float | None) -> None:
    """The backend entry point: write mode, default scales (1/sqrt(d) read, per-kernel write) and a given scale."""
    problem = make_problem(1, 18, 1, 16, 16, kernel="linear", chunk=8, seed=11)
    q, k, v, beta = problem.cast(torch.float64)
    write_scale, read_scale = resolve_scales("linear", 16, scale)
    o = tri.deltaformer_attn(q, k, v, beta, write=write, kernel="linear", write_scale=write_scale,
                             read_scale=read_scale, chunk_size=8, cu_seqlens=None)
    ref = spec.deltaformer_attn(*(x[0, :, 0].numpy() for x in (problem.q, problem.k, problem.v)),
                                problem.beta[0, :, 0].numpy(), write=write, kernel="linear", scale=scale)
    # fp64, T = 18, well conditioned (|beta| < 0.1): a 1e-12 relative budget is ~5000 u_r, far above the bound
    # of the module docstring for these sizes and far below any semantic difference (a wrong scale is O(1e-2))
    err = float(np.abs(o[0, :, 0].numpy() - ref).max() / np.abs(ref).max())
    assert err <= 1e-12, f"deltaformer_attn write={write} scale={scale}: relative error {err:.2e}"


def test_triton_round_kernel_rounds_ties_to_even() -> None:
    """Catches: round-half-up instead of numpy's rint (the spec's nint); scores here hit exact .5 ties."""
    w = torch.tensor([[[[0.5, 0.5]]], [[[0.5, 1.0]]], [[[1.0, 1.0]]], [[[1.0, 0.5]]]], dtype=torch.float64)
    w = w.reshape(1, 4, 1, 2)
    k = torch.tensor([1.0, 0.0], dtype=torch.float64).expand(1, 4, 1, 2).contiguous()
    k[0, 0, 0] = torch.tensor([0.5, 0.0])
    v = torch.ones(1, 4, 1, 2, dtype=torch.float64)
    beta = torch.ones(1, 4, 1, dtype=torch.float64)
    u = tri.deltaformer_u(w, k, v, beta, kernel="round", scale=5.0, chunk_size=2, cu_seqlens=None)
    ref = spec.deltaformer_u(w[0, :, 0].numpy(), k[0, :, 0].numpy(), v[0, :, 0].numpy(), beta[0, :, 0].numpy(),
                             kernel="round", scale=5.0)
    assert np.array_equal(u[0, :, 0].numpy(), ref), (u[0, :, 0], ref)



@pytest.mark.parametrize(("kernel", "dtype"), [("softmax", torch.float32), ("exp", torch.float64)])
def test_triton_split_prefix_partials_merge_to_the_spec(kernel: str, dtype: torch.dtype) -> None:
    """T = 90 in chunks of 12: later chunks' prefixes are split over up to 3 key ranges of 16 keys (the interpreter's
    split size), computed one launch ahead and merged by log-sum-exp. Catches: a split boundary dropping or
    double-counting a key, the previous chunk folded twice or not at all, partial buffers swapped between launches."""
    check_u_and_read(make_problem(1, 90, 1, 16, 16, kernel=kernel, chunk=12, seed=5), dtype)


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
