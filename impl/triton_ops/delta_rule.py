"""Triton backend of ``impl.delta_rule``: DeltaNet by the chunked WY / UT form (UPD.3a computed as UPD.3c).

State h = S^T [K, V]; per block with start state h: A = (I + tril(diag(beta) K K^T, -1))^-1 diag(beta) (solved in
fp32 registers), W = A K, U = A V, v_new = U - W h, o = scale (Q h + tril(Q K^T) v_new), h <- h + K^T v_new.
Kernels in ``chunk_kernels.py`` (``delta_rule_fwd_kernel_wy``, then the shared ``chunk_*`` kernels with DELTA=True),
host code in ``_chunk.py``; forward and backward are Triton kernels.
"""

from __future__ import annotations

from torch import Tensor

from impl.triton_ops._chunk import chunk_op

__all__ = ["delta_rule"]


def delta_rule(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, *, scale: float, initial_state: Tensor | None,
               output_final_state: bool, chunk_size: int | None,
               cu_seqlens: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """q, k [B, T, H, K], v [B, T, H, V], beta [B, T, H] -> (o [B, T, H, V], final state [N, H, K, V] or None)."""
    return chunk_op(q, k, v, beta, scale=scale, initial_state=initial_state, output_final_state=output_final_state,
                    chunk_size=chunk_size, cu_seqlens=cu_seqlens)
