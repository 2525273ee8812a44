"""DeltaFormer's public ops: validate, resolve defaults, dispatch to a backend (``impl/README.md``)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from impl import _validate, _write_kernels
from impl._backend import Backend, backend_module, resolve_backend

__all__ = ["DecodeOutput", "deltaformer_attn", "deltaformer_decode_step", "deltaformer_u"]


def _straight_through_backend(straight_through: object, kernel: str, backend: str, device: torch.device,
                              dtype: torch.dtype) -> Backend:
    """The backend to run, given the ``straight_through`` option (a bool; True only with the round kernel, and only
    the torch backend implements it: "auto" then picks torch, an explicit "triton" is refused)."""
    flag = _validate.check_flag("straight_through", straight_through)
    if flag and kernel != "round":
        raise ValueError(f"straight_through=True applies to kernel='round' only, got kernel={kernel!r}")
    if flag and backend == "auto":
        return Backend.TORCH
    resolved = resolve_backend(backend, device, dtype)
    if flag and resolved is not Backend.TORCH:
        raise RuntimeError(f"straight_through=True is implemented by the torch backend only, got backend={backend!r}; "
                           f"pass backend='torch'")
    return resolved


def deltaformer_u(w: Tensor, k: Tensor, v: Tensor, beta: Tensor | None = None, *, kernel: str = "softmax",
                  scale: float | None = None, chunk_size: int | None = None, cu_seqlens: Tensor | None = None,
                  backend: str = "auto", straight_through: bool = False) -> Tensor:
    """DeltaFormer's written values: w, k [B, T, H, K], v [B, T, H, V], beta [B, T, H] -> u [B, T, H, V].

    Implements spec.deltaformer.deltaformer_u (DF.1: u_t = v_t - beta_t sum_{j<t} kappa_1(w_t, k_j) u_j) per
    (batch, head), by the chunked form DF.4. ``kernel``: "softmax" (normalised over j < t), "exp", "linear",
    "round". ``scale`` None: 1/sqrt(K) for softmax/exp, 1 for linear/round. ``beta`` None: ones (unconstrained
    otherwise). ``cu_seqlens`` [N + 1] packs N sequences along T (B must be 1). fp16/bf16 are computed in fp32.
    Error contract: proofs_checks/differential/tolerances.py::deltaformer_u_budget.
    ``straight_through`` (kernel "round" only, torch backend only): the backward treats d round(x)/dx as 1, a
    straight-through estimator, so w and k get the linear kernel's gradient at the rounded forward; by default
    (False) the rounded write scores pass no gradient (round' = 0 almost everywhere). The forward is unchanged.

    Raises:
        TypeError: non-tensor input, non-floating dtype, dtype mismatch, non-int chunk_size or cu_seqlens.
        ValueError: wrong shape, device mismatch, NaN/Inf, T = 0, bad cu_seqlens, unknown kernel
            or backend, straight_through with a kernel other than "round".
        RuntimeError: the requested backend cannot run (or cannot run straight_through).
    """
    kernel = _validate.check_choice("kernel", kernel, _write_kernels.NAMES)
    w, k, v, beta = _validate.check_qkv(w, k, v, beta, q_name="w")
    given = _validate.check_scale(scale)
    chunk_size = _validate.check_chunk_size(chunk_size)
    cu = _validate.check_cu_seqlens(cu_seqlens, batch=w.shape[0], total=w.shape[1], device=w.device)
    module = backend_module(_straight_through_backend(straight_through, kernel, backend, w.device, w.dtype),
                            "deltaformer")
    beta = torch.ones(w.shape[:3], dtype=w.dtype, device=w.device) if beta is None else beta
    write_scale, _ = _write_kernels.resolve_scales(kernel, w.shape[-1], given)
    extra = {"straight_through": True} if straight_through else {}
    u: Tensor = module.deltaformer_u(w, k, v, beta, kernel=kernel, scale=write_scale, chunk_size=chunk_size,
                                     cu_seqlens=cu, **extra)
    return u


def deltaformer_attn(q: Tensor, k: Tensor, v: Tensor, beta: Tensor | None = None, *, write: str = "k",
                     kernel: str = "softmax", scale: float | None = None, chunk_size: int | None = None,
                     cu_seqlens: Tensor | None = None, backend: str = "auto", straight_through: bool = False) -> Tensor:
    """DeltaFormer attention: q, k [B, T, H, K], v [B, T, H, V], beta [B, T, H] -> o [B, T, H, V].

    Implements spec.deltaformer.deltaformer_attn (DF.9) per (batch, head): u from DF.1 with write vectors w = k
    (``write="k"``, the paper) or w = q (``write="q"``, the public code), then o = causal_softmax(scale Q K^T) U.
    ``scale`` None: the write kernel's default (see ``deltaformer_u``) and 1/sqrt(K) for the read-out; a number is
    used for both. Other arguments (``straight_through`` included) and errors as ``deltaformer_u``.
    """
    write = _validate.check_choice("write", write, _write_kernels.WRITES)
    kernel = _validate.check_choice("kernel", kernel, _write_kernels.NAMES)
    q, k, v, beta = _validate.check_qkv(q, k, v, beta)
    given = _validate.check_scale(scale)
    chunk_size = _validate.check_chunk_size(chunk_size)
    cu = _validate.check_cu_seqlens(cu_seqlens, batch=q.shape[0], total=q.shape[1], device=q.device)
    module = backend_module(_straight_through_backend(straight_through, kernel, backend, q.device, q.dtype),
                            "deltaformer")
    beta = torch.ones(q.shape[:3], dtype=q.dtype, device=q.device) if beta is None else beta
    write_scale, read_scale = _write_kernels.resolve_scales(kernel, q.shape[-1], given)
    extra = {"straight_through": True} if straight_through else {}
    o: Tensor = module.deltaformer_attn(q, k, v, beta, write=write, kernel=kernel, write_scale=write_scale,
                                        read_scale=read_scale, chunk_size=chunk_size, cu_seqlens=cu, **extra)
    return o


class DecodeOutput(NamedTuple):
    """One decoding step's result: the output row and the grown (k, u) cache."""

    o: Tensor
    """[B, H, V]"""
    cache_k: Tensor
    """[B, t + 1, H, K]"""
    cache_u: Tensor
    """[B, t + 1, H, V]"""


def deltaformer_decode_step(cache_k: Tensor, cache_u: Tensor, q_t: Tensor, k_t: Tensor, v_t: Tensor,
                            beta_t: Tensor | None = None, *, write: str = "k", kernel: str = "softmax",
                            scale: float | None = None) -> DecodeOutput:
    """One DeltaFormer decoding step over a (k, u) cache; implements spec.deltaformer.deltaformer_decode_step (DF.10).

    cache_k [B, t, H, K], cache_u [B, t, H, V] (t may be 0), q_t, k_t [B, H, K], v_t [B, H, V], beta_t [B, H] or
    None (ones). u_t = v_t - beta_t sum_{j<t} kappa_1(w_t, k_j) u_j (one attention of w_t over the cache), append
    (k_t, u_t), then o_t = sum_{j<=t} softmax_j(scale q_t . k_j) u_j. Feeding tokens one at a time from empty
    caches reproduces ``deltaformer_attn`` row by row. Computed in fp32 for fp16/bf16 (cache kept in the input
    dtype) by the torch backend on any device (no backend choice: one token is a matrix-vector product).
    """
    write = _validate.check_choice("write", write, _write_kernels.WRITES)
    kernel = _validate.check_choice("kernel", kernel, _write_kernels.NAMES)
    q_t = _validate.check_tensor("q_t", q_t, ndim=3, layout="[B, H, K]")
    B, H, K = q_t.shape
    k_t = _validate.check_tensor("k_t", k_t, ndim=3, layout="[B, H, K]", dtype=q_t.dtype, dtype_of="q_t",
                                 shape=(B, H, K), shape_of="q_t")
    v_t = _validate.check_tensor("v_t", v_t, ndim=3, layout="[B, H, V]", dtype=q_t.dtype, dtype_of="q_t",
                                 shape=(B, H, None), shape_of="q_t")
    V = v_t.shape[-1]
    if beta_t is not None:
        beta_t = _validate.check_tensor("beta_t", beta_t, ndim=2, layout="[B, H]", dtype=q_t.dtype,
                                        dtype_of="q_t", shape=(B, H), shape_of="q_t")
    if not isinstance(cache_k, Tensor) or not isinstance(cache_u, Tensor):
        raise TypeError(f"cache_k and cache_u must be torch.Tensors [B, t, H, *], got {type(cache_k).__name__} and "
                        f"{type(cache_u).__name__}")
    t = cache_k.shape[1] if cache_k.ndim == 4 else -1
    if t == 0:
        if tuple(cache_k.shape) != (B, 0, H, K) or tuple(cache_u.shape) != (B, 0, H, V):
            raise ValueError(f"empty caches must have shapes {(B, 0, H, K)} and {(B, 0, H, V)}, got "
                             f"{tuple(cache_k.shape)} and {tuple(cache_u.shape)}")
        if cache_k.dtype != q_t.dtype or cache_u.dtype != q_t.dtype:
            raise TypeError(f"cache_k and cache_u must have the dtype of q_t ({q_t.dtype}), got {cache_k.dtype} and "
                            f"{cache_u.dtype} (dtype mismatch)")
    else:
        cache_k = _validate.check_tensor("cache_k", cache_k, ndim=4, layout="[B, t, H, K]", dtype=q_t.dtype,
                                         dtype_of="q_t", shape=(B, None, H, K), shape_of="q_t")
        cache_u = _validate.check_tensor("cache_u", cache_u, ndim=4, layout="[B, t, H, V]", dtype=q_t.dtype,
                                         dtype_of="q_t", shape=(B, t, H, V), shape_of="cache_k and v_t")
    _validate.check_same_device(q_t=q_t, k_t=k_t, v_t=v_t, beta_t=beta_t, cache_k=cache_k, cache_u=cache_u)
    given = _validate.check_scale(scale)
    write_scale, read_scale = _write_kernels.resolve_scales(kernel, K, given)
    beta_t = torch.ones(B, H, dtype=q_t.dtype, device=q_t.device) if beta_t is None else beta_t
    module = backend_module(Backend.TORCH, "deltaformer")
    o, grown_k, grown_u = module.deltaformer_decode_step(cache_k, cache_u, q_t, k_t, v_t, beta_t, write=write,
                                                         kernel=kernel, write_scale=write_scale,
                                                         read_scale=read_scale)
    return DecodeOutput(o, grown_k, grown_u)
