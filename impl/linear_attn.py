"""Linear attention public op: validate, resolve defaults, dispatch to a backend (``impl/README.md``)."""

from __future__ import annotations

from torch import Tensor

from impl._backend import backend_module, resolve_backend
from impl.delta_rule import RecurrentOutput, check_recurrent

__all__ = ["linear_attn"]


def linear_attn(q: Tensor, k: Tensor, v: Tensor, *, scale: float | None = None,
                initial_state: Tensor | None = None, output_final_state: bool = False, chunk_size: int | None = None,
                cu_seqlens: Tensor | None = None, backend: str = "auto") -> RecurrentOutput:
    """Linear attention: q, k [B, T, H, K], v [B, T, H, V] -> (o [B, T, H, V], final_state [N, H, K, V] or None).

    Implements the linear-attention row of equations.md section 3 (S_t = S_{t-1} + v_t k_t^T, o_t = S_t (scale
    q_t)) by the chunked form; state stored as S^T ([K, V]). ``scale`` None: 1/sqrt(K).
    Error contract: proofs_checks/differential/tolerances.py::linear_attn_budget.
    """
    qt, kt, vt, _, resolved, state, flag, chunk, cu = check_recurrent(
        q, k, v, None, scale, initial_state, output_final_state, chunk_size, cu_seqlens)
    module = backend_module(resolve_backend(backend, qt.device, qt.dtype), "linear_attn")
    o, final = module.linear_attn(qt, kt, vt, scale=resolved, initial_state=state, output_final_state=flag,
                                  chunk_size=chunk, cu_seqlens=cu)
    return RecurrentOutput(o, final)
