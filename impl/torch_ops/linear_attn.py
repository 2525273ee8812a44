"""Linear attention on the torch backend: the chunked form, autograd through the chunk loop (T / C steps).

Paper orientation S [V, K]: S_t = S_{t-1} + v_t k_t^T, o_t = S_t (scale q_t). Stored as state = S^T [K, V].
Per chunk c with state S0 at its start: O_c = Q_c S0 + tril(Q_c K_c^T) V_c, S_end = S0 + K_c^T V_c.
"""

from __future__ import annotations

import torch
from torch import Tensor

from impl.torch_ops._common import run_stateful

__all__ = ["linear_attn"]


def _linear_attn_bhtd(q: Tensor, k: Tensor, v: Tensor, state: Tensor, chunk_size: int) -> tuple[Tensor, Tensor]:
    """q, k [B, H, T, K] (q already scaled), v [B, H, T, V], state [B, H, K, V]."""
    T = q.shape[2]
    outputs = []
    for s in range(0, T, chunk_size):
        e = min(s + chunk_size, T)
        q_c, k_c, v_c = q[:, :, s:e], k[:, :, s:e], v[:, :, s:e]
        outputs.append(torch.matmul(q_c, state) + torch.matmul(torch.matmul(q_c, k_c.transpose(-1, -2)).tril(), v_c))
        state = state + torch.matmul(k_c.transpose(-1, -2), v_c)
    return torch.cat(outputs, dim=2), state


def linear_attn(q: Tensor, k: Tensor, v: Tensor, *, scale: float, initial_state: Tensor | None,
                output_final_state: bool, chunk_size: int | None,
                cu_seqlens: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Torch backend of ``impl.linear_attn``: q, k [B, T, H, K], v [B, T, H, V] -> (o [B, T, H, V], state)."""
    return run_stateful(_linear_attn_bhtd, q, k, v, (), scale=scale, initial_state=initial_state,
                        output_final_state=output_final_state, chunk_size=chunk_size, cu_seqlens=cu_seqlens)
