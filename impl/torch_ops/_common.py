"""Layout and precision helpers shared by the torch backend's ops (not by triton_ops).

Precision policy: compute in ``promote_types(dtype, float32)`` (fp16/bf16 compute in fp32, fp32 in fp32, fp64 in
fp64) and round the result to the input dtype once, at the end. Layout: the public ``[B, T, H, D]`` is turned into
the ``[B, H, T, D]`` the matmuls batch over.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import torch
from torch import Tensor

__all__ = ["CPU_HEAD_GROUPS", "STATEFUL_CHUNK_SIZE", "compute_dtype", "from_bhtd", "over_head_groups", "run_stateful",
           "segments", "to_bhtd", "varlen_map"]

CPU_HEAD_GROUPS = 2
"""How many groups of (batch, head) pairs ``over_head_groups`` runs concurrently on CPU (1 turns it off)."""

STATEFUL_CHUNK_SIZE = 64
"""The chunk the stateful ops (linear attention, the delta rule) use when ``chunk_size`` is None."""


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
                 chunk_size: int | None, cu_seqlens: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """The driver shared by the stateful ops (linear attention, delta rule).

    For each packed sequence: move q (times ``scale``), k, v and ``extras`` (e.g. beta) to [B, H, T, *] in the
    compute dtype, call ``chunked(q, k, v, *extras, state, chunk_size) -> (o, state)`` with the sequence's initial
    state (zeros when none is given), and reassemble o [B, T, H, V] and the final state [N, H, K, V] (or None).
    ``chunk_size`` None: STATEFUL_CHUNK_SIZE.
    """
    chunk = STATEFUL_CHUNK_SIZE if chunk_size is None else chunk_size
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
        o, state = chunked(to_bhtd(q[:, start:end], dtype) * scale, *rest, state, chunk)
        outputs.append(from_bhtd(o, v.dtype))
        states.append(state)
    final = torch.cat(states, dim=0).to(v.dtype) if output_final_state else None
    return torch.cat(outputs, dim=1), final


@cache
def _thread_pool(workers: int) -> ThreadPoolExecutor:
    """One long-lived pool per group count (its threads are reused across calls)."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="impl-head-group")


def over_head_groups(fn: Callable[..., tuple[Tensor | None, ...]],
                     *tensors: Tensor | None) -> tuple[Tensor | None, ...]:
    """``fn(*tensors)`` computed on CPU_HEAD_GROUPS groups of (batch, head) pairs in concurrent threads.

    tensors: [B, H, T, *] (None passes through); ``fn`` maps such tensors to a tuple of [B', H', T, *] tensors (or
    None) and must treat every (batch, head) pair independently, as the sequential chunk loops of the DeltaFormer
    backend do. The groups are [1, n, T, *] slices of the pairs flattened; the results are concatenated back.

    Why: a chunk loop is a sequence of small batched ops, each a parallel region with a fork/join barrier, plus
    Python between them; two loops on half the heads each keep both cores busy through those gaps (measured on the
    2-core development VM: the DeltaFormer u pass about 15% faster). Each group's ops still use torch's intra-op
    threads, so up to CPU_HEAD_GROUPS x torch.get_num_threads() threads run at once. Off CPU, with one pair, one
    intra-op thread or CPU_HEAD_GROUPS = 1, this is ``fn(*tensors)``. Workers run under ``torch.no_grad()``.
    """
    first = next(t for t in tensors if t is not None)
    B, H = first.shape[:2]
    groups = min(CPU_HEAD_GROUPS, B * H)
    if first.device.type != "cpu" or groups < 2 or torch.get_num_threads() < 2:
        return fn(*tensors)
    parts = [None if t is None else t.reshape(1, B * H, *t.shape[2:]).tensor_split(groups, dim=1) for t in tensors]

    def run(i: int) -> tuple[Tensor | None, ...]:
        with torch.no_grad():
            return fn(*(None if p is None else p[i] for p in parts))

    results = list(_thread_pool(groups).map(run, range(groups)))
    merged: list[Tensor | None] = []
    for pieces in zip(*results, strict=True):
        if pieces[0] is None:
            merged.append(None)
            continue
        whole = torch.cat([p for p in pieces if p is not None], dim=1)
        merged.append(whole.reshape(B, H, *whole.shape[2:]))
    return tuple(merged)
