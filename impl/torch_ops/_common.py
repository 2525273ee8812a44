"""Layout and precision helpers shared by the torch backend's ops (not by triton_ops).

Precision policy: compute in ``promote_types(dtype, float32)`` (fp16/bf16 compute in fp32, fp32 in fp32, fp64 in
fp64) and round the result to the input dtype once, at the end. Layout: the public ``[B, T, H, D]`` is turned into
the ``[B, H, T, D]`` the matmuls batch over.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["compute_dtype", "from_bhtd", "run_stateful", "segments", "to_bhtd", "varlen_map"]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for fp16/bf16/fp32, fp64 for fp64."""
    return torch.promote_types(dtype, torch.float32)


def to_bhtd(x: Tensor, dtype: torch.dtype) -> Tensor:
    """[B, T, H, D] -> contiguous [B, H, T, D] in ``dtype``; [B, T, H] -> [B, H, T]."""
    return x.to(dtype).transpose(1, 2).contiguous()


def from_bhtd(x: Tensor, dtype: torch.dtype) -> Tensor:
    """[B, H, T, D] -> contiguous [B, T, H, D] in ``dtype``."""
    return x.transpose(1, 2).to(dtype).contiguous()


def segments(cu_seqlens: Tensor | None, total: int) -> list[tuple[int, int]]:
    """The [start, end) ranges of the packed sequences; one range [0, T) without ``cu_seqlens``."""
    if cu_seqlens is None:
        return [(0, total)]
    bounds = [int(c) for c in cu_seqlens.tolist()]
    return list(itertools.pairwise(bounds))


def varlen_map(fn: Callable[..., Tensor], cu_seqlens: Tensor | None, *tensors: Tensor) -> Tensor:
    """Apply ``fn`` to each packed sequence's slice along T (dim 1) and concatenate; ``fn`` itself when unpacked."""
    if cu_seqlens is None:
        return fn(*tensors)
    total = tensors[0].shape[1]
    parts = [fn(*(t[:, start:end] for t in tensors)) for start, end in segments(cu_seqlens, total)]
    return torch.cat(parts, dim=1)


def run_stateful(chunked: Callable[..., tuple[Tensor, Tensor]], q: Tensor, k: Tensor, v: Tensor,
                 extras: tuple[Tensor, ...], *, scale: float, initial_state: Tensor | None, output_final_state: bool,
                 chunk_size: int, cu_seqlens: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """The driver shared by the stateful ops (linear attention, delta rule).

    For each packed sequence: move q (times ``scale``), k, v and ``extras`` (e.g. beta) to [B, H, T, *] in the
    compute dtype, call ``chunked(q, k, v, *extras, state, chunk_size) -> (o, state)`` with the sequence's initial
    state (zeros when none is given), and reassemble o [B, T, H, V] and the final state [N, H, K, V] (or None).
    """
    dtype = compute_dtype(v.dtype)
    B, T, H, K = q.shape
    V = v.shape[-1]
    outputs, states = [], []
    for n, (start, end) in enumerate(segments(cu_seqlens, T)):
        rows = slice(n, n + 1) if cu_seqlens is not None else slice(None)
        batch = 1 if cu_seqlens is not None else B
        state = (torch.zeros(batch, H, K, V, dtype=dtype, device=q.device) if initial_state is None
                 else initial_state[rows].to(dtype))
        rest = [to_bhtd(t[:, start:end], dtype) for t in (k, v, *extras)]
        o, state = chunked(to_bhtd(q[:, start:end], dtype) * scale, *rest, state, chunk_size)
        outputs.append(from_bhtd(o, v.dtype))
        states.append(state)
    final = torch.cat(states, dim=0).to(v.dtype) if output_final_state else None
    return torch.cat(outputs, dim=1), final
