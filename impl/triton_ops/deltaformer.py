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

from impl.triton_ops import deltaformer_kernels as kern
from impl.triton_ops._runtime import (
    HEAD_DIMS,
    LOW_PRECISION,
    AotVariant,
    LaunchConfig,
    Tuner,
    dot_precisions,
    next_power_of_2,
)

__all__ = ["deltaformer_attn", "deltaformer_u"]


def head_blocks(K: int, V: int) -> tuple[int, int]:
    """(BK, BV): the key dimension is one padded block (scores need all of it); values are split in <= 64 columns."""
    return max(16, next_power_of_2(K)), min(64, max(16, next_power_of_2(V)))


def prefix_configs(K: int, V: int) -> list[LaunchConfig]:
    """Row x key tiles of the prefix pass (GPU candidates). Every candidate compiles without spills on sm_80 and
    sm_90a (``python -m impl.kernel_report``); 64 x 64 spills on sm_80, and so does 64 x 32 at K = 64 (exp, linear).
    """
    if K > 128:
        return [LaunchConfig({"BT": 32, "BS": 32}, num_warps=4, num_stages=2),
                LaunchConfig({"BT": 64, "BS": 32}, num_warps=8, num_stages=2)]
    if 32 < K <= 64:
        return [LaunchConfig({"BT": 32, "BS": 32}, num_warps=4, num_stages=2)]
    return [LaunchConfig({"BT": 64, "BS": 32}, num_warps=4, num_stages=2),
            LaunchConfig({"BT": 32, "BS": 32}, num_warps=4, num_stages=2)]


def intra_configs(K: int, V: int) -> list[LaunchConfig]:
    """Row tile of the in-chunk solve: 32 rows and 8 warps (16 rows for K > 128); larger tiles spill on sm_80."""
    if K > 128:
        return [LaunchConfig({"BT": 16}, num_warps=4, num_stages=1)]
    return [LaunchConfig({"BT": 32}, num_warps=8, num_stages=1)]


def read_configs(K: int, V: int) -> list[LaunchConfig]:
    """Row x key tiles of the read-out (FlashAttention-2 style); 64 x 64 spills on sm_80 for K > 64."""
    if K > 128:
        return [LaunchConfig({"BT": 32, "BS": 32}, num_warps=4, num_stages=2),
                LaunchConfig({"BT": 64, "BS": 32}, num_warps=8, num_stages=2)]
    if K > 64:
        return [LaunchConfig({"BT": 64, "BS": 32}, num_warps=4, num_stages=2)]
    return [LaunchConfig({"BT": 64, "BS": 64}, num_warps=8, num_stages=2),
            LaunchConfig({"BT": 64, "BS": 32}, num_warps=4, num_stages=2)]


SMALL_TILES = LaunchConfig({"BT": 16, "BS": 16}, num_warps=2, num_stages=1)
TUNERS = {
    "prefix": Tuner("deltaformer_fwd_kernel_prefix", prefix_configs, SMALL_TILES),
    "intra": Tuner("deltaformer_fwd_kernel_intra", intra_configs, LaunchConfig({"BT": 16}, num_warps=2, num_stages=1)),
    "read": Tuner("deltaformer_fwd_kernel_read", read_configs, SMALL_TILES),
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
          chunk_size: int, cu_seqlens: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """u [B, T, H, V] and the write softmax's log-sum-exp [B, T, H] (unused unless kernel == "softmax")."""
    B, T, H, K = w.shape
    V = v.shape[-1]
    N, max_len = _sequences(B, T, cu_seqlens)
    BK, BV = head_blocks(K, V)
    NV = triton.cdiv(V, BV)
    adt = acc_dtype(v.dtype)
    u = torch.empty_like(v)
    acc = torch.empty(B, T, H, V, dtype=adt, device=v.device)
    m = torch.empty(B, T, H, dtype=adt, device=v.device)
    lsum = torch.empty(B, T, H, dtype=adt, device=v.device)
    lse = torch.empty(B, T, H, dtype=adt, device=v.device)
    prec, solve_prec = dot_precisions(v.dtype)
    common = {"H": H, "K": K, "V": V, "BK": BK, "BV": BV, "KERNEL": kernel, "IS_VARLEN": cu_seqlens is not None,
              "ACC": _tl_acc(v.dtype), "DOT_PRECISION": prec}
    key = (K, V, kernel, v.dtype, cu_seqlens is not None)

    def prefix(cfg: LaunchConfig, i_c: int) -> None:
        grid = (triton.cdiv(min(chunk_size, max_len), cfg.blocks["BT"]), NV, N * H)
        kern.deltaformer_fwd_kernel_prefix[grid](w, k, u, m, lsum, acc, cu_seqlens, scale, T, chunk_size, i_c,
                                                 **common, **cfg.kwargs())

    def intra(cfg: LaunchConfig, i_c: int) -> None:
        kern.deltaformer_fwd_kernel_intra[(NV, N * H)](w, k, v, beta, u, m, lsum, acc, lse, cu_seqlens, scale, T,
                                                       chunk_size, i_c, SOLVE_PRECISION=solve_prec, **common,
                                                       **cfg.kwargs())

    for i_c in range(triton.cdiv(max_len, chunk_size)):
        cfg_p = TUNERS["prefix"].pick(key, functools.partial(prefix, i_c=i_c), K, V)
        prefix(cfg_p, i_c)
        cfg_i = TUNERS["intra"].pick(key, functools.partial(intra, i_c=i_c), K, V)
        intra(cfg_i, i_c)
    return u, lse


def read_fwd(q: torch.Tensor, k: torch.Tensor, u: torch.Tensor, *, scale: float,
             cu_seqlens: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """o = causal_softmax(scale q k^T) u [B, T, H, V] and its log-sum-exp [B, T, H] (fp32, fp64 for fp64)."""
    B, T, H, K = q.shape
    V = u.shape[-1]
    N, max_len = _sequences(B, T, cu_seqlens)
    BK, BV = head_blocks(K, V)
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


class _ForwardOnly(torch.autograd.Function):
    """Marks outputs of the forward kernels so that a backward pass fails loudly instead of silently giving no grad.

    The backward kernels are not written yet (impl/triton_ops/README.md, "Status"); until they are, asking for a
    gradient through backend="triton" raises instead of returning zeros or detaching.
    """

    @staticmethod
    def forward(ctx: Any, out: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        return out

    @staticmethod
    def backward(ctx: Any, *grads: Any) -> Any:
        raise NotImplementedError("backend='triton': the DeltaFormer backward kernels are not implemented yet; "
                                  "use backend='torch' for gradients")


def _mark(out: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
    if torch.is_grad_enabled() and any(x.requires_grad for x in inputs):
        result: torch.Tensor = _ForwardOnly.apply(out, *inputs)  # type: ignore[no-untyped-call]
        return result
    return out


def deltaformer_u(w: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, *, kernel: str,
                  scale: float, chunk_size: int, cu_seqlens: torch.Tensor | None) -> torch.Tensor:
    """DF.1 via DF.4: u_t = v_t - beta_t sum_{j<t} kappa_1(w_t, k_j) u_j, chunk by chunk. -> u [B, T, H, V]."""
    inputs = (w, k, v, beta)
    w, k, v, beta = (x.detach().contiguous() for x in inputs)
    u, _ = u_fwd(w, k, v, beta, kernel=kernel, scale=scale, chunk_size=chunk_size, cu_seqlens=cu_seqlens)
    return _mark(u, *inputs)


def deltaformer_attn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, *, write: str,
                     kernel: str, scale: float | None, chunk_size: int,
                     cu_seqlens: torch.Tensor | None) -> torch.Tensor:
    """DF.9: o = causal_softmax(read_scale q k^T) U, U from DF.1 with w = k (write="k") or w = q (write="q").

    ``scale`` None: 1/sqrt(K) for the read-out and for softmax/exp writes, 1 for linear/round writes; a number is
    used for both.
    """
    inputs = (q, k, v, beta)
    q, k, v, beta = (x.detach().contiguous() for x in inputs)
    K = q.shape[-1]
    read_scale = K ** -0.5 if scale is None else float(scale)
    write_scale = (1.0 if kernel in ("linear", "round") else K ** -0.5) if scale is None else float(scale)
    w = k if write == "k" else q
    u, _ = u_fwd(w, k, v, beta, kernel=kernel, scale=write_scale, chunk_size=chunk_size, cu_seqlens=cu_seqlens)
    o, _ = read_fwd(q, k, u, scale=read_scale, cu_seqlens=cu_seqlens)
    return _mark(o, *inputs)


WRITE_KERNELS: tuple[str, ...] = ("softmax", "exp", "linear", "round")


def aot_variants(head_dims: tuple[int, ...] = HEAD_DIMS, dtypes: tuple[str, ...] = LOW_PRECISION,
                 kernels: tuple[str, ...] = WRITE_KERNELS) -> list[AotVariant]:
    """Every compilation the forward and backward launchers can request for these head dims (K == V) and dtypes."""
    out: list[AotVariant] = []
    for dt in dtypes:
        for D in head_dims:
            BK, BV = head_blocks(D, D)
            p = f"*{dt}"
            base = {"H": 4, "K": D, "V": D, "BK": BK, "BV": BV, "IS_VARLEN": True, "ACC": tl.float32,
                    "DOT_PRECISION": "ieee"}
            for kernel in kernels:
                sig = {"w": p, "k": p, "u": p, "m": "*fp32", "lsum": "*fp32", "acc": "*fp32", "cu_seqlens": "*i32",
                       "scale": "fp32", "T": "i32", "C": "i32", "i_c": "i32"}
                for cfg in prefix_configs(D, D):
                    out.append(AotVariant("deltaformer_fwd_kernel_prefix", kern.deltaformer_fwd_kernel_prefix, sig,
                                          {**base, "KERNEL": kernel, **cfg.blocks}, cfg.num_warps, cfg.num_stages))
                sig = {"w": p, "k": p, "v": p, "beta": p, "u": p, "m": "*fp32", "lsum": "*fp32", "acc": "*fp32",
                       "lse": "*fp32", "cu_seqlens": "*i32", "scale": "fp32", "T": "i32", "C": "i32", "i_c": "i32"}
                for cfg in intra_configs(D, D):
                    out.append(AotVariant("deltaformer_fwd_kernel_intra", kern.deltaformer_fwd_kernel_intra, sig,
                                          {**base, "KERNEL": kernel, "SOLVE_PRECISION": "tf32x3", **cfg.blocks},
                                          cfg.num_warps, cfg.num_stages))
            sig = {"q": p, "k": p, "u": p, "o": p, "lse": "*fp32", "cu_seqlens": "*i32", "scale": "fp32", "T": "i32"}
            for cfg in read_configs(D, D):
                out.append(AotVariant("deltaformer_fwd_kernel_read", kern.deltaformer_fwd_kernel_read, sig,
                                      {**base, **cfg.blocks}, cfg.num_warps, cfg.num_stages))
    return out
