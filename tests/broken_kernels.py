"""Deliberately broken kernels with the public impl signatures: the harness must reject each one (non-zero exit).

Each is the real torch backend with one classic bug injected (engineering.md's list of shipped FLA bugs).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

import impl
import impl.torch_ops.deltaformer as torch_deltaformer


def deltaformer_u_diagonal_in_mask(*args: Any, **kwargs: Any) -> Tensor:
    """Off-by-one causal mask in the write: the softmax over j <= t instead of j < t."""
    original = torch_deltaformer._strict_mask

    def inclusive(rows: int, cols: int, offset: int, device: torch.device) -> Tensor:
        return original(rows, cols, offset + 1, device)

    torch_deltaformer._strict_mask = inclusive
    try:
        return impl.deltaformer_u(*args, **kwargs)
    finally:
        torch_deltaformer._strict_mask = original


def deltaformer_attn_residual_in_fp16(q: Tensor, k: Tensor, v: Tensor, beta: Tensor | None = None,
                                      **kwargs: Any) -> Tensor:
    """``v - acc`` formed after rounding acc (and u) to fp16: the FLA low-precision residual bug."""
    original = torch.linalg.solve_triangular

    def rounded(A: Tensor, B: Tensor, **kw: Any) -> Tensor:
        return original(A, B.to(torch.float16).to(B.dtype), **kw)

    torch.linalg.solve_triangular = rounded
    try:
        return impl.deltaformer_attn(q, k, v, beta, **kwargs)
    finally:
        torch.linalg.solve_triangular = original


def deltaformer_attn_readout_scale_ignored(q: Tensor, k: Tensor, v: Tensor, beta: Tensor | None = None,
                                           **kwargs: Any) -> Tensor:
    """A given scale used for the write kernel only (the read-out keeps 1/sqrt(K))."""
    scale = kwargs.pop("scale", None)
    if scale is None:
        return impl.deltaformer_attn(q, k, v, beta, **kwargs)
    w = q if kwargs.get("write", "k") == "q" else k
    u = impl.deltaformer_u(w, k, v, beta, scale=scale,
                           kernel=kwargs.get("kernel", "softmax"), chunk_size=kwargs.get("chunk_size", 64),
                           cu_seqlens=kwargs.get("cu_seqlens"))
    return impl.softmax_attn(q, k, u, cu_seqlens=kwargs.get("cu_seqlens"))


def delta_rule_state_not_carried(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, **kwargs: Any) -> Any:
    """The chunk loop forgets the state between chunks whenever T spans several chunks (only the last chunk's
    contribution reaches the final state)."""
    T = q.shape[1]
    chunk = kwargs.get("chunk_size", 64)
    if chunk >= T or kwargs.get("cu_seqlens") is not None:
        return impl.delta_rule(q, k, v, beta, **kwargs)
    start = (T - 1) // chunk * chunk
    head = impl.delta_rule(*(x[:, :start].contiguous() for x in (q, k, v, beta)), **kwargs)
    rest = {**kwargs, "initial_state": None}
    tail = impl.delta_rule(*(x[:, start:].contiguous() for x in (q, k, v, beta)), **rest)
    return torch.cat([head[0], tail[0]], dim=1), tail[1]
