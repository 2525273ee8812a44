"""Causal read-out over values that overflowed: keep the rows before the overflow exact (impl-private, both backends).

DeltaFormer's written values u can overflow at a late row even though every input is finite (u_t grows with
beta and the write scores). A blocked causal read-out multiplies the masked (zero) weights of later keys by their
values, so an infinite u_j at a late row turns 0 * inf into NaN in every earlier row of its block. The cure
(``split_nonfinite``): run the read-out on u with its non-finite entries replaced by 0 (exact for every row before
them, whose weights on those keys are exactly 0) and add, per column, the running sum of the non-finite entries:
row t then carries inf, -inf or NaN from the first row j <= t where u_j is not finite, as the exact sum would.
Only when u is not all finite; otherwise the read-out runs unchanged.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from impl._validate import all_finite

__all__ = ["split_nonfinite"]


def _running_sum(x: Tensor, dim: int, cu_seqlens: Tensor | None) -> Tensor:
    """Cumulative sum along ``dim``, restarted at every packed sequence start (``cu_seqlens``, along ``dim``)."""
    if cu_seqlens is None:
        return x.cumsum(dim)
    bounds = [int(c) for c in cu_seqlens.tolist()]
    return torch.cat([x.narrow(dim, s, e - s).cumsum(dim) for s, e in itertools.pairwise(bounds)], dim=dim)


def split_nonfinite(u: Tensor, *, dim: int, cu_seqlens: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """(values for the read-out, correction to add to its output) for u with sequence axis ``dim``:
    (u, None) when u is all finite; otherwise (u with its non-finite entries replaced by 0, the running sum along
    ``dim`` of the non-finite entries, restarted at each packed sequence of ``cu_seqlens``)."""
    if all_finite(u):
        return u, None
    finite = torch.isfinite(u)
    zeros = torch.zeros_like(u)
    return torch.where(finite, u, zeros), _running_sum(torch.where(finite, zeros, u), dim, cu_seqlens)
