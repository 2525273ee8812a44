"""Causal softmax attention on the torch backend: ``_readout.causal_softmax_attention`` per packed sequence.

On CPU, PyTorch's fused flash-attention kernel (blocked over queries and keys with an online softmax; no T x T
matrix), forward and backward, for any real scale and differentiable twice; elsewhere
``functional.scaled_dot_product_attention(is_causal=True)``. ``chunk_size`` does not change the result; the kernel
picks its own blocks. fp16/bf16 inputs are computed in fp32 (the backend's precision policy) and rounded once at the
end.
"""

from __future__ import annotations

from torch import Tensor

from impl.torch_ops._common import compute_dtype, from_bhtd, to_bhtd, varlen_map
from impl.torch_ops._readout import causal_softmax_attention

__all__ = ["softmax_attn"]


def softmax_attn(q: Tensor, k: Tensor, v: Tensor, *, scale: float, chunk_size: int | None,
                 cu_seqlens: Tensor | None) -> Tensor:
    """Torch backend of ``impl.softmax_attn``: o_t = sum_{j<=t} softmax_j(scale q_t . k_j) v_j, [B, T, H, V]."""
    del chunk_size
    dtype = compute_dtype(v.dtype)

    def run(q_: Tensor, k_: Tensor, v_: Tensor) -> Tensor:
        o = causal_softmax_attention(to_bhtd(q_, dtype), to_bhtd(k_, dtype), to_bhtd(v_, dtype), scale)
        return from_bhtd(o, v.dtype)

    return varlen_map(run, cu_seqlens, q, k, v)
