"""Causal softmax attention on the torch backend: ``functional.scaled_dot_product_attention(is_causal=True)``.

On CPU, PyTorch runs its fused flash-attention kernel (blocked over queries and keys with an online softmax; no
T x T matrix), forward and backward. ``chunk_size`` does not change the result; the kernel picks its own blocks.
fp16/bf16 inputs are computed in fp32 (the backend's precision policy) and rounded once at the end.
"""

from __future__ import annotations

from torch import Tensor
from torch.nn import functional

from impl.torch_ops._common import compute_dtype, from_bhtd, to_bhtd, varlen_map

__all__ = ["softmax_attn"]


def softmax_attn(q: Tensor, k: Tensor, v: Tensor, *, scale: float, chunk_size: int | None,
                 cu_seqlens: Tensor | None) -> Tensor:
    """Torch backend of ``impl.softmax_attn``: o_t = sum_{j<=t} softmax_j(scale q_t . k_j) v_j, [B, T, H, V]."""
    del chunk_size
    dtype = compute_dtype(v.dtype)

    def run(q_: Tensor, k_: Tensor, v_: Tensor) -> Tensor:
        o = functional.scaled_dot_product_attention(to_bhtd(q_, dtype), to_bhtd(k_, dtype), to_bhtd(v_, dtype),
                                           is_causal=True, scale=scale)
        return from_bhtd(o, v.dtype)

    return varlen_map(run, cu_seqlens, q, k, v)
