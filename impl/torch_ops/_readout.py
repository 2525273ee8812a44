"""Causal softmax attention on [B, H, T, D] for the torch backend: DeltaFormer's read-out (DF.8) and softmax_attn.

o_t = sum_{j<=t} softmax_j(scale q_t . k_j) v_j. On CPU with K == V: PyTorch's fused flash-attention op
(``aten._scaled_dot_product_flash_attention_for_cpu``, no T x T matrix) forward and backward, in an autograd
Function that adds what the fused op lacks:

- any real ``scale``: the fused causal op returns NaN for scale <= 0 (its causal mask does not survive a
  non-positive scale), so scale < 0 runs as (-q, -scale) and scale = 0 as (0, 1), both exactly the same scores;
- a double backward: with ``create_graph=True`` the backward is computed by dense, differentiable torch ops
  (``_dense_backward``, O(T^2) memory), because the fused op's backward has no derivative.

Elsewhere (other devices, K != V): ``functional.scaled_dot_product_attention`` on the same positive-scale
(q, scale), with its own autograd.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.nn import functional

__all__ = ["causal_softmax_attention", "positive_scale"]


def positive_scale(q: Tensor, scale: float) -> tuple[Tensor, float]:
    """(q', s') with s' > 0 and s' q' . k = scale q . k exactly: (q, scale), (-q, -scale) or (0, 1)."""
    if scale > 0:
        return q, scale
    if scale < 0:
        return -q, -scale
    return torch.zeros_like(q), 1.0


def _dense_backward(q: Tensor, k: Tensor, v: Tensor, d_out: Tensor, scale: float) -> tuple[Tensor, Tensor, Tensor]:
    """(dq, dk, dv) of causal softmax attention by differentiable [T, T] torch ops (the create_graph path)."""
    T = q.shape[-2]
    future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu_(1)
    A = torch.softmax((scale * torch.matmul(q, k.transpose(-1, -2))).masked_fill(future, -torch.inf), dim=-1)
    dA = torch.matmul(d_out, v.transpose(-1, -2))
    dS = A * (dA - (A * dA).sum(-1, keepdim=True)) * scale
    return torch.matmul(dS, k), torch.matmul(dS.transpose(-1, -2), q), torch.matmul(A.transpose(-1, -2), d_out)


class _CpuCausalAttention(torch.autograd.Function):
    """The fused CPU flash op, forward and backward, for any real scale; a dense backward under create_graph."""

    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        q_pos, s_pos = positive_scale(q, scale)
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q_pos, k, v, 0.0, True, scale=s_pos)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.scale = scale
        result: Tensor = out
        return result

    @staticmethod
    def backward(ctx: Any, d_out: Tensor) -> tuple[Tensor | None, ...]:
        q, k, v, out, lse = ctx.saved_tensors
        scale = ctx.scale
        if torch.is_grad_enabled():
            dq, dk, dv = _dense_backward(q, k, v, d_out, scale)
            return dq, dk, dv, None
        q_pos, s_pos = positive_scale(q, scale)
        dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            d_out.contiguous(), q_pos, k, v, out, lse, 0.0, True, scale=s_pos)
        if scale < 0:
            dq = -dq
        elif scale == 0:
            dq = torch.zeros_like(q)
        return dq, dk, dv, None


def causal_softmax_attention(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """o [B, H, T, V] = causal_softmax(scale q k^T) v for q, k [B, H, T, K], v [B, H, T, V] (contiguous)."""
    if q.device.type == "cpu" and q.shape[-1] == v.shape[-1]:
        if torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v)):
            out: Tensor = _CpuCausalAttention.apply(q, k, v, scale)  # type: ignore[no-untyped-call]
            return out
        q_pos, s_pos = positive_scale(q, scale)
        o: Tensor = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q_pos, k, v, 0.0, True,
                                                                               scale=s_pos)[0]
        return o
    q_pos, s_pos = positive_scale(q, scale)
    return functional.scaled_dot_product_attention(q_pos, k, v, is_causal=True, scale=s_pos)
