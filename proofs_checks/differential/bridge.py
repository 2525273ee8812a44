"""The one bridge between the spec (one head, paper layout) and the impl layout ([B, T, H, D], state [N, H, K, V]).

Every spec call over batched tensors goes through here; this is the only place the layout is transposed. Each
function takes float64 NumPy arrays in the impl layout and returns float64 arrays in the impl layout.
Packed sequences (``cu_seqlens``, B = 1) are split and each sequence runs the spec on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from spec import deltaformer as spec_df
from spec import updates as spec_updates
from spec._types import F64

__all__ = ["SPEC_OPS", "run_spec", "sequence_ranges"]


def sequence_ranges(T: int, B: int, cu_seqlens: Sequence[int] | None) -> list[tuple[int, int, int, int]]:
    """(state row n, batch b, start, end) for each sequence."""
    if cu_seqlens is None:
        return [(b, b, 0, T) for b in range(B)]
    return [(n, 0, cu_seqlens[n], cu_seqlens[n + 1]) for n in range(len(cu_seqlens) - 1)]


def _stateless(per_head: Callable[..., F64], names: tuple[str, ...]) -> Callable[..., dict[str, F64]]:
    def run(arrays: dict[str, F64], cu_seqlens: Sequence[int] | None, **options: object) -> dict[str, F64]:
        first = arrays[names[0]]
        B, T, H = first.shape[:3]
        V = arrays["v"].shape[-1]
        out = np.zeros((B, T, H, V))
        for _, b, start, end in sequence_ranges(T, B, cu_seqlens):
            for h in range(H):
                head = [arrays[name][b, start:end, h] for name in names]
                out[b, start:end, h] = per_head(*head, **options)
        return {"o": out}

    return run


def _deltaformer_u(w: F64, k: F64, v: F64, beta: F64, *, kernel: str, scale: float | None) -> F64:
    return spec_df.deltaformer_u(w, k, v, beta, kernel=kernel, scale=scale)


def _deltaformer_attn(q: F64, k: F64, v: F64, beta: F64, *, write: str, kernel: str, scale: float | None) -> F64:
    return spec_df.deltaformer_attn(q, k, v, beta, write=write, kernel=kernel, scale=scale)


def _softmax_attn(q: F64, k: F64, v: F64, *, scale: float | None) -> F64:
    resolved = 1.0 / np.sqrt(q.shape[1]) if scale is None else scale
    return spec_df.causal_softmax_readout(q, k, v, resolved)


def _stateful(op: str) -> Callable[..., dict[str, F64]]:
    def run(arrays: dict[str, F64], cu_seqlens: Sequence[int] | None, *, scale: float | None) -> dict[str, F64]:
        q, k, v = arrays["q"], arrays["k"], arrays["v"]
        B, T, H, K = q.shape
        V = v.shape[-1]
        resolved = 1.0 / np.sqrt(K) if scale is None else scale
        ranges = sequence_ranges(T, B, cu_seqlens)
        out = np.zeros((B, T, H, V))
        state = np.zeros((len(ranges), H, K, V))
        initial = arrays.get("initial_state")
        for n, b, start, end in ranges:
            for h in range(H):
                # impl state [K, V] is the transpose of the paper's S [d_v, d_k]
                S0 = np.zeros((V, K)) if initial is None else initial[n, h].T
                rows = slice(start, end)
                # the spec reads o_t = S_t q_t; the impl's scale multiplies q
                if op == "delta_rule":
                    o, S = spec_updates.deltanet_recurrent(resolved * q[b, rows, h], k[b, rows, h], v[b, rows, h],
                                                           arrays["beta"][b, rows, h], S0)
                else:
                    o, S = spec_updates.linear_attention_recurrent(resolved * q[b, rows, h], k[b, rows, h],
                                                                   v[b, rows, h], S0)
                out[b, rows, h] = o
                state[n, h] = S.T
        return {"o": out, "final_state": state}

    return run


SPEC_OPS: dict[str, Callable[..., dict[str, F64]]] = {
    "deltaformer_u": _stateless(_deltaformer_u, ("w", "k", "v", "beta")),
    "deltaformer_attn": _stateless(_deltaformer_attn, ("q", "k", "v", "beta")),
    "softmax_attn": _stateless(_softmax_attn, ("q", "k", "v")),
    "delta_rule": _stateful("delta_rule"),
    "linear_attn": _stateful("linear_attn"),
}
"""op name -> f(arrays, cu_seqlens, **options) -> {"o": ..., ["final_state": ...]} by the float64 spec."""


def run_spec(op: str, arrays: dict[str, F64], cu_seqlens: Sequence[int] | None, **options: object) -> dict[str, F64]:
    """The float64 spec's outputs for ``op`` on impl-layout arrays."""
    return SPEC_OPS[op](arrays, cu_seqlens, **options)
