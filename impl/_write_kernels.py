"""The write-kernel vocabulary of impl (private): each name kappa_1 can take, its default scale and its torch form.

The one owner of this vocabulary: the public ops and the layer validate ``kernel`` / ``write`` against ``NAMES`` /
``WRITES`` and resolve scales with ``resolve_scales`` before dispatch; the torch backend computes kappa_1 and its
score gradient with ``WriteKernel.weights`` / ``WriteKernel.score_grad`` (matmul prefix path and decode step); the
Triton host compiles one variant per name. The Triton device code computes kappa_1 itself (``_kappa`` in
``impl/triton_ops/deltaformer_kernels.py``). Adding a write kernel: CONTRIBUTING.md, "Add a write kernel".

kappa_1(w_t, k_j) for j < t, scores s_tj = scale w_t . k_j (spec.deltaformer.write_scores, DF.1):
softmax  exp(s_tj) / sum_{i<t} exp(s_ti) (normalised over the strictly earlier keys)
exp      exp(s_tj)
linear   s_tj
round    rint(s_tj) (half to even, as numpy.rint; zero derivative almost everywhere)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["KERNELS", "NAMES", "WRITES", "WriteKernel", "default_scale", "get", "resolve_scales"]

WRITES: tuple[str, ...] = ("k", "q")
"""Write vectors: w = k (the paper's k-k similarity) or w = q (the public DeltaFormer code)."""


def _masked(x: Tensor, mask: Tensor | None) -> Tensor:
    """x with the masked entries set to exactly 0 (out of place, so autograd can differentiate through it)."""
    return x if mask is None else x.masked_fill(mask, 0.0)


def _softmax(scores: Tensor, mask: Tensor | None) -> Tensor:
    """exp(s - m) / sum(exp(s - m)) over the unmasked entries of each row, m their max; a row with none is all 0.

    Normalised by dividing by the row sum, never by subtracting a log-sum-exp: at huge logits (|m| beyond
    1 / unit roundoff) m + log(sum) rounds to m and exp(s - lse) would lose the normalisation.
    """
    masked = scores if mask is None else scores.masked_fill(mask, -math.inf)
    shift = masked.amax(-1, keepdim=True)
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    e = _masked(torch.exp(scores - shift), mask)
    total = e.sum(-1, keepdim=True)
    return e / torch.where(total > 0, total, torch.ones_like(total))


def _softmax_grad(P: Tensor, dP: Tensor, mask: Tensor | None) -> Tensor:
    dP = _masked(dP, mask)  # masked dP entries may be +-inf (dO_t . u_j for j >= t overflows): never form 0 * inf
    return P * (dP - (P * dP).sum(-1, keepdim=True))


def _exp_grad(P: Tensor, dP: Tensor, mask: Tensor | None) -> Tensor:
    return P * _masked(dP, mask)  # as in _softmax_grad: P = 0 there, but dP may be infinite


def _linear_grad(P: Tensor, dP: Tensor, mask: Tensor | None) -> Tensor:
    return _masked(dP, mask)


@dataclass(frozen=True)
class WriteKernel:
    """One write kernel kappa_1: its default scale and its torch form on a block of scores.

    ``weights(scores, mask)``: kappa_1 on a [.., rows, keys] block, with ``mask`` True where key j is not
    admissible (j >= t); masked entries are exactly 0. ``score_grad(P, dP, mask)``: dL/dscores from
    P = weights(scores) and dL/dP; None when kappa_1's derivative is 0 almost everywhere (round).
    """

    name: str
    unit_scale: bool
    """Default scale 1 (True) or 1/sqrt(d_k) (False)."""
    weights: Callable[[Tensor, Tensor | None], Tensor]
    score_grad: Callable[[Tensor, Tensor, Tensor | None], Tensor] | None

    @property
    def has_score_grad(self) -> bool:
        """False when kappa_1's derivative is 0 almost everywhere (w and k then get no gradient from the write)."""
        return self.score_grad is not None


KERNELS: dict[str, WriteKernel] = {kernel.name: kernel for kernel in (
    WriteKernel("softmax", unit_scale=False, weights=_softmax, score_grad=_softmax_grad),
    WriteKernel("exp", unit_scale=False, weights=lambda s, mask: _masked(torch.exp(s), mask),
                score_grad=_exp_grad),
    WriteKernel("linear", unit_scale=True, weights=_masked, score_grad=_linear_grad),
    WriteKernel("round", unit_scale=True, weights=lambda s, mask: _masked(torch.round(s), mask), score_grad=None),
)}

NAMES: tuple[str, ...] = tuple(KERNELS)
"""The write-kernel names, in the order error messages list them."""


def get(name: str) -> WriteKernel:
    """The record of a (validated) write-kernel name."""
    return KERNELS[name]


def default_scale(kernel: str, d_k: int) -> float:
    """The spec's default write scale: 1/sqrt(d_k), or 1 for the kernels with ``unit_scale``."""
    return 1.0 if KERNELS[kernel].unit_scale else 1.0 / math.sqrt(d_k)


def resolve_scales(kernel: str, d_k: int, scale: float | None) -> tuple[float, float]:
    """(write scale, read-out scale): a given ``scale`` is used for both (as spec.deltaformer.deltaformer_attn);
    None means the write kernel's default and 1/sqrt(d_k) for the causal softmax read-out."""
    if scale is not None:
        return scale, scale
    return default_scale(kernel, d_k), 1.0 / math.sqrt(d_k)
