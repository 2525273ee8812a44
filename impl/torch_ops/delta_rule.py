"""DeltaNet on the torch backend: the chunked WY / UT form, autograd through the chunk loop (T / C steps).

Paper orientation S [V, K]: S_t = S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T, o_t = S_t (scale q_t).
Stored as state = S^T [K, V]. Per chunk c with state S0 at its start (derivation in impl/README.md):
    (I + diag(beta_c) tril(K_c K_c^T, -1)) U_c = diag(beta_c) (V_c - K_c S0)     unit lower-triangular solve
    O_c = Q_c S0 + tril(Q_c K_c^T) U_c,     S_end = S0 + K_c^T U_c.
"""

from __future__ import annotations

import torch
from torch import Tensor

from impl.torch_ops._common import run_stateful

__all__ = ["delta_rule"]


def _delta_rule_bhtd(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, state: Tensor,
                     chunk_size: int) -> tuple[Tensor, Tensor]:
    """q, k [B, H, T, K] (q already scaled), v [B, H, T, V], beta [B, H, T], state [B, H, K, V]."""
    T = q.shape[2]
    outputs = []
    for s in range(0, T, chunk_size):
        e = min(s + chunk_size, T)
        q_c, k_c, v_c, beta_c = q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], beta[:, :, s:e, None]
        A = (beta_c * torch.matmul(k_c, k_c.transpose(-1, -2))).tril(-1)
        U = torch.linalg.solve_triangular(A, beta_c * (v_c - torch.matmul(k_c, state)), upper=False,
                                          unitriangular=True)
        outputs.append(torch.matmul(q_c, state) + torch.matmul(torch.matmul(q_c, k_c.transpose(-1, -2)).tril(), U))
        state = state + torch.matmul(k_c.transpose(-1, -2), U)
    return torch.cat(outputs, dim=2), state


def delta_rule(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, *, scale: float, initial_state: Tensor | None,
               output_final_state: bool, chunk_size: int | None,
               cu_seqlens: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Torch backend of ``impl.delta_rule``: q, k [B, T, H, K], v [B, T, H, V], beta [B, T, H] -> (o, state)."""
    return run_stateful(_delta_rule_bhtd, q, k, v, (beta,), scale=scale, initial_state=initial_state,
                        output_final_state=output_final_state, chunk_size=chunk_size, cu_seqlens=cu_seqlens)
