"""Triton backend of ``impl.softmax_attn``: causal softmax attention by the DeltaFormer read-out kernels (DF.8).

The read-out o_t = sum_{j<=t} softmax_j(scale q_t . k_j) u_j is causal softmax attention with values u; here the
values are v. Forward ``deltaformer.read_fwd`` (FlashAttention-2 style, stores the log-sum-exp), backward
``deltaformer.read_bwd``; no kernel of its own.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import once_differentiable

from impl.triton_ops.deltaformer import read_bwd, read_fwd

__all__ = ["softmax_attn"]


class _SoftmaxAttn(torch.autograd.Function):
    """o = causal_softmax(scale q k^T) v on [B, T, H, *] contiguous tensors; backward by the read-out kernels."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                cu_seqlens: torch.Tensor | None) -> torch.Tensor:
        o, lse = read_fwd(q, k, v, scale=scale, cu_seqlens=cu_seqlens)
        ctx.save_for_backward(q, k, v, o, lse, cu_seqlens)
        ctx.scale = scale
        return o

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_o: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        q, k, v, o, lse, cu_seqlens = ctx.saved_tensors
        dq, dk, dv = read_bwd(grad_o.to(v.dtype).contiguous(), q, k, v, o, lse, scale=ctx.scale,
                              cu_seqlens=cu_seqlens)
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None


def softmax_attn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float, chunk_size: int | None,
                 cu_seqlens: torch.Tensor | None) -> torch.Tensor:
    """q, k [B, T, H, K], v [B, T, H, V] -> o [B, T, H, V] in the input dtype; ``chunk_size`` is not used (the
    kernels tile by their own blocks)."""
    del chunk_size
    q, k, v = (x.contiguous() for x in (q, k, v))
    if torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v)):
        out: torch.Tensor = _SoftmaxAttn.apply(q, k, v, scale, cu_seqlens)  # type: ignore[no-untyped-call]
        return out
    o, _ = read_fwd(q.detach(), k.detach(), v.detach(), scale=scale, cu_seqlens=cu_seqlens)
    return o
