"""Softmax row normalisers kept as (shift, sum) pairs, exact at any size of logits (impl-private).

A row's normaliser Z = sum_j exp(s_j) over its admissible scores is carried as a pair (m, l) with Z = l exp(m):
m a shift (the row's max score, or a log-sum-exp the fused CPU op returned) and l = sum_j exp(s_j - m) (>= 1 when
m is the max). One log-sum-exp m + log(l) would carry the same information only while |m| u << 1 (u the unit
roundoff): at huge logits (|m| near 1 / u, e.g. scale 1e39) m + log(l) rounds to m, and weights exp(s - lse)
sum to l instead of 1. With the pair, merging two partial rows and recovering a row's weights only subtract shifts
from scores or from each other, and divide by sums.

A normaliser is one tensor [..., n, 2] holding (shift, sum) per row, so that it slices, saves and travels in a
message like any row statistic. An empty row (no admissible key) is (-inf, 0).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["LSE_ROUNDING", "empty", "from_lse", "from_scores", "lse_is_exact", "max_row_norm", "merge", "probs",
           "softmax", "to_lse", "total"]

LSE_ROUNDING = 2.0**-11
"""The largest rounding error (score bound times unit roundoff) a log-sum-exp may carry where impl uses one (the
fused CPU op's; fp16's unit roundoff: far below any change a user would see, far above the scores of ordinary
inputs); see ``lse_is_exact``."""


def max_row_norm(x: Tensor) -> float:
    """max_t |x_t| (Euclidean norm over the last axis); 0 for no rows."""
    return float(torch.linalg.vector_norm(x, dim=-1).amax()) if x.numel() else 0.0


def lse_is_exact(scale: float, w_norm: float, k_norm: float, dtype: torch.dtype) -> bool:
    """Whether a log-sum-exp (shift + log(sum) in one number) keeps the normaliser, for scores
    |scale w . k| <= |scale| w_norm k_norm = B (Cauchy-Schwarz; w_norm, k_norm the largest row norms) computed in
    ``dtype``: its absolute rounding error is about B u (u the unit roundoff), allowed up to ``LSE_ROUNDING``.
    Beyond (huge logits, e.g. scale 1e39) the fused CPU op's lse is not used: (shift, sum) pairs instead."""
    return abs(scale) * w_norm * k_norm * torch.finfo(dtype).eps / 2 <= LSE_ROUNDING


def _finite_or_zero(shift: Tensor) -> Tensor:
    """The shift to subtract: 0 where it is -inf (an empty row), so that no -inf - (-inf) appears."""
    return torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))


def empty(like: Tensor) -> Tensor:
    """(-inf, 0) for every row of ``like`` [..., n]."""
    return torch.stack((torch.full_like(like, -math.inf), torch.zeros_like(like)), dim=-1)


def softmax(scores: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """(weights, normaliser) of the row softmax over the admissible scores of [..., n, keys] (``mask`` True where a
    key is not admissible): weights exp(s - m) / l, exactly 0 where masked, with m the row max and l the sum of
    exp(s - m), normalised by dividing by that sum (never by subtracting a log-sum-exp); a row with no admissible key
    has weights 0 and normaliser (-inf, 0). Out of place (autograd differentiates through it)."""
    masked = scores if mask is None else scores.masked_fill(mask, -math.inf)
    shift = masked.amax(-1)
    e = torch.exp(masked - _finite_or_zero(shift)[..., None])
    row_sum = e.sum(-1)
    weights = e / torch.where(row_sum > 0, row_sum, torch.ones_like(row_sum))[..., None]
    return weights, torch.stack((shift, row_sum), dim=-1)


def from_scores(scores: Tensor, mask: Tensor | None) -> Tensor:
    """The normaliser (row max, sum of exp(score - max)) of ``softmax``'s rows."""
    return softmax(scores, mask)[1]


def from_lse(lse: Tensor) -> Tensor:
    """(lse, 1): a log-sum-exp taken as the shift. As exact as the lse itself (the fused op's: while the scores are
    bounded, ``lse_is_exact``)."""
    return torch.stack((lse, torch.ones_like(lse)), dim=-1)


def to_lse(norm: Tensor) -> Tensor:
    """shift + log(sum): the fused op's row statistic; exact only while the scores are bounded (as ``from_lse``)."""
    return norm[..., 0] + torch.log(norm[..., 1])


def total(norm: Tensor) -> Tensor:
    """Z = sum exp(scores) itself (the exp kernel's unnormalised sum; inf where it overflows)."""
    return norm[..., 1] * torch.exp(norm[..., 0])


def merge(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(the normaliser of the two parts' keys together, weight of a, weight of b): the softmax output over both is
    weight_a o_a + weight_b o_b for o_a, o_b normalised over each part's keys (weights 0 for an empty part)."""
    shift = torch.maximum(a[..., 0], b[..., 0])
    base = _finite_or_zero(shift)
    part_a = a[..., 1] * torch.exp(a[..., 0] - base)
    part_b = b[..., 1] * torch.exp(b[..., 0] - base)
    both = part_a + part_b
    inverse = torch.where(both > 0, both.reciprocal(), torch.zeros_like(both))
    return torch.stack((shift, both), dim=-1), part_a * inverse, part_b * inverse


def probs(scores: Tensor, norm: Tensor, mask: Tensor | None) -> Tensor:
    """The softmax weights exp(score - shift) / sum of [..., n, keys] scores under a row's normaliser (which may
    cover more keys than these), exactly 0 where ``mask`` is True."""
    P = torch.exp(scores - norm[..., 0, None]).div_(norm[..., 1, None])
    return P if mask is None else P.masked_fill_(mask, 0.0)
