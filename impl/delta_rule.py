"""The delta rule (DeltaNet) public op: validate, resolve defaults, dispatch to a backend (``impl/README.md``)."""

from __future__ import annotations

import math
from typing import NamedTuple

from torch import Tensor

from impl import _validate
from impl._backend import backend_module, resolve_backend

__all__ = ["RecurrentOutput", "delta_rule"]


class RecurrentOutput(NamedTuple):
    """(o [B, T, H, V], final_state [N, H, K, V] or None): the result of a stateful op, always this type."""

    o: Tensor
    final_state: Tensor | None


def check_recurrent(q: object, k: object, v: object, beta: object, scale: object, initial_state: object,
                    output_final_state: object, chunk_size: object,
                    cu_seqlens: object) -> tuple[Tensor, Tensor, Tensor, Tensor | None, float, Tensor | None, bool,
                                                 int | None, Tensor | None]:
    """Validation shared by the stateful ops (``beta`` may be None only for ops without one)."""
    qt, kt, vt, bt = _validate.check_qkv(q, k, v, beta)
    B, T, H, K = qt.shape
    V = vt.shape[-1]
    given = _validate.check_scale(scale)
    flag = _validate.check_flag("output_final_state", output_final_state)
    chunk = _validate.check_chunk_size(chunk_size)
    cu = _validate.check_cu_seqlens(cu_seqlens, batch=B, total=T, device=qt.device)
    N = B if cu is None else cu.shape[0] - 1
    state = _validate.check_state("initial_state", initial_state, shape=(N, H, K, V), dtype=qt.dtype,
                                  device=qt.device)
    return qt, kt, vt, bt, (1.0 / math.sqrt(K) if given is None else given), state, flag, chunk, cu


def delta_rule(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, *, scale: float | None = None,
               initial_state: Tensor | None = None, output_final_state: bool = False, chunk_size: int | None = None,
               cu_seqlens: Tensor | None = None, backend: str = "auto") -> RecurrentOutput:
    """DeltaNet: q, k [B, T, H, K], v [B, T, H, V], beta [B, T, H] -> (o [B, T, H, V], final_state [N, H, K, V]).

    Implements the DeltaNet row of equations.md section 3 (S_t = S_{t-1}(I - beta_t k_t k_t^T) + beta_t v_t k_t^T,
    o_t = S_t (scale q_t)) by the chunked WY / UT form. The state is stored as S^T ([K, V]), so o = state^T q.
    ``beta`` is used as given (no sigmoid). ``scale`` None: 1/sqrt(K). ``initial_state`` [N, H, K, V], N = B or the
    number of packed sequences. Error contract: proofs_checks/differential/tolerances.py::delta_rule_budget.
    """
    qt, kt, vt, bt, resolved, state, flag, chunk, cu = check_recurrent(
        q, k, v, beta, scale, initial_state, output_final_state, chunk_size, cu_seqlens)
    if bt is None:
        raise TypeError("beta must be a torch.Tensor [B, T, H], got NoneType")
    module = backend_module(resolve_backend(backend, qt.device, qt.dtype), "delta_rule")
    o, final = module.delta_rule(qt, kt, vt, bt, scale=resolved, initial_state=state, output_final_state=flag,
                                 chunk_size=chunk, cu_seqlens=cu)
    return RecurrentOutput(o, final)
