"""Host side shared by the chunked linear attention and delta rule Triton backends: block layout, launchers, autograd.

Kernels in ``chunk_kernels.py``; public backend functions in ``linear_attn.py`` and ``delta_rule.py``. Inputs arrive
validated from ``impl`` (``impl/README.md``, "Backend contract").

What the forward stores for the backward (``_ChunkFunction``): the per-block start states ``h`` [NBLK, H, K, V]
(accumulation dtype) and, for the delta rule, ``w`` = A K [B, T, H, K] (input dtype) and ``v_new`` = U - W h
[B, T, H, V] (accumulation dtype); ``U`` = A V is dropped after the state pass; ``A`` is recomputed per block in the
backward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from impl.triton_ops import chunk_kernels as kern
from impl.triton_ops._runtime import (
    CHUNK_SIZE,
    HEAD_DIMS,
    LOW_PRECISION,
    AotVariant,
    dot_precisions,
    gpu_arch,
    interpreting,
    next_power_of_2,
    tf32_precision,
)

__all__ = ["Blocks", "aot_variants", "chunk_op", "kernel_config", "row_tile"]


def _arch(device: torch.device | None, arch: int | None) -> int:
    """``arch`` if given (0: the interpreter), else the tile family of ``device`` (``_runtime.gpu_arch``) or 0 under
    the interpreter."""
    if arch is not None:
        return arch
    if interpreting() or device is None:
        return 0
    return gpu_arch(device)


_ROW_TILES: dict[int, dict[int, int]] = {80: {64: 32, 128: 32, 256: 16}, 90: {64: 64, 128: 64, 256: 16}}


def _dclass(K: int) -> int:
    return 64 if K <= 64 else 128 if K <= 128 else 256


def row_tile(K: int, arch: int) -> int:
    """Rows per block BT, shared by every kernel of one call (``arch`` 0: the interpreter): 16 under the interpreter
    (so small test sequences span several blocks and chunks); on sm_90 64 for K <= 128 (every matmul of the
    block kernels has 64 rows: wgmma), 16 for K = 256; on sm_80 32 and 16 (64 rows spill there in the WY backward,
    which keeps about ten [64, 64] fp32 tiles live; ``python -m impl.kernel_report``)."""
    if arch == 0:
        return 16
    return _ROW_TILES[arch][_dclass(K)]


def block_k(K: int) -> int:
    """BK: K is one padded block (W h and Q K^T need all of it)."""
    return max(16, next_power_of_2(K))


# per tile family, kernel and head-dim class: (BV cap, num_warps); every entry compiles without spills on its
# architecture (sm_80: 32-row blocks, mma.sync; sm_90a: 64-row blocks, wgmma)
_GPU_CONFIGS: dict[int, dict[str, dict[int, tuple[int, int]]]] = {
    80: {"wy": {64: (32, 4), 128: (32, 8), 256: (32, 8)},
         "fwd_h": {64: (32, 4), 128: (32, 8), 256: (16, 8)},
         "fwd_o": {64: (64, 4), 128: (32, 4), 256: (32, 8)},
         "bwd_dh": {64: (32, 4), 128: (32, 8), 256: (32, 8)},
         "bwd_dqk": {64: (32, 8), 128: (16, 8), 256: (32, 8)},
         "bwd_wy": {64: (16, 8), 128: (16, 8), 256: (16, 8)}},
    90: {"wy": {64: (32, 8), 128: (64, 4), 256: (32, 8)},
         "fwd_h": {64: (32, 4), 128: (32, 8), 256: (16, 8)},
         "fwd_o": {64: (64, 4), 128: (16, 4), 256: (32, 8)},
         "bwd_dh": {64: (32, 4), 128: (16, 8), 256: (32, 8)},
         "bwd_dqk": {64: (16, 8), 128: (16, 8), 256: (32, 8)},
         "bwd_wy": {64: (16, 8), 128: (16, 8), 256: (16, 8)}},
}


def kernel_config(stage: str, K: int, V: int, arch: int) -> tuple[int, int]:
    """(BV, num_warps) of one kernel: V is split into column blocks of BV (a storage-independent choice, so it may
    differ between kernels; only BT must agree). Under the interpreter (``arch`` 0) BV = 16, so V = 33 spans three
    blocks."""
    if arch == 0:
        return 16, 1
    cap, warps = _GPU_CONFIGS[arch][stage][_dclass(K)]
    return min(cap, max(16, next_power_of_2(V))), warps


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


def _common(q: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor | None, stage: str) -> dict[str, Any]:
    """Constexprs and launch options of one kernel (``stage`` keys ``_GPU_CONFIGS``)."""
    H, K, V = q.shape[2], q.shape[3], v.shape[3]
    arch = _arch(q.device, None)
    BV, warps = kernel_config(stage, K, V, arch)
    prec, _ = dot_precisions(q.dtype)
    return {"H": H, "K": K, "V": V, "BT": row_tile(K, arch), "BK": block_k(K), "BV": BV,
            "IS_VARLEN": cu_seqlens is not None, "ACC": _tl_acc(q.dtype), "DOT_PRECISION": prec, "num_warps": warps,
            "num_stages": 1}


def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor | None, scale: float,
            initial_state: torch.Tensor | None, output_final_state: bool, chunk_size: int,
            cu_seqlens: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]:
    """(o, final state or None, saved tensors for the backward). beta None: linear attention, else the delta rule."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    blk = Blocks.make(B, T, cu_seqlens, chunk_size, row_tile(K, _arch(q.device, None)), q.device)
    adt = acc_dtype(q.dtype)
    _, solve = dot_precisions(q.dtype)
    lay = (cu_seqlens, blk.boffs, T, blk.C, blk.NB)
    delta = beta is not None
    if delta:
        assert beta is not None
        w = torch.empty_like(k)
        u = torch.empty(B, T, H, V, dtype=adt, device=q.device)
        kern.delta_rule_fwd_kernel_wy[(blk.max_blocks, blk.N * H)](
            k, v, beta, w, u, *lay, SOLVE_PRECISION=tf32_precision(q.dtype), **_common(q, v, cu_seqlens, "wy"))
        vn = torch.empty(B, T, H, V, dtype=adt, device=q.device)
    else:
        w, u, vn = k, v, v
    h = torch.empty(blk.total, H, K, V, dtype=adt, device=q.device)
    ht = torch.empty(blk.N, H, K, V, dtype=q.dtype, device=q.device) if output_final_state else None
    cm = _common(q, v, cu_seqlens, "fwd_h")
    kern.chunk_fwd_kernel_h[(triton.cdiv(V, cm["BV"]), blk.N * H)](
        k, v, w, u, h, vn, initial_state if initial_state is not None else h, ht if ht is not None else h, *lay,
        DELTA=delta, USE_H0=initial_state is not None, STORE_HT=ht is not None, SOLVE_PRECISION=solve, **cm)
    o = torch.empty_like(v)
    cm = _common(q, v, cu_seqlens, "fwd_o")
    kern.chunk_fwd_kernel_o[(blk.max_blocks, triton.cdiv(V, cm["BV"]), blk.N * H)](
        q, k, vn, h, o, cu_seqlens, blk.boffs, scale, T, blk.C, blk.NB, **cm)
    saved = {"h": h, "w": w, "vn": vn, "blk": blk}
    return o, ht, saved


def backward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor | None, scale: float,
             saved: dict[str, Any], do: torch.Tensor, dht: torch.Tensor | None,
             cu_seqlens: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None,
                                                        torch.Tensor]:
    """(dq, dk, dv, dbeta or None, d initial_state) in the accumulation dtype."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    blk: Blocks = saved["blk"]
    adt = acc_dtype(q.dtype)
    _, solve = dot_precisions(q.dtype)
    lay = (cu_seqlens, blk.boffs, scale, T, blk.C, blk.NB)
    delta = beta is not None
    dh = torch.empty(blk.total, H, K, V, dtype=adt, device=q.device)
    dh0 = torch.empty(blk.N, H, K, V, dtype=adt, device=q.device)
    dvn = torch.empty(B, T, H, V, dtype=adt, device=q.device)
    cm = _common(q, v, cu_seqlens, "bwd_dh")
    kern.chunk_bwd_kernel_dh[(triton.cdiv(V, cm["BV"]), blk.N * H)](
        q, k, saved["w"], do, dh, dvn, dht if dht is not None else dh0, dh0, *lay,
        DELTA=delta, USE_DHT=dht is not None, SOLVE_PRECISION=solve, **cm)
    dq = torch.empty(B, T, H, K, dtype=adt, device=q.device)
    dk = torch.empty(B, T, H, K, dtype=adt, device=q.device)
    dw = torch.empty(B, T, H, K, dtype=adt, device=q.device) if delta else dq
    kern.chunk_bwd_kernel_dqk[(blk.max_blocks, blk.N * H)](
        q, k, saved["vn"], do, saved["h"], dh, dvn, dq, dk, dw, *lay, DELTA=delta, SOLVE_PRECISION=solve,
        **_common(q, v, cu_seqlens, "bwd_dqk"))
    if not delta:
        return dq, dk, dvn, None, dh0
    assert beta is not None
    dv = torch.empty(B, T, H, V, dtype=adt, device=q.device)
    dbeta = torch.empty(B, T, H, dtype=adt, device=q.device)
    kern.delta_rule_bwd_kernel_wy[(blk.max_blocks, blk.N * H)](
        k, v, beta, dw, dvn, dk, dv, dbeta, cu_seqlens, blk.boffs, T, blk.C, blk.NB,
        SOLVE_PRECISION=tf32_precision(q.dtype), **_common(q, v, cu_seqlens, "bwd_wy"))
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
    @once_differentiable
    def backward(ctx: Any, do: torch.Tensor, dht: torch.Tensor | None) -> tuple[Any, ...]:
        q, k, v, beta, h, w, vn = ctx.saved_tensors
        saved = {"h": h, "w": w, "vn": vn, "blk": ctx.blk}
        dq, dk, dv, dbeta, dh0 = backward(q, k, v, beta, ctx.scale, saved, do.contiguous(),
                                          None if dht is None else dht.contiguous(), ctx.cu_seqlens)
        dt = q.dtype
        return (dq.to(dt), dk.to(dt), dv.to(dt), None if dbeta is None else dbeta.to(dt),
                None if ctx.state_dtype is None else dh0.to(ctx.state_dtype), None, None, None, None)


def chunk_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor | None, *, scale: float,
             initial_state: torch.Tensor | None, output_final_state: bool, chunk_size: int | None,
             cu_seqlens: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Linear attention (beta None) or the delta rule: (o [B, T, H, V], final state [N, H, K, V] or None).
    ``chunk_size`` None: CHUNK_SIZE."""
    chunk_size = CHUNK_SIZE if chunk_size is None else chunk_size
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
    """Every compilation the linear attention / delta rule launchers request on a GPU for these head dims (K == V),
    per tile family (sm_80: 32-row blocks; sm_90a: 64-row blocks)."""
    out: list[AotVariant] = []

    def add(name: str, stage: str, D: int, sig: dict[str, str], extra: dict[str, Any]) -> None:
        for arch in (80, 90):
            BV, warps = kernel_config(stage, D, D, arch)
            cx = {"H": 4, "K": D, "V": D, "BT": row_tile(D, arch), "BK": block_k(D), "BV": BV, "IS_VARLEN": True,
                  "ACC": tl.float32, "DOT_PRECISION": "ieee", **extra}
            out.append(AotVariant(name, getattr(kern, name), sig, cx, warps, 1, archs=(arch,)))

    for dt in dtypes:
        for D in head_dims:
            p, a = f"*{dt}", "*fp32"
            lay = {"cu_seqlens": "*i64", "boffs": "*i32"}
            lay_s = {**lay, "scale": "fp32"}
            tail = {"T": "i32", "C": "i32", "NB": "i32"}
            for op in ops:
                delta = op == "delta_rule"
                f = a if delta else p
                solve = {"SOLVE_PRECISION": "tf32x3"}
                if delta:
                    add("delta_rule_fwd_kernel_wy", "wy", D,
                        {"k": p, "v": p, "beta": p, "w": p, "u": a, **lay, **tail}, {"SOLVE_PRECISION": "tf32"})
                add("chunk_fwd_kernel_h", "fwd_h", D,
                    {"k": p, "v": p, "w": p, "u": f, "h": a, "vn": f, "h0": p, "ht": p, **lay, **tail},
                    {"DELTA": delta, "USE_H0": True, "STORE_HT": True, **solve})
                add("chunk_fwd_kernel_o", "fwd_o", D, {"q": p, "k": p, "vn": f, "h": a, "o": p, **lay_s, **tail}, {})
                add("chunk_bwd_kernel_dh", "bwd_dh", D,
                    {"q": p, "k": p, "w": p, "do": p, "dh": a, "dvn": a, "dht": p, "dh0": a, **lay_s, **tail},
                    {"DELTA": delta, "USE_DHT": True, **solve})
                add("chunk_bwd_kernel_dqk", "bwd_dqk", D,
                    {"q": p, "k": p, "vn": f, "do": p, "h": a, "dh": a, "dvn": a, "dq": a, "dk": a, "dw": a,
                     **lay_s, **tail}, {"DELTA": delta, **solve})
                if delta:
                    add("delta_rule_bwd_kernel_wy", "bwd_wy", D,
                        {"k": p, "v": p, "beta": p, "dw": a, "dvn": a, "dk": a, "dv": a, "dbeta": a, **lay, **tail},
                        {"SOLVE_PRECISION": "tf32"})
    return out
