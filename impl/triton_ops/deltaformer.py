"""Host side of the DeltaFormer Triton backend: launchers, grids and the autograd Functions.

Implements ``deltaformer_u`` (spec DF.1, computed as DF.4's chunked block forward substitution) and
``deltaformer_attn`` (DF.9: u, then the causal softmax read-out DF.8). Inputs arrive validated from ``impl``:
``[B, T, H, D]`` contiguous-able tensors, ``beta`` ``[B, T, H]``, ``cu_seqlens`` ``[N + 1]`` with B == 1 or None.
"""

from __future__ import annotations

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
    tf32_precision,
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
    recomputation). BTS = 16 at K <= 32 and K > 128 (32 spilled 32-136 bytes on sm_80 there). Compiles without
    spills on sm_80 and sm_90a (``impl.kernel_report``)."""
    if K > 128:
        return LaunchConfig({"BT": 32, "BTS": 16, "BS": 32}, num_warps=8, num_stages=1)
    return LaunchConfig({"BT": 64, "BTS": 32 if K > 32 else 16, "BS": 64}, num_warps=8, num_stages=2)


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
    """Row x key tiles of the backward dq / dw pass (K and all of V one block each): 128 query rows (wgmma) walking
    32-key tiles, as FlashAttention's Triton backward; K > 128 keeps small tiles."""
    if K > 128:
        return [LaunchConfig({"BT": 16, "BS": 32}, num_warps=4, num_stages=1)]
    return [LaunchConfig({"BT": 128, "BS": 32}, num_warps=8, num_stages=2)]


def bwd_dk_configs(K: int, V: int, write: bool) -> list[LaunchConfig]:
    """Key x row tiles of the backward dk / du pass: 128 keys (wgmma) walking 32-row query tiles; 16-row query
    tiles for the read-out's pass at K > 64 (it also holds du: 32 spilled 128 bytes on sm_80); K > 128 keeps
    small tiles (it holds k, u, dk and du)."""
    if K > 128:
        return [LaunchConfig({"BT": 16, "BS": 32}, num_warps=4, num_stages=1)]
    if K > 64 and not write:
        return [LaunchConfig({"BT": 128, "BS": 16}, num_warps=8, num_stages=2)]
    return [LaunchConfig({"BT": 128, "BS": 32}, num_warps=8, num_stages=2)]


def bwd_chunk_config(K: int, V: int) -> LaunchConfig:
    """Tiles of the backward per-chunk launch (``deltaformer_bwd_kernel_chunk``) and of the inverse launch (same
    BTS): BT rows per suffix-partial program, BTS rows per diagonal tile of the solve, BS later rows per folded
    tile, all of V in one block. The solve's inverse is precomputed, so its tile can be 64 rows (wgmma); 32-row
    folded tiles at K > 64 (64 spilled with the solve's tf32 product live); 4 warps at K <= 32 (8 spilled 16-24
    bytes on sm_80)."""
    if K > 128:
        return LaunchConfig({"BT": 32, "BTS": 32, "BS": 32}, num_warps=8, num_stages=1)
    if K > 64:
        return LaunchConfig({"BT": 64, "BTS": 64, "BS": 32}, num_warps=8, num_stages=2)
    return LaunchConfig({"BT": 64, "BTS": 64, "BS": 64}, num_warps=8 if K > 32 else 4, num_stages=2)


def bwd_inverse_config(K: int) -> LaunchConfig:
    """Launch options of ``deltaformer_bwd_kernel_inverse`` (its tile is ``bwd_chunk_config``'s BTS)."""
    return LaunchConfig({}, num_warps=4, num_stages=1)


SMALL_TILES = LaunchConfig({"BT": 16, "BS": 16}, num_warps=2, num_stages=1)
TUNERS = {
    "read": Tuner("deltaformer_fwd_kernel_read", read_configs, SMALL_TILES),
    "bwd_dq": Tuner("deltaformer_bwd_kernel_dq", bwd_dq_configs, SMALL_TILES),
    "bwd_dk": Tuner("deltaformer_bwd_kernel_dk", bwd_dk_configs, SMALL_TILES),
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


def _attn_common(q: torch.Tensor, u: torch.Tensor, kernel: str, write: bool, add: torch.Tensor | None,
                 cu_seqlens: torch.Tensor | None) -> dict[str, Any]:
    K, V = q.shape[-1], u.shape[-1]
    return {"H": q.shape[2], "K": K, "V": V, "BK": head_blocks(K, V)[0], "BV": _full_v(V), "KERNEL": kernel,
            "WRITE": write, "ACCUMULATE": add is not None, "IS_VARLEN": cu_seqlens is not None,
            "ACC": _tl_acc(u.dtype), "DOT_PRECISION": dot_precisions(u.dtype)[0]}


def attn_dq(q: torch.Tensor, k: torch.Tensor, u: torch.Tensor, do: torch.Tensor, lse: torch.Tensor,
            D: torch.Tensor, *, kernel: str, write: bool, scale: float, cu_seqlens: torch.Tensor | None,
            add: torch.Tensor | None, out_dtype: torch.dtype) -> torch.Tensor:
    """dq [B, T, H, K] in ``out_dtype`` (plus ``add``, another pass's gradient of the same input) of an attention
    with scores kappa(scale q k^T), values u and output gradient ``do`` (u's dtype). write=False: the causal
    softmax read-out (j <= t), D = delta. write=True: the write similarity (j < t), dO = -beta X, D = beta dbeta."""
    B, T, H, K = q.shape
    N, max_len = _sequences(B, T, cu_seqlens)
    dq = torch.empty(B, T, H, K, dtype=out_dtype, device=q.device)
    common = _attn_common(q, u, kernel, write, add, cu_seqlens)

    def launch(cfg: LaunchConfig) -> None:
        grid = (triton.cdiv(max_len, cfg.blocks["BT"]), N * H)
        kern.deltaformer_bwd_kernel_dq[grid](q, k, u, do, lse, D, dq if add is None else add, dq, cu_seqlens, scale,
                                             T, **common, **cfg.kwargs())

    key = (K, u.shape[-1], kernel, write, u.dtype, cu_seqlens is not None)
    launch(TUNERS["bwd_dq"].pick(key, launch, K, u.shape[-1]))
    return dq


def attn_dk(q: torch.Tensor, k: torch.Tensor, u: torch.Tensor, do: torch.Tensor, lse: torch.Tensor,
            D: torch.Tensor, *, kernel: str, write: bool, scale: float, cu_seqlens: torch.Tensor | None,
            add: torch.Tensor | None, out_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(dk in ``out_dtype`` plus ``add``, and for the read-out (write=False) du in the accumulation dtype) of the
    attention of ``attn_dq``."""
    B, T, H, K = q.shape
    V = u.shape[-1]
    N, max_len = _sequences(B, T, cu_seqlens)
    dk = torch.empty(B, T, H, K, dtype=out_dtype, device=q.device)
    du = None if write else torch.empty(B, T, H, V, dtype=acc_dtype(u.dtype), device=q.device)
    common = _attn_common(q, u, kernel, write, add, cu_seqlens)

    def launch(cfg: LaunchConfig) -> None:
        grid = (triton.cdiv(max_len, cfg.blocks["BT"]), N * H)
        kern.deltaformer_bwd_kernel_dk[grid](q, k, u, do, lse, D, dk if add is None else add, dk, du, cu_seqlens,
                                             scale, T, **common, **cfg.kwargs())

    key = (K, V, kernel, write, u.dtype, cu_seqlens is not None)
    launch(TUNERS["bwd_dk"].pick(key, launch, K, V, write))
    return dk, du


def read_bwd(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, u: torch.Tensor, o: torch.Tensor,
             lse: torch.Tensor, *, scale: float,
             cu_seqlens: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Read-out backward (FlashAttention-2): delta = rowsum(do * o), then dk/du per key tile and dq per row tile.
    Results in the accumulation dtype."""
    adt = acc_dtype(u.dtype)
    delta = rowdot(do, o)
    opts: dict[str, Any] = {"kernel": "softmax", "write": False, "scale": scale, "cu_seqlens": cu_seqlens,
                            "add": None, "out_dtype": adt}
    dk, du = attn_dk(q, k, u, do, lse, delta, **opts)
    dq = attn_dq(q, k, u, do, lse, delta, **opts)
    assert du is not None
    return dq, dk, du


def u_walk(g: torch.Tensor, w: torch.Tensor, k: torch.Tensor, beta: torch.Tensor, r: torch.Tensor,
           lse: torch.Tensor, *, kernel: str, scale: float, chunk_size: int, cu_seqlens: torch.Tensor | None,
           dv_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dO, dv, dbeta, D) from g = dL/du, with X = M^-T g: dO = -beta X in w's dtype (the output gradient of the
    write similarity, the only use of X besides dv), dv = X in ``dv_dtype``, dbeta = -X . r in beta's dtype and
    D = -beta X . r (accumulation dtype; the softmax normaliser term of the score gradients).

    One launch of ``deltaformer_bwd_kernel_inverse`` (every diagonal tile's transposed inverse), then one launch per
    chunk, last to first (README, "The backward algorithm"): chunk c is solved while the suffix partials of chunk
    c - 1 are summed over splits of the finished rows. The walk starts at the last actual chunk start, so T not a
    multiple of C is handled like the forward."""
    B, T, H, K = w.shape
    V = g.shape[-1]
    N, max_len = _sequences(B, T, cu_seqlens)
    BK, BV = max(16, next_power_of_2(K)), max(16, next_power_of_2(V))
    cfg = CHUNK_INTERPRETER if interpreting() else bwd_chunk_config(K, V)
    BT, BTS = cfg.blocks["BT"], cfg.blocks["BTS"]
    adt = acc_dtype(r.dtype)
    CR = min(chunk_size, max_len)
    NTC = triton.cdiv(CR, BT)
    ns_max = max_splits(NTC * N * H)
    n_chunks = triton.cdiv(max_len, chunk_size)
    do = torch.empty(B, T, H, V, dtype=w.dtype, device=g.device)
    dv = torch.empty(B, T, H, V, dtype=dv_dtype, device=g.device)
    dbeta = torch.empty(B, T, H, dtype=beta.dtype, device=g.device)
    D = torch.empty(B, T, H, dtype=adt, device=g.device)
    ainv = torch.empty(B, T, H, BTS, dtype=adt, device=g.device)
    opts = {"H": H, "K": K, "BK": BK, "KERNEL": kernel, "IS_VARLEN": cu_seqlens is not None, "ACC": _tl_acc(adt),
            "DOT_PRECISION": dot_precisions(w.dtype)[0], "SOLVE_PRECISION": tf32_precision(w.dtype)}
    inv_cfg = CHUNK_INTERPRETER if interpreting() else bwd_inverse_config(K)
    kern.deltaformer_bwd_kernel_inverse[(n_chunks * triton.cdiv(CR, BTS), N * H)](
        w, k, beta, lse, ainv, cu_seqlens, scale, T, chunk_size, BTS=BTS, CR=CR, **opts,
        num_warps=inv_cfg.num_warps, num_stages=inv_cfg.num_stages)

    def later(i_c: int) -> int:
        """Finished rows whose partials launch i_c computes for chunk i_c - 1: [(i_c + 1) C, max_len)."""
        return max(0, max_len - (i_c + 1) * chunk_size)

    n_buf = splits(later(1), ns_max)
    part = torch.empty(2, max(1, n_buf), N, CR, H, V, dtype=adt, device=g.device)
    for i_c in reversed(range(n_chunks)):
        ns_write = splits(later(i_c), ns_max) if i_c > 0 else 0
        ns_read = splits(later(i_c + 1), ns_max) if i_c + 1 < n_chunks else 0
        KS = triton.cdiv(triton.cdiv(later(i_c), max(1, ns_write)), cfg.blocks["BS"]) * cfg.blocks["BS"]
        kern.deltaformer_bwd_kernel_chunk[(1 + ns_write * NTC, N * H)](
            w, k, g, beta, lse, ainv, r, do, dv, dbeta, D, part, cu_seqlens, scale, T, chunk_size, i_c, N, ns_read,
            KS, max(1, n_buf), V=V, BV=BV, CR=CR, **opts, **cfg.kwargs())
    return do, dv, dbeta, D


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
        do, dv, dbeta, D = u_walk(grad_u.contiguous(), w, k, beta, r, lse, kernel=kernel, scale=scale,
                                 chunk_size=chunk_size, cu_seqlens=cu_seqlens, dv_dtype=u.dtype)
        if not _write_kernels.get(kernel).has_score_grad:
            # kappa_1 has zero derivative almost everywhere (round): only dv and dbeta flow
            return torch.zeros_like(w), torch.zeros_like(k), dv, dbeta, None, None, None, None
        opts: dict[str, Any] = {"kernel": kernel, "write": True, "scale": scale, "cu_seqlens": cu_seqlens,
                                "add": None}
        dw = attn_dq(w, k, u, do, lse, D, **opts, out_dtype=w.dtype)
        dk, _ = attn_dk(w, k, u, do, lse, D, **opts, out_dtype=k.dtype)
        return dw, dk, dv, dbeta, None, None, None, None


class _DeltaFormerAttn(torch.autograd.Function):
    """o = causal_softmax(read_scale q k^T) u, u = DF.4(w, k, v, beta) with w = k or q; backward: the read-out's
    FlashAttention-2 backward gives du, then the u backward; dw is added to dk (write="k") or dq (write="q") by the
    kernels themselves (each pass adds the previous pass's partial gradient and the last stores the input dtype)."""

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
        adt = acc_dtype(u.dtype)
        final = not _write_kernels.get(kernel).has_score_grad  # no write-similarity passes follow the read-out's
        delta = rowdot(do, o)
        read: dict[str, Any] = {"kernel": "softmax", "write": False, "scale": read_scale, "cu_seqlens": cu_seqlens,
                                "add": None}
        dk_r, du = attn_dk(q, k, u, do, lse_o, delta, **read, out_dtype=k.dtype if final else adt)
        dq_r = attn_dq(q, k, u, do, lse_o, delta, **read,
                       out_dtype=q.dtype if final or write == "k" else adt)
        assert du is not None
        w = k if write == "k" else q
        do_w, dv, dbeta, D = u_walk(du, w, k, beta, r, lse_w, kernel=kernel, scale=write_scale, chunk_size=chunk_size,
                                 cu_seqlens=cu_seqlens, dv_dtype=u.dtype)
        if final:
            return dq_r, dk_r, dv, dbeta, None, None, None, None, None, None
        wr: dict[str, Any] = {"kernel": kernel, "write": True, "scale": write_scale, "cu_seqlens": cu_seqlens}
        if write == "q":
            dq = attn_dq(q, k, u, do_w, lse_w, D, **wr, add=dq_r, out_dtype=q.dtype)
            dk, _ = attn_dk(q, k, u, do_w, lse_w, D, **wr, add=dk_r, out_dtype=k.dtype)
        else:
            # dk = read dk + write dk + dw (w = k): the key pass adds the read's, the row pass adds both
            dk_w, _ = attn_dk(k, k, u, do_w, lse_w, D, **wr, add=dk_r, out_dtype=adt)
            dk = attn_dq(k, k, u, do_w, lse_w, D, **wr, add=dk_w, out_dtype=k.dtype)
            dq = dq_r
        return dq, dk, dv, dbeta, None, None, None, None, None, None


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
    """Backward compilations for head dim D: the write kernel ``kernel`` (inverse, chunk, and dq/dk with WRITE
    unless round), or the read-out (kernel None: dq/dk with WRITE False, and the row-dot preprocessing)."""
    out: list[AotVariant] = []
    bwd = {**base, "BV": _full_v(D)}
    attn_sig = {"q": p, "k": p, "u": p, "g": p, "lse": "*fp32", "D": "*fp32"}
    tail = {"cu_seqlens": "*i32", "scale": "fp32", "T": "i32"}
    if kernel is None:
        out.extend(_bwd_attn_variants(D, p, {**attn_sig, **tail}, {**bwd, "KERNEL": "softmax", "WRITE": False}))
        out.append(AotVariant("deltaformer_bwd_kernel_rowdot", kern.deltaformer_bwd_kernel_rowdot,
                              {"a": p, "b": p, "out": "*fp32", "R": "i32"},
                              {"V": D, "BR": 16, "BV": _full_v(D), "ACC": tl.float32}, 4, 1))
        return out
    cfg = bwd_chunk_config(D, D)
    inv = bwd_inverse_config(D)
    solve = {"H": base["H"], "K": D, "BK": base["BK"], "CR": 128, "KERNEL": kernel, "IS_VARLEN": True,
             "ACC": tl.float32, "DOT_PRECISION": "ieee", "SOLVE_PRECISION": "tf32"}
    out.append(AotVariant("deltaformer_bwd_kernel_inverse", kern.deltaformer_bwd_kernel_inverse,
                          {"w": p, "k": p, "beta": p, "lse": "*fp32", "ainv": "*fp32", **tail, "C": "i32"},
                          {**solve, "BTS": cfg.blocks["BTS"]}, inv.num_warps, inv.num_stages))
    out.append(AotVariant("deltaformer_bwd_kernel_chunk", kern.deltaformer_bwd_kernel_chunk,
                          {"w": p, "k": p, "g": "*fp32", "beta": p, "lse": "*fp32", "ainv": "*fp32", "r": "*fp32",
                           "do": p, "dv": p, "dbeta": p, "D": "*fp32", "part": "*fp32", **tail, "C": "i32",
                           "i_c": "i32", "N": "i32", "NS_READ": "i32", "KS": "i32", "NSMAX": "i32"},
                          {**solve, "V": D, "BV": _full_v(D), **cfg.blocks}, cfg.num_warps, cfg.num_stages))
    if _write_kernels.get(kernel).has_score_grad:
        out.extend(_bwd_attn_variants(D, p, {**attn_sig, **tail}, {**bwd, "KERNEL": kernel, "WRITE": True}))
    return out


def _bwd_attn_variants(D: int, p: str, sig: dict[str, str], consts: dict[str, Any]) -> list[AotVariant]:
    """The dq and dk passes of one attention backward (read-out or write similarity) for head dim D: the read-out
    stores fp32 partial gradients, the write passes add one (ACCUMULATE) and store the input dtype."""
    head = {n: sig[n] for n in ("q", "k", "u", "g", "lse", "D")}
    tail = {n: sig[n] for n in ("cu_seqlens", "scale", "T")}
    acc = bool(consts["WRITE"])
    out_t = p if acc else "*fp32"
    out = [AotVariant("deltaformer_bwd_kernel_dq", kern.deltaformer_bwd_kernel_dq,
                      {**head, "dq_in": "*fp32", "dq": out_t, **tail}, {**consts, "ACCUMULATE": acc, **cfg.blocks},
                      cfg.num_warps, cfg.num_stages) for cfg in bwd_dq_configs(D, D)]
    out += [AotVariant("deltaformer_bwd_kernel_dk", kern.deltaformer_bwd_kernel_dk,
                       {**head, "dk_in": "*fp32", "dk": out_t, "du": "*fp32", **tail},
                       {**consts, "ACCUMULATE": acc, **cfg.blocks}, cfg.num_warps, cfg.num_stages)
            for cfg in bwd_dk_configs(D, D, acc)]
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
