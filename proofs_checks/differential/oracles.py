"""Float64 NumPy oracles for the recurrent ops the spec does not define yet (single head, paper orientation).

Temporary: equations.md section 3 recurrences for linear attention and DeltaNet, token by token, until
``spec/updates.py`` lands on main; then ``bridge.py`` switches to the spec functions and this module is deleted.
Shapes: q, k [T, d_k], v [T, d_v], beta [T], S [d_v, d_k] (the paper's orientation: o_t = S_t q_t).
"""

from __future__ import annotations

import numpy as np

from spec._types import F64

__all__ = ["delta_rule_recurrence", "linear_attn_recurrence"]


def linear_attn_recurrence(q: F64, k: F64, v: F64, S0: F64, scale: float) -> tuple[F64, F64]:
    """equations.md section 3 [literature]: S_t = S_{t-1} + v_t k_t^T, o_t = S_t (scale q_t). -> (o [T, d_v], S_T)."""
    S = S0.copy()
    o = np.zeros((q.shape[0], v.shape[1]))
    for t in range(q.shape[0]):
        S = S + np.outer(v[t], k[t])
        o[t] = S @ (scale * q[t])
    return o, S


def delta_rule_recurrence(q: F64, k: F64, v: F64, beta: F64, S0: F64, scale: float) -> tuple[F64, F64]:
    """equations.md section 3 [literature]: S_t = S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T.

    o_t = S_t (scale q_t). -> (o [T, d_v], S_T [d_v, d_k]).
    """
    S = S0.copy()
    identity = np.eye(k.shape[1])
    o = np.zeros((q.shape[0], v.shape[1]))
    for t in range(q.shape[0]):
        S = S @ (identity - beta[t] * np.outer(k[t], k[t])) + beta[t] * np.outer(v[t], k[t])
        o[t] = S @ (scale * q[t])
    return o, S
