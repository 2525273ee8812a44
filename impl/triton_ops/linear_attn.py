"""Triton backend of ``impl.linear_attn``: chunked linear attention (UPD.1a computed chunk by chunk).

State h = S^T [K, V]; per block with start state h: o = scale (Q h + tril(Q K^T) V), h <- h + K^T V. Kernels in
``chunk_kernels.py`` (``chunk_fwd_kernel_h`` / ``_o``, ``chunk_bwd_kernel_dh`` / ``_dqk`` with DELTA=False), host code
in ``_chunk.py``; forward and backward are Triton kernels.
"""

from __future__ import annotations

from torch import Tensor

from impl.triton_ops._chunk import chunk_op

__all__ = ["linear_attn"]


def linear_attn(q: Tensor, k: Tensor, v: Tensor, *, scale: float, initial_state: Tensor | None,
                output_final_state: bool, chunk_size: int | None,
                cu_seqlens: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """q, k [B, T, H, K], v [B, T, H, V] -> (o [B, T, H, V], final state [N, H, K, V] or None), input dtype."""
    return chunk_op(q, k, v, None, scale=scale, initial_state=initial_state, output_final_state=output_final_state,
                    chunk_size=chunk_size, cu_seqlens=cu_seqlens)
