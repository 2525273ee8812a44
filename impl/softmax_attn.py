"""Causal softmax attention public op: validate, resolve defaults, dispatch to a backend (``impl/README.md``)."""

from __future__ import annotations

import math

from torch import Tensor

from impl import _validate
from impl._backend import backend_module, resolve_backend

__all__ = ["softmax_attn"]


def softmax_attn(q: Tensor, k: Tensor, v: Tensor, *, scale: float | None = None, chunk_size: int | None = None,
                 cu_seqlens: Tensor | None = None, backend: str = "auto") -> Tensor:
    """Causal softmax attention: q, k [B, T, H, K], v [B, T, H, V] -> o [B, T, H, V].

    Implements spec.deltaformer.causal_softmax_readout (DF.8, o_t = sum_{j<=t} softmax_j(scale q_t . k_j) v_j) per
    (batch, head), blocked (no T x T matrix). ``scale`` None: 1/sqrt(K).
    Error contract: proofs_checks/differential/tolerances.py::softmax_attn_budget.
    """
    qt, kt, vt, _ = _validate.check_qkv(q, k, v)
    given = _validate.check_scale(scale)
    chunk = _validate.check_chunk_size(chunk_size)
    cu = _validate.check_cu_seqlens(cu_seqlens, batch=qt.shape[0], total=qt.shape[1], device=qt.device)
    module = backend_module(resolve_backend(backend, qt.device, qt.dtype), "softmax_attn")
    o: Tensor = module.softmax_attn(qt, kt, vt, scale=1.0 / math.sqrt(qt.shape[-1]) if given is None else given,
                                    chunk_size=chunk, cu_seqlens=cu)
    return o
