"""Host side of the DeltaFormer Triton backend: launchers, grids and the autograd Functions.

Implements ``deltaformer_u`` (spec DF.1, computed as DF.4's chunked block forward substitution) and
``deltaformer_attn`` (DF.9: u, then the causal softmax read-out DF.8). Inputs arrive validated from ``impl``:
``[B, T, H, D]`` contiguous-able tensors, ``beta`` ``[B, T, H]``, ``cu_seqlens`` ``[N + 1]`` with B == 1 or None.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from impl import _write_kernels
from impl._nonfinite import split_nonfinite
from impl.triton_ops import deltaformer_kernels as kern
from impl.triton_ops._runtime import (
    HEAD_DIMS,
    LOW_PRECISION,
    AotVariant,
    LaunchConfig,
    Tuner,
    dot_precisions,
    interpreting,
    next_power_of_2,
)

__all__ = ["deltaformer_attn", "deltaformer_u"]


GPU_CHUNK = 128
"""The chunk size this backend is designed for on a GPU (the cost model's default, ``default_chunk_size``)."""


def default_chunk_size(T: int) -> int:
    """The chunk size the GPU schedule is designed for (results differ between chunk sizes by rounding only)."""
    return GPU_CHUNK


def head_blocks(K: int, V: int) -> tuple[int, int]:
    """(BK, BV): the key dimension is one padded block (scores need all of it); values are split in <= 64 columns."""
    return max(16, next_power_of_2(K)), min(64, max(16, next_power_of_2(V)))


def chunk_config(K: int, V: int) -> LaunchConfig:
    """Tiles of the per-chunk launch (``deltaformer_fwd_kernel_chunk``): BT rows per partial-statistics program (64:
    wgmma on sm_90a), BTS rows per diagonal tile of the solve (32: the solve keeps the residual, the inverse and
    the statistics live, and 64 rows spill), BS keys per folded tile, all of V in one block (no score
    recomputation). Compiles without spills on sm_80 and sm_90a (``impl.kernel_report``)."""
    if K > 128:
        return LaunchConfig({"BT": 32, "BTS": 32, "BS": 32}, num_warps=8, num_stages=1)
    return LaunchConfig({"BT": 64, "BTS": 32, "BS": 64}, num_warps=8, num_stages=2)


CHUNK_INTERPRETER = LaunchConfig({"BT": 16, "BTS": 16, "BS": 16}, num_warps=2, num_stages=1)
KEYS_PER_SPLIT = 512
"""Smallest key range a partial-statistics program folds on a GPU (the number of splits grows with the finished
keys up to ``max_splits``); 16 under the interpreter, so small tests merge several partials."""


def max_splits(programs_per_split: int) -> int:
    """Key splits per launch: enough partial programs to fill about two waves of an H100's 132 SMs, at most 16
    (the merge reads every partial), at least 1; 3 under the interpreter."""
    if interpreting():
        return 3
    return max(1, min(16, -(-2 * 132 // max(1, programs_per_split))))


def splits(keys: int, ns_max: int) -> int:
    """Number of key splits for a prefix of ``keys`` finished keys (0 when there is none)."""
    if keys <= 0:
        return 0
    return min(-(-keys // (16 if interpreting() else KEYS_PER_SPLIT)), ns_max)


def read_value_block(V: int) -> int:
    """Value columns per read-out program: all of V up to 128 (the scores are computed once), else 64."""
    return max(16, next_power_of_2(V)) if V <= 128 else 64


def read_configs(K: int, V: int) -> list[LaunchConfig]:
    """Row x key tiles of the read-out (FlashAttention-2 style, all of V <= 128 per program): 128 x 64 with 8 warps at
    K = 128 (the FlashAttention Triton tile); K > 128 keeps 64-column value blocks."""
    if K > 128:
        return [LaunchConfig({"BT": 32, "BS": 32}, num_warps=4, num_stages=2),
                LaunchConfig({"BT": 64, "BS": 32}, num_warps=8, num_stages=2)]
    if K > 64:
        return [LaunchConfig({"BT": 128, "BS": 64}, num_warps=8, num_stages=2)]
    return [LaunchConfig({"BT": 64, "BS": 64}, num_warps=8, num_stages=2),
            LaunchConfig({"BT": 64, "BS": 32}, num_warps=4, num_stages=2)]


def bwd_dq_configs(K: int, V: int) -> list[LaunchConfig]:
    """Row x key tiles of the backward dq / dw pass (K and all of V one block each)."""
    if K > 128:
        return [LaunchConfig({"BT": 16, "BS": 32}, num_warps=4, num_stages=1)]
    if K > 64:
        return [LaunchConfig({"BT": 32, "BS": 32}, num_warps=4, num_stages=2)]
    return [LaunchConfig({"BT": 64, "BS": 32}, num_warps=4, num_stages=2),
            LaunchConfig({"BT": 32, "BS": 32}, num_warps=4, num_stages=2)]


def bwd_dk_configs(K: int, V: int) -> list[LaunchConfig]:
    """Key x row tiles of the backward dk / du pass: it holds k, u, dk and du, so 64-key tiles spill on sm_80, and
    so does 32 x 32 with 4 warps at K = 64 (exp write); 8 warps there."""
    if K > 128:
        return [LaunchConfig({"BT": 16, "BS": 32}, num_warps=4, num_stages=1)]
    if 32 < K <= 64:
        return [LaunchConfig({"BT": 32, "BS": 32}, num_warps=8, num_stages=2)]
    return [LaunchConfig({"BT": 32, "BS": 32}, num_warps=4, num_stages=2)]


def suffix_configs(K: int, V: int) -> list[LaunchConfig]:
    """Key x row tiles of the backward suffix pass; 64 x 32 spills on sm_80 at K = 128 (4 warps) and K = 256
    (8 warps), and at K = 64 for exp/linear."""
    if K > 64:
        return [LaunchConfig({"BT": 32, "BS": 32}, num_warps=4, num_stages=2)]
    if K > 32:
        return [LaunchConfig({"BT": 32, "BS": 32}, num_warps=4, num_stages=2)]
    return [LaunchConfig({"BT": 64, "BS": 32}, num_warps=4, num_stages=2),
            LaunchConfig({"BT": 32, "BS": 32}, num_warps=4, num_stages=2)]


def intra_configs(K: int, V: int) -> list[LaunchConfig]:
    """Row tile of the backward in-chunk solve: 32 rows and 8 warps (16 rows for K > 128); larger tiles spill on
    sm_80."""
    if K > 128:
        return [LaunchConfig({"BT": 16}, num_warps=4, num_stages=1)]
    return [LaunchConfig({"BT": 32}, num_warps=8, num_stages=1)]


SMALL_TILES = LaunchConfig({"BT": 16, "BS": 16}, num_warps=2, num_stages=1)
TUNERS = {
    "read": Tuner("deltaformer_fwd_kernel_read", read_configs, SMALL_TILES),
    "bwd_dq": Tuner("deltaformer_bwd_kernel_dq", bwd_dq_configs, SMALL_TILES),
    "bwd_dk": Tuner("deltaformer_bwd_kernel_dk", bwd_dk_configs, SMALL_TILES),
    "bwd_suffix": Tuner("deltaformer_bwd_kernel_suffix", suffix_configs, SMALL_TILES),
    "bwd_intra": Tuner("deltaformer_bwd_kernel_intra", intra_configs,
                       LaunchConfig({"BT": 16}, num_warps=2, num_stages=1)),
}


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: fp64 for fp64 inputs (interpreter tests), fp32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _tl_acc(dtype: torch.dtype) -> Any:
    return tl.float64 if dtype == torch.float64 else tl.float32


def _sequences(B: int, T: int, cu_seqlens: torch.Tensor | None) -> tuple[int, int]:
    """(number of sequences N, longest sequence length)."""
    if cu_seqlens is None:
        return B, T
    return cu_seqlens.numel() - 1, int((cu_seqlens[1:] - cu_seqlens[:-1]).max().item())


def u_fwd(w: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, *, kernel: str, scale: float,
          chunk_size: int, cu_seqlens: torch.Tensor | None,
          store_r: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """u [B, T, H, V], the write softmax's log-sum-exp [B, T, H] (unused unless kernel == "softmax") and, with
    ``store_r``, the write-attention output r = P u [B, T, H, V] in the accumulation dtype (for the backward).

    One launch per chunk (README, "The forward algorithm"): launch c solves chunk c and, concurrently, computes the
    partial statistics of chunk c + 1's rows over splits of the keys of chunks 0 .. c - 1."""
    B, T, H, K = w.shape
    V = v.shape[-1]
    N, max_len = _sequences(B, T, cu_seqlens)
    BK, BV = max(16, next_power_of_2(K)), max(16, next_power_of_2(V))
    cfg = CHUNK_INTERPRETER if interpreting() else chunk_config(K, V)
    BT = cfg.blocks["BT"]
    adt = acc_dtype(v.dtype)
    CR = min(chunk_size, max_len)
    NTC = triton.cdiv(CR, BT)
    ns_max = max_splits(NTC * N * H)
    u = torch.empty_like(v)
    lse = torch.empty(B, T, H, dtype=adt, device=v.device)
    r = torch.empty(B, T, H, V, dtype=adt, device=v.device) if store_r else None
    n_chunks = triton.cdiv(max_len, chunk_size)
    n_buf = splits((n_chunks - 2) * chunk_size, ns_max) if n_chunks > 2 else 0
    part_acc = torch.empty(2, max(1, n_buf), N, CR, H, V, dtype=adt, device=v.device)
    part_ml = torch.empty(2, max(1, n_buf), N, CR, H, 2, dtype=adt, device=v.device)
    prec, solve_prec = dot_precisions(v.dtype)
    for i_c in range(n_chunks):
        ns_write = splits(i_c * chunk_size, ns_max) if i_c + 1 < n_chunks else 0
        ns_read = splits((i_c - 1) * chunk_size, ns_max)
        grid = (1 + ns_write * NTC, N * H)
        KS = triton.cdiv(triton.cdiv(i_c * chunk_size, max(1, ns_write)), cfg.blocks["BS"]) * cfg.blocks["BS"]
        kern.deltaformer_fwd_kernel_chunk[grid](
            w, k, v, beta, u, lse, r, part_acc, part_ml, cu_seqlens, scale, T, chunk_size, i_c, N, ns_read, KS,
            max(1, n_buf), H=H, K=K, V=V, BK=BK, BV=BV, CR=CR, KERNEL=kernel, IS_VARLEN=cu_seqlens is not None,
            ACC=_tl_acc(v.dtype), DOT_PRECISION=prec, SOLVE_PRECISION=solve_prec, STORE_R=store_r, **cfg.kwargs())
    return u, lse, r


def read_fwd(q: torch.Tensor, k: torch.Tensor, u: torch.Tensor, *, scale: float,
             cu_seqlens: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """o = causal_softmax(scale q k^T) u [B, T, H, V] and its log-sum-exp [B, T, H] (fp32, fp64 for fp64)."""
    B, T, H, K = q.shape
    V = u.shape[-1]
    N, max_len = _sequences(B, T, cu_seqlens)
    BK, BV = head_blocks(K, V)[0], read_value_block(V)
    NV = triton.cdiv(V, BV)
    o = torch.empty_like(u)
    lse = torch.empty(B, T, H, dtype=acc_dtype(u.dtype), device=u.device)
    prec, _ = dot_precisions(u.dtype)

    def launch(cfg: LaunchConfig) -> None:
        grid = (triton.cdiv(max_len, cfg.blocks["BT"]), NV, N * H)
        kern.deltaformer_fwd_kernel_read[grid](q, k, u, o, lse, cu_seqlens, scale, T, H=H, K=K, V=V, BK=BK, BV=BV,
                                               IS_VARLEN=cu_seqlens is not None, ACC=_tl_acc(u.dtype),
                                               DOT_PRECISION=prec, **cfg.kwargs())

    launch(TUNERS["read"].pick((K, V, u.dtype, cu_seqlens is not None), launch, K, V))
    return o, lse


def read_u(q: torch.Tensor, k: torch.Tensor, u: torch.Tensor, *, scale: float,
           cu_seqlens: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``read_fwd`` over DeltaFormer's written values u, which may have overflowed at a late row: the rows before
    the first non-finite u_j stay exact and later rows non-finite (``impl._nonfinite``); the lse is that of the
    finite part."""
    values, correction = split_nonfinite(u, dim=1, cu_seqlens=cu_seqlens)
    o, lse = read_fwd(q, k, values, scale=scale, cu_seqlens=cu_seqlens)
    return (o, lse) if correction is None else (o + correction, lse)


def _full_v(V: int) -> int:
    """The backward's value block: all of V in one padded block (dP_tj = dO_t . u_j needs every column)."""
    return max(16, next_power_of_2(V))


def rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum_v a[..., v] b[..., v] over the last dim of two same-shaped contiguous tensors, in the accumulation dtype."""
    V = a.shape[-1]
    R = a.numel() // V
    adt = acc_dtype(b.dtype if b.dtype == torch.float64 else a.dtype)
    out = torch.empty(a.shape[:-1], dtype=adt, device=a.device)
    BR = 16
    kern.deltaformer_bwd_kernel_rowdot[(triton.cdiv(R, BR),)](a, b, out, R, V=V, BR=BR, BV=_full_v(V),
                                                               ACC=_tl_acc(adt))
    return out


def _attn_bwd(q: torch.Tensor, k: torch.Tensor, u: torch.Tensor, g: torch.Tensor, beta: torch.Tensor,
              lse: torch.Tensor, D: torch.Tensor, *, kernel: str, write: bool, scale: float,
              cu_seqlens: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(dq, dk, du) of an attention with scores kappa(scale q k^T), values u and output gradient dO (accumulation
    dtype). write=False: the causal softmax read-out (j <= t), g = do, D = delta, du returned. write=True: the write
    similarity (j < t), g = X and dO = -beta X, D = beta dbeta (softmax), du not formed (it is the suffix pass)."""
    B, T, H, K = q.shape
    V = u.shape[-1]
    N, max_len = _sequences(B, T, cu_seqlens)
    BK, BV = head_blocks(K, V)[0], _full_v(V)
    adt = acc_dtype(u.dtype)
    dq = torch.empty(B, T, H, K, dtype=adt, device=q.device)
    dk = torch.empty(B, T, H, K, dtype=adt, device=q.device)
    du = None if write else torch.empty(B, T, H, V, dtype=adt, device=q.device)
    prec, _ = dot_precisions(u.dtype)
    common = {"H": H, "K": K, "V": V, "BK": BK, "BV": BV, "KERNEL": kernel, "WRITE": write,
              "IS_VARLEN": cu_seqlens is not None, "ACC": _tl_acc(u.dtype), "DOT_PRECISION": prec}
    key = (K, V, kernel, write, u.dtype, cu_seqlens is not None)

    def launch_dq(cfg: LaunchConfig) -> None:
        grid = (triton.cdiv(max_len, cfg.blocks["BT"]), N * H)
        kern.deltaformer_bwd_kernel_dq[grid](q, k, u, g, beta, lse, D, dq, cu_seqlens, scale, T, **common,
                                             **cfg.kwargs())

    def launch_dk(cfg: LaunchConfig) -> None:
        grid = (triton.cdiv(max_len, cfg.blocks["BT"]), N * H)
        kern.deltaformer_bwd_kernel_dk[grid](q, k, u, g, beta, lse, D, dk, du, cu_seqlens, scale, T, **common,
                                             **cfg.kwargs())

    launch_dk(TUNERS["bwd_dk"].pick(key, launch_dk, K, V))
    launch_dq(TUNERS["bwd_dq"].pick(key, launch_dq, K, V))
    return dq, dk, du


def read_bwd(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, u: torch.Tensor, o: torch.Tensor,
             lse: torch.Tensor, *, scale: float,
             cu_seqlens: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Read-out backward (FlashAttention-2): delta = rowsum(do * o), then dk/du per key tile and dq per row tile.
    Results in the accumulation dtype."""
    delta = rowdot(do, o)
    dq, dk, du = _attn_bwd(q, k, u, do, lse, lse, delta, kernel="softmax", write=False, scale=scale,
                           cu_seqlens=cu_seqlens)
    assert du is not None
    return dq, dk, du


def u_bwd(g: torch.Tensor, w: torch.Tensor, k: torch.Tensor, beta: torch.Tensor, u: torch.Tensor, r: torch.Tensor,
          lse: torch.Tensor, *, kernel: str, scale: float, chunk_size: int,
          cu_seqlens: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dw, dk, dv, dbeta) in the accumulation dtype from g = dL/du (accumulation dtype, contiguous).

    X = M^-T g chunk by chunk in REVERSE order, starting at the last actual chunk start (n_chunks - 1) * C, so T not
    a multiple of C is handled like the forward; then dv = X, dbeta_t = -X_t . r_t and the score gradients.
    """
    B, T, H, K = w.shape
    V = u.shape[-1]
    N, max_len = _sequences(B, T, cu_seqlens)
    BK, BV = head_blocks(K, V)
    NV = triton.cdiv(V, BV)
    adt = acc_dtype(u.dtype)
    x = torch.empty(B, T, H, V, dtype=adt, device=u.device)
    rhs = torch.empty(B, T, H, V, dtype=adt, device=u.device)
    prec, solve_prec = dot_precisions(u.dtype)
    common = {"H": H, "K": K, "V": V, "BK": BK, "BV": BV, "KERNEL": kernel, "IS_VARLEN": cu_seqlens is not None,
              "ACC": _tl_acc(u.dtype), "DOT_PRECISION": prec}
    key = (K, V, kernel, u.dtype, cu_seqlens is not None)

    def suffix(cfg: LaunchConfig, i_c: int) -> None:
        grid = (triton.cdiv(min(chunk_size, max_len), cfg.blocks["BT"]), NV, N * H)
        kern.deltaformer_bwd_kernel_suffix[grid](w, k, x, beta, lse, g, rhs, cu_seqlens, scale, T, chunk_size, i_c,
                                                 **common, **cfg.kwargs())

    def intra(cfg: LaunchConfig, i_c: int) -> None:
        kern.deltaformer_bwd_kernel_intra[(NV, N * H)](w, k, x, beta, lse, rhs, cu_seqlens, scale, T, chunk_size,
                                                       i_c, SOLVE_PRECISION=solve_prec, **common, **cfg.kwargs())

    for i_c in reversed(range(triton.cdiv(max_len, chunk_size))):
        cfg_s = TUNERS["bwd_suffix"].pick(key, functools.partial(suffix, i_c=i_c), K, V)
        suffix(cfg_s, i_c)
        cfg_i = TUNERS["bwd_intra"].pick(key, functools.partial(intra, i_c=i_c), K, V)
        intra(cfg_i, i_c)
    xr = rowdot(x, r)
    dbeta = -xr
    if kernel == "round":
        # round has zero derivative almost everywhere: only dv and dbeta flow
        return torch.zeros_like(w, dtype=adt), torch.zeros_like(k, dtype=adt), x, dbeta
    D = (-beta.to(adt) * xr).contiguous()  # D_t = dO_t . r_t = sum_j P_tj dP_tj (softmax normaliser term)
    dw, dk, _ = _attn_bwd(w, k, u, x, beta, lse, D, kernel=kernel, write=True, scale=scale, cu_seqlens=cu_seqlens)
    return dw, dk, x, dbeta


class _DeltaFormerU(torch.autograd.Function):
    """u = DF.4(w, k, v, beta) on [B, T, H, *] contiguous tensors; backward by the kernels above."""

    @staticmethod
    def forward(ctx: Any, w: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, kernel: str,
                scale: float, chunk_size: int, cu_seqlens: torch.Tensor | None) -> torch.Tensor:
        u, lse, r = u_fwd(w, k, v, beta, kernel=kernel, scale=scale, chunk_size=chunk_size, cu_seqlens=cu_seqlens,
                          store_r=True)
        ctx.save_for_backward(w, k, beta, u, r, lse, cu_seqlens)
        ctx.options = (kernel, scale, chunk_size)
        return u

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_u: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        w, k, beta, u, r, lse, cu_seqlens = ctx.saved_tensors
        kernel, scale, chunk_size = ctx.options
        g = grad_u.to(acc_dtype(u.dtype)).contiguous()
        dw, dk, dv, dbeta = u_bwd(g, w, k, beta, u, r, lse, kernel=kernel, scale=scale, chunk_size=chunk_size,
                                  cu_seqlens=cu_seqlens)
        return dw.to(w.dtype), dk.to(k.dtype), dv.to(u.dtype), dbeta.to(beta.dtype), None, None, None, None


class _DeltaFormerAttn(torch.autograd.Function):
    """o = causal_softmax(read_scale q k^T) u, u = DF.4(w, k, v, beta) with w = k or q; backward: the read-out's
    FlashAttention-2 backward gives du, then the u backward; dw is added to dk (write="k") or dq (write="q")."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, write: str,
                kernel: str, write_scale: float, read_scale: float, chunk_size: int,
                cu_seqlens: torch.Tensor | None) -> torch.Tensor:
        w = k if write == "k" else q
        u, lse_w, r = u_fwd(w, k, v, beta, kernel=kernel, scale=write_scale, chunk_size=chunk_size,
                            cu_seqlens=cu_seqlens, store_r=True)
        o, lse_o = read_u(q, k, u, scale=read_scale, cu_seqlens=cu_seqlens)
        ctx.save_for_backward(q, k, beta, u, r, lse_w, o, lse_o, cu_seqlens)
        ctx.options = (write, kernel, write_scale, read_scale, chunk_size)
        return o

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_o: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        q, k, beta, u, r, lse_w, o, lse_o, cu_seqlens = ctx.saved_tensors
        write, kernel, write_scale, read_scale, chunk_size = ctx.options
        do = grad_o.to(u.dtype).contiguous()
        dq, dk, du = read_bwd(do, q, k, u, o, lse_o, scale=read_scale, cu_seqlens=cu_seqlens)
        w = k if write == "k" else q
        dw, dk_w, dv, dbeta = u_bwd(du, w, k, beta, u, r, lse_w, kernel=kernel, scale=write_scale,
                                    chunk_size=chunk_size, cu_seqlens=cu_seqlens)
        dk = dk + dk_w
        if write == "k":
            dk = dk + dw
        else:
            dq = dq + dw
        return (dq.to(q.dtype), dk.to(k.dtype), dv.to(u.dtype), dbeta.to(beta.dtype),
                None, None, None, None, None, None)


def _needs_grad(*inputs: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(x.requires_grad for x in inputs)


def deltaformer_u(w: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, *, kernel: str,
                  scale: float, chunk_size: int | None, cu_seqlens: torch.Tensor | None) -> torch.Tensor:
    """DF.1 via DF.4: u_t = v_t - beta_t sum_{j<t} kappa_1(w_t, k_j) u_j, chunk by chunk. -> u [B, T, H, V].
    ``chunk_size`` None: ``default_chunk_size``."""
    chunk_size = default_chunk_size(w.shape[1]) if chunk_size is None else chunk_size
    inputs = (w, k, v, beta)
    if _needs_grad(*inputs):
        out: torch.Tensor = _DeltaFormerU.apply(  # type: ignore[no-untyped-call]
            *(x.contiguous() for x in inputs), kernel, scale, chunk_size, cu_seqlens)
        return out
    w, k, v, beta = (x.detach().contiguous() for x in inputs)
    u, _, _ = u_fwd(w, k, v, beta, kernel=kernel, scale=scale, chunk_size=chunk_size, cu_seqlens=cu_seqlens)
    return u


def deltaformer_attn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, *, write: str,
                     kernel: str, write_scale: float, read_scale: float, chunk_size: int | None,
                     cu_seqlens: torch.Tensor | None) -> torch.Tensor:
    """DF.9: o = causal_softmax(read_scale q k^T) U, U from DF.1 with w = k (write="k") or w = q (write="q") and
    ``write_scale`` in kappa_1. ``chunk_size`` None: ``default_chunk_size``."""
    chunk_size = default_chunk_size(q.shape[1]) if chunk_size is None else chunk_size
    inputs = (q, k, v, beta)
    if _needs_grad(*inputs):
        out: torch.Tensor = _DeltaFormerAttn.apply(  # type: ignore[no-untyped-call]
            *(x.contiguous() for x in inputs), write, kernel, write_scale, read_scale, chunk_size, cu_seqlens)
        return out
    q, k, v, beta = (x.detach().contiguous() for x in inputs)
    w = k if write == "k" else q
    u, _, _ = u_fwd(w, k, v, beta, kernel=kernel, scale=write_scale, chunk_size=chunk_size, cu_seqlens=cu_seqlens)
    o, _ = read_u(q, k, u, scale=read_scale, cu_seqlens=cu_seqlens)
    return o


def _bwd_variants(D: int, p: str, base: dict[str, Any], kernel: str | None) -> list[AotVariant]:
    """Backward compilations for head dim D: the write kernel ``kernel`` (suffix, intra, and dq/dk with WRITE
    unless round), or the read-out (kernel None: dq/dk with WRITE False, and the row-dot preprocessing)."""
    out: list[AotVariant] = []
    bwd = {**base, "BV": _full_v(D)}
    attn_sig = {"q": p, "k": p, "u": p, "g": p if kernel is None else "*fp32", "beta": p if kernel else "*fp32",
                "lse": "*fp32", "D": "*fp32"}
    tail = {"cu_seqlens": "*i32", "scale": "fp32", "T": "i32"}
    if kernel is None:
        out.extend(_bwd_attn_variants(D, {**attn_sig, **tail}, {**bwd, "KERNEL": "softmax", "WRITE": False}))
        for a in (p, "*fp32"):
            out.append(AotVariant("deltaformer_bwd_kernel_rowdot", kern.deltaformer_bwd_kernel_rowdot,
                                  {"a": a, "b": a, "out": "*fp32", "R": "i32"},
                                  {"V": D, "BR": 16, "BV": _full_v(D), "ACC": tl.float32}, 4, 1))
        return out
    chunk_sig = {"w": p, "k": p, "x": "*fp32", "beta": p, "lse": "*fp32"}
    chunk_tail = {"cu_seqlens": "*i32", "scale": "fp32", "T": "i32", "C": "i32", "i_c": "i32"}
    for cfg in suffix_configs(D, D):
        out.append(AotVariant("deltaformer_bwd_kernel_suffix", kern.deltaformer_bwd_kernel_suffix,
                              {**chunk_sig, "g": "*fp32", "rhs": "*fp32", **chunk_tail},
                              {**base, "KERNEL": kernel, **cfg.blocks}, cfg.num_warps, cfg.num_stages))
    for cfg in intra_configs(D, D):
        out.append(AotVariant("deltaformer_bwd_kernel_intra", kern.deltaformer_bwd_kernel_intra,
                              {**chunk_sig, "rhs": "*fp32", **chunk_tail},
                              {**base, "KERNEL": kernel, "SOLVE_PRECISION": "tf32x3", **cfg.blocks}, cfg.num_warps,
                              cfg.num_stages))
    if kernel != "round":
        out.extend(_bwd_attn_variants(D, {**attn_sig, **tail}, {**bwd, "KERNEL": kernel, "WRITE": True}))
    return out


def _bwd_attn_variants(D: int, sig: dict[str, str], consts: dict[str, Any]) -> list[AotVariant]:
    """The dq and dk passes of one attention backward (read-out or write similarity) for head dim D."""
    head = {n: sig[n] for n in ("q", "k", "u", "g", "beta", "lse", "D")}
    tail = {n: sig[n] for n in ("cu_seqlens", "scale", "T")}
    out = [AotVariant("deltaformer_bwd_kernel_dq", kern.deltaformer_bwd_kernel_dq, {**head, "dq": "*fp32", **tail},
                      {**consts, **cfg.blocks}, cfg.num_warps, cfg.num_stages) for cfg in bwd_dq_configs(D, D)]
    out += [AotVariant("deltaformer_bwd_kernel_dk", kern.deltaformer_bwd_kernel_dk,
                       {**head, "dk": "*fp32", "du": "*fp32", **tail}, {**consts, **cfg.blocks}, cfg.num_warps,
                       cfg.num_stages) for cfg in bwd_dk_configs(D, D)]
    return out


def aot_variants(head_dims: tuple[int, ...] = HEAD_DIMS, dtypes: tuple[str, ...] = LOW_PRECISION,
                 kernels: tuple[str, ...] = _write_kernels.NAMES,
                 store_rs: tuple[bool, ...] = (False, True)) -> list[AotVariant]:
    """Every compilation the forward and backward launchers can request for these head dims (K == V) and dtypes
    (``store_rs``: the forward chunk kernel without and with the r = P u store that a backward needs)."""
    out: list[AotVariant] = []
    for dt in dtypes:
        for D in head_dims:
            BK, BV = head_blocks(D, D)
            p = f"*{dt}"
            base = {"H": 4, "K": D, "V": D, "BK": BK, "BV": BV, "IS_VARLEN": True, "ACC": tl.float32,
                    "DOT_PRECISION": "ieee"}
            for kernel in kernels:
                sig = {"w": p, "k": p, "v": p, "beta": p, "u": p, "lse": "*fp32", "r": "*fp32",
                       "part_acc": "*fp32", "part_ml": "*fp32", "cu_seqlens": "*i32", "scale": "fp32", "T": "i32",
                       "C": "i32", "i_c": "i32", "N": "i32", "NS_READ": "i32", "KS": "i32", "NSMAX": "i32"}
                cfg = chunk_config(D, D)
                for store_r in store_rs:
                    out.append(AotVariant("deltaformer_fwd_kernel_chunk", kern.deltaformer_fwd_kernel_chunk, sig,
                                          {**base, "BV": max(16, next_power_of_2(D)), "CR": 128, "KERNEL": kernel,
                                           "SOLVE_PRECISION": "tf32x3", "STORE_R": store_r, **cfg.blocks},
                                          cfg.num_warps, cfg.num_stages))
                out.extend(_bwd_variants(D, p, base, kernel))
            sig = {"q": p, "k": p, "u": p, "o": p, "lse": "*fp32", "cu_seqlens": "*i32", "scale": "fp32", "T": "i32"}
            for cfg in read_configs(D, D):
                out.append(AotVariant("deltaformer_fwd_kernel_read", kern.deltaformer_fwd_kernel_read, sig,
                                      {**base, "BV": read_value_block(D), **cfg.blocks}, cfg.num_warps,
                                      cfg.num_stages))
            out.extend(_bwd_variants(D, p, base, None))
    return out
