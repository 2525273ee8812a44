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

__all__ = ["compute_dtype", "from_bhtd", "segments", "to_bhtd", "varlen_map"]


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
