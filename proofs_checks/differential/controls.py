"""Straightforward torch recurrences (token by token, autograd through them): the gradient reference.

The spec is NumPy (no autograd), so the harness takes reference gradients from these float64 torch recurrences (each
op's ``control`` in ``ops``) and ties them to the spec on every drawn case: their outputs must match the spec, and
their directional derivatives must match central differences of the float64 spec (``compare``). They share no code
with ``impl``. Layout as impl: [B, T, H, D] in, [B, T, H, V] out, state [N, H, K, V] (the paper's S transposed).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from proofs_checks.differential.bridge import sequence_ranges
from proofs_checks.differential.ops import record

__all__ = ["run_control"]


def run_control(op: str, tensors: dict[str, Tensor], cu_seqlens: Sequence[int] | None,
                **options: object) -> dict[str, Tensor]:
    """The control's outputs for ``op`` ({"o": ..., ["final_state": ...]}) in the tensors' dtype, with autograd."""
    op_record = record(op)
    B, T = tensors[op_record.inputs[0]].shape[:2]
    initial = tensors.get("initial_state")
    per_batch: list[list[Tensor]] = [[] for _ in range(B)]
    states: list[Tensor] = []
    for n, b, start, end in sequence_ranges(T, B, cu_seqlens):
        part = {name: tensors[name][b, start:end] for name in op_record.inputs}
        o, state = op_record.control(part, None if initial is None else initial[n], **options)
        per_batch[b].append(o)
        if state is not None:
            states.append(state)
    result = {"o": torch.stack([torch.cat(parts, dim=0) for parts in per_batch])}
    if op_record.stateful:
        result["final_state"] = torch.stack(states)
    return result
