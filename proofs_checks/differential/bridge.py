"""The one bridge between the spec (one head, paper layout) and the impl layout ([B, T, H, D], state [N, H, K, V]).

Every spec call over batched tensors goes through here: ``run_spec`` splits the float64 impl-layout arrays into
(sequence, head) pieces, runs the op's per-head spec function (``ops``) on each and reassembles the impl layout.
Packed sequences (``cu_seqlens``, B = 1) are split and each sequence runs the spec on its own.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np

from proofs_checks.differential.ops import record
from spec._types import F64

__all__ = ["Head", "heads", "run_spec", "sequence_ranges"]


def sequence_ranges(T: int, B: int, cu_seqlens: Sequence[int] | None) -> list[tuple[int, int, int, int]]:
    """(state row n, batch b, start, end) for each sequence."""
    if cu_seqlens is None:
        return [(b, b, 0, T) for b in range(B)]
    return [(n, 0, cu_seqlens[n], cu_seqlens[n + 1]) for n in range(len(cu_seqlens) - 1)]


class Head(NamedTuple):
    """One head of one sequence: where it sits in the impl layout and its inputs ([T, D] views, beta [T])."""

    n: int
    b: int
    rows: slice
    h: int
    inputs: dict[str, F64]
    state: F64 | None
    """initial_state[n, h] ([K, V]) when the arrays hold one."""


def heads(arrays: dict[str, F64], names: Sequence[str], cu_seqlens: Sequence[int] | None) -> Iterator[Head]:
    """Every (sequence, head) piece of the impl-layout ``arrays`` restricted to ``names`` (views, not copies)."""
    B, T, H = arrays[names[0]].shape[:3]
    initial = arrays.get("initial_state")
    for n, b, start, end in sequence_ranges(T, B, cu_seqlens):
        rows = slice(start, end)
        for h in range(H):
            yield Head(n, b, rows, h, {name: arrays[name][b, rows, h] for name in names},
                       None if initial is None else initial[n, h])


def run_spec(op: str, arrays: dict[str, F64], cu_seqlens: Sequence[int] | None, **options: object) -> dict[str, F64]:
    """The float64 spec's outputs for ``op`` on impl-layout arrays: {"o": [B, T, H, V]} and, for stateful ops,
    "final_state" [N, H, K, V]."""
    op_record = record(op)
    B, T, H, K = arrays[op_record.inputs[0]].shape
    V = arrays["v"].shape[-1]
    out = np.zeros((B, T, H, V))
    N = B if cu_seqlens is None else len(cu_seqlens) - 1
    final = np.zeros((N, H, K, V))
    for head in heads(arrays, op_record.inputs, cu_seqlens):
        o, state = op_record.spec(head.inputs, head.state, **options)
        out[head.b, head.rows, head.h] = o
        if state is not None:
            final[head.n, head.h] = state
    return {"o": out, "final_state": final} if op_record.stateful else {"o": out}
