"""Host side shared by the chunked linear attention and delta rule Triton backends: block layout, launchers, autograd.

Kernels in ``chunk_kernels.py``; public backend functions in ``linear_attn.py`` and ``delta_rule.py``. Inputs arrive
validated from ``impl`` (``impl/README.md``, "Backend contract").

What the forward stores for the backward (``_ChunkFunction``): the per-block start states ``h`` [NBLK, H, K, V]
(accumulation dtype) and, for the delta rule, ``w`` = A K [B, T, H, K] and ``v_new`` = U - W h [B, T, H, V]
(accumulation dtype); ``U`` = A V is dropped after the state pass, and ``A`` is recomputed per block in the backward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import triton
import triton.language as tl

from impl.triton_ops import chunk_kernels as kern
from impl.triton_ops._runtime import (
    HEAD_DIMS,
    LOW_PRECISION,
    AotVariant,
    LaunchConfig,
    dot_precisions,
    interpreting,
    next_power_of_2,
)

__all__ = ["Blocks", "aot_variants", "chunk_op", "head_blocks", "row_tile"]


def row_tile(K: int, V: int, interp: bool | None = None) -> int:
    """Rows per block BT (the tile every kernel of one call shares): 16 under the interpreter (so small test sequences
    span several blocks and chunks), else 64 for K <= 64, 32 for K <= 128, 16 for K = 256 (larger tiles spill in
    ``chunk_bwd_kernel_dqk``, which holds five [BT, BK] and three [BT, BT] fp32 tiles; ``python -m impl.kernel_report``).
    """
    if interpreting() if interp is None else interp:
        return 16
    return 64 if K <= 64 else 32 if K <= 128 else 16


def head_blocks(K: int, V: int, interp: bool | None = None) -> tuple[int, int]:
    """(BK, BV): K is one padded block (W h and Q K^T need all of it); V is split into <= 64 (32 at K = 256) columns.

    Under the interpreter BV = 16, so V = 32 already exercises the column split.
    """
    BK = max(16, next_power_of_2(K))
    cap = 16 if (interpreting() if interp is None else interp) else 64 if K <= 128 else 32
    return BK, min(cap, max(16, next_power_of_2(V)))


def num_warps(K: int, interp: bool | None = None) -> int:
    """4 warps up to K = 64, 8 above (the [BK, BV] state and [BT, BK] tiles grow with K)."""
    if interpreting() if interp is None else interp:
        return 1
    return 4 if K <= 64 else 8


@dataclass(frozen=True)
class Blocks:
    """The block layout: chunk size C (clamped to the longest sequence), NB = cdiv(C, BT) tiles per chunk, the
    cumulative block counts per sequence ``boffs`` [N + 1] (int32, on the device), the largest block count per
    sequence and the total."""

    C: int
    NB: int
    BT: int
    boffs: torch.Tensor
    max_blocks: int
    total: int
    N: int

    @staticmethod
    def make(B: int, T: int, cu_seqlens: torch.Tensor | None, chunk_size: int, BT: int,
             device: torch.device) -> Blocks:
        lens = (torch.full((B,), T, dtype=torch.int64) if cu_seqlens is None
                else (cu_seqlens[1:] - cu_seqlens[:-1]).to("cpu", torch.int64))
        C = min(chunk_size, int(lens.max().item()))
        NB = triton.cdiv(C, BT)
        n_chunks = (lens + C - 1) // C
        last = lens - (n_chunks - 1) * C
        per_seq = (n_chunks - 1) * NB + (last + BT - 1) // BT
        boffs = torch.zeros(lens.numel() + 1, dtype=torch.int64)
        boffs[1:] = torch.cumsum(per_seq, 0)
        return Blocks(C, NB, BT, boffs.to(device=device, dtype=torch.int32), int(per_seq.max().item()),
                      int(boffs[-1].item()), lens.numel())


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: fp64 for fp64 inputs (interpreter tests), fp32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _tl_acc(dtype: torch.dtype) -> Any:
    return tl.float64 if dtype == torch.float64 else tl.float32


def _common(q: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor | None) -> dict[str, Any]:
    H, K, V = q.shape[2], q.shape[3], v.shape[3]
    BK, BV = head_blocks(K, V)
    prec, solve = dot_precisions(q.dtype)
    return {"H": H, "K": K, "V": V, "BT": row_tile(K, V), "BK": BK, "BV": BV, "IS_VARLEN": cu_seqlens is not None,
            "ACC": _tl_acc(q.dtype), "DOT_PRECISION": prec, "num_warps": num_warps(K), "num_stages": 1}


def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor | None, scale: float,
            initial_state: torch.Tensor | None, output_final_state: bool, chunk_size: int,
            cu_seqlens: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]:
    """(o, final state or None, saved tensors for the backward). beta None: linear attention, else the delta rule."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    cm = _common(q, v, cu_seqlens)
    blk = Blocks.make(B, T, cu_seqlens, chunk_size, cm["BT"], q.device)
    adt = acc_dtype(q.dtype)
    _, solve = dot_precisions(q.dtype)
    NV = triton.cdiv(V, cm["BV"])
    lay = (cu_seqlens, blk.boffs, T, blk.C, blk.NB)
    delta = beta is not None
    if delta:
        assert beta is not None
        w = torch.empty(B, T, H, K, dtype=adt, device=q.device)
        u = torch.empty(B, T, H, V, dtype=adt, device=q.device)
        kern.delta_rule_fwd_kernel_wy[(blk.max_blocks, blk.N * H)](k, v, beta, w, u, *lay, SOLVE_PRECISION=solve,
                                                                   **cm)
        vn = torch.empty(B, T, H, V, dtype=adt, device=q.device)
    else:
        w, u, vn = k, v, v
    h = torch.empty(blk.total, H, K, V, dtype=adt, device=q.device)
    ht = torch.empty(blk.N, H, K, V, dtype=q.dtype, device=q.device) if output_final_state else None
    kern.chunk_fwd_kernel_h[(NV, blk.N * H)](
        k, v, w, u, h, vn, initial_state if initial_state is not None else h, ht if ht is not None else h, *lay,
        DELTA=delta, USE_H0=initial_state is not None, STORE_HT=ht is not None, SOLVE_PRECISION=solve, **cm)
    o = torch.empty_like(v)
    kern.chunk_fwd_kernel_o[(blk.max_blocks, NV, blk.N * H)](q, k, vn, h, o, cu_seqlens, blk.boffs, scale, T, blk.C,
                                                             blk.NB, **cm)
    saved = {"h": h, "w": w, "vn": vn, "blk": blk}
    return o, ht, saved


def backward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor | None, scale: float,
             saved: dict[str, Any], do: torch.Tensor, dht: torch.Tensor | None,
             cu_seqlens: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """(dq, dk, dv, dbeta or None, d initial_state) in the accumulation dtype."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    cm = _common(q, v, cu_seqlens)
    blk: Blocks = saved["blk"]
    adt = acc_dtype(q.dtype)
    _, solve = dot_precisions(q.dtype)
    NV = triton.cdiv(V, cm["BV"])
    lay = (cu_seqlens, blk.boffs, scale, T, blk.C, blk.NB)
    delta = beta is not None
    dh = torch.empty(blk.total, H, K, V, dtype=adt, device=q.device)
    dh0 = torch.empty(blk.N, H, K, V, dtype=adt, device=q.device)
    dvn = torch.empty(B, T, H, V, dtype=adt, device=q.device)
    kern.chunk_bwd_kernel_dh[(NV, blk.N * H)](
        q, k, saved["w"], do, dh, dvn, dht if dht is not None else dh0, dh0, *lay,
        DELTA=delta, USE_DHT=dht is not None, SOLVE_PRECISION=solve, **cm)
    dq = torch.empty(B, T, H, K, dtype=adt, device=q.device)
    dk = torch.empty(B, T, H, K, dtype=adt, device=q.device)
    dv = torch.empty(B, T, H, V, dtype=adt, device=q.device) if delta else dvn
    dbeta = torch.empty(B, T, H, dtype=adt, device=q.device) if delta else None
    kern.chunk_bwd_kernel_dqk[(blk.max_blocks, blk.N * H)](
        q, k, v, beta if beta is not None else q, saved["vn"], do, saved["h"], dh, dvn, dq, dk, dv,
        dbeta if dbeta is not None else dq, *lay, DELTA=delta, SOLVE_PRECISION=solve, **cm)
    return dq, dk, dv, dbeta, dh0


class _ChunkFunction(torch.autograd.Function):
    """Autograd for both ops: forward and backward are the Triton kernels (no torch fallback)."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor | None,
                initial_state: torch.Tensor | None, scale: float, output_final_state: bool, chunk_size: int,
                cu_seqlens: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        o, ht, saved = forward(q, k, v, beta, scale, initial_state, output_final_state, chunk_size, cu_seqlens)
        ctx.save_for_backward(q, k, v, beta, saved["h"], saved["w"], saved["vn"])
        ctx.blk, ctx.scale, ctx.cu_seqlens = saved["blk"], scale, cu_seqlens
        ctx.state_dtype = None if initial_state is None else initial_state.dtype
        return o, ht

    @staticmethod
    def backward(ctx: Any, do: torch.Tensor, dht: torch.Tensor | None) -> tuple[Any, ...]:
        q, k, v, beta, h, w, vn = ctx.saved_tensors
        saved = {"h": h, "w": w, "vn": vn, "blk": ctx.blk}
        dq, dk, dv, dbeta, dh0 = backward(q, k, v, beta, ctx.scale, saved, do.contiguous(),
                                          None if dht is None else dht.contiguous(), ctx.cu_seqlens)
        dt = q.dtype
        return (dq.to(dt), dk.to(dt), dv.to(dt), None if dbeta is None else dbeta.to(dt),
                None if ctx.state_dtype is None else dh0.to(ctx.state_dtype), None, None, None, None)


def chunk_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor | None, *, scale: float,
             initial_state: torch.Tensor | None, output_final_state: bool, chunk_size: int,
             cu_seqlens: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Linear attention (beta None) or the delta rule: (o [B, T, H, V], final state [N, H, K, V] or None)."""
    q, k, v = (x.contiguous() for x in (q, k, v))
    beta = None if beta is None else beta.contiguous()
    h0 = None if initial_state is None else initial_state.contiguous()
    tensors = [x for x in (q, k, v, beta, h0) if x is not None]
    if torch.is_grad_enabled() and any(x.requires_grad for x in tensors):
        o, ht = _ChunkFunction.apply(q, k, v, beta, h0, scale, output_final_state,  # type: ignore[no-untyped-call]
                                     chunk_size, cu_seqlens)
        return o, ht
    with torch.no_grad():
        o, ht, _ = forward(q, k, v, beta, scale, h0, output_final_state, chunk_size, cu_seqlens)
    return o, ht


def aot_variants(head_dims: tuple[int, ...] = HEAD_DIMS, dtypes: tuple[str, ...] = LOW_PRECISION,
                 ops: tuple[str, ...] = ("linear_attn", "delta_rule")) -> list[AotVariant]:
    """Every compilation the linear attention / delta rule launchers request on a GPU for these head dims (K == V)."""
    out: list[AotVariant] = []
    for dt in dtypes:
        for D in head_dims:
            BK, BV = head_blocks(D, D, interp=False)
            p, a = f"*{dt}", "*fp32"
            base = {"H": 4, "K": D, "V": D, "BT": row_tile(D, D, interp=False), "BK": BK, "BV": BV, "IS_VARLEN": True,
                    "ACC": tl.float32, "DOT_PRECISION": "ieee"}
            nw = num_warps(D, interp=False)
            lay = {"cu_seqlens": "*i64", "boffs": "*i32"}
            lay_s = {**lay, "scale": "fp32"}
            tail = {"T": "i32", "C": "i32", "NB": "i32"}
            for op in ops:
                delta = op == "delta_rule"
                if delta:
                    sig = {"k": p, "v": p, "beta": p, "w": a, "u": a, **lay, **tail}
                    out.append(AotVariant("delta_rule_fwd_kernel_wy", kern.delta_rule_fwd_kernel_wy, sig,
                                          {**base, "SOLVE_PRECISION": "tf32x3"}, nw, 1))
                sig = {"k": p, "v": p, "w": a if delta else p, "u": a if delta else p, "h": a, "vn": a if delta else p,
                       "h0": p, "ht": p, **lay, **tail}
                out.append(AotVariant("chunk_fwd_kernel_h", kern.chunk_fwd_kernel_h, sig,
                                      {**base, "DELTA": delta, "USE_H0": True, "STORE_HT": True,
                                       "SOLVE_PRECISION": "tf32x3"}, nw, 1))
                sig = {"q": p, "k": p, "vn": a if delta else p, "h": a, "o": p, **lay_s, **tail}
                out.append(AotVariant("chunk_fwd_kernel_o", kern.chunk_fwd_kernel_o, sig, dict(base), nw, 1))
                sig = {"q": p, "k": p, "w": a if delta else p, "do": p, "dh": a, "dvn": a, "dht": p, "dh0": a,
                       **lay_s, **tail}
                out.append(AotVariant("chunk_bwd_kernel_dh", kern.chunk_bwd_kernel_dh, sig,
                                      {**base, "DELTA": delta, "USE_DHT": True, "SOLVE_PRECISION": "tf32x3"}, nw, 1))
                sig = {"q": p, "k": p, "v": p, "beta": p, "vn": a if delta else p, "do": p, "h": a, "dh": a,
                       "dvn": a, "dq": a, "dk": a, "dv": a, "dbeta": a, **lay_s, **tail}
                out.append(AotVariant("chunk_bwd_kernel_dqk", kern.chunk_bwd_kernel_dqk, sig,
                                      {**base, "DELTA": delta, "SOLVE_PRECISION": "tf32x3"}, nw, 1))
    return out
