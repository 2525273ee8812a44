"""One pair block of an attention-like pass (rows of one shard, keys of another): forward statistics and backward.

Both DeltaFormer passes are attention-like: the write pass (queries w, keys k, values u, weights kappa_1) and the
read-out (queries q, keys k, values u, causal softmax). Across shards they are computed block by block and merged:

- softmax and exp write kernels and the read-out: a block gives (o, normaliser), its output normalised over the
  block's keys and the rows' softmax normaliser as a (shift, sum) pair (``impl._normaliser``: exact at any size of
  logits, where one log-sum-exp would round the sum away); blocks merge by the online-softmax rule
  (``RowStats``). The exp kernel's sum is o times the normaliser's total (``as_prefix``);
- linear and round write kernels: a block gives acc = sum_j kappa_1(w, k_j) u_j; blocks add.

The backward of a block takes the *whole row's* output and normaliser (softmax: P = exp(S - shift) / sum and the
normaliser term dO . out), so a block's gradient is exact however the row was split. These are impl's torch
building blocks: the fused CPU flash op (``_flash``, ``_flash_backward``) where the call allows it (``flash``: CPU,
K == V and scores bounded over the whole sequence, decided once per call on every rank, as impl's
``_flash_path``), else explicit score blocks of ``ROW_BLOCK`` rows with impl's kernel and score-gradient functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from impl import _normaliser
from impl._write_kernels import get as get_write_kernel
from impl.torch_ops._readout import positive_scale
from impl.torch_ops.deltaformer import _flash, _flash_applies, _flash_backward, _strict_mask

__all__ = ["ROW_BLOCK", "Blocks", "RowStats", "as_prefix", "block_backward", "block_forward", "normalised"]

ROW_BLOCK = 512
"""Rows per explicit score block (the explicit path holds [ROW_BLOCK, keys] scores at a time)."""


@dataclass(frozen=True)
class Blocks:
    """How one pass computes its pair blocks: the kernel (the write kernel, or softmax for the read-out), the score
    scale (any real number) and whether the fused CPU op may be used (``flash``: the same decision on every rank,
    from the scores' bound over the whole sequence, as impl's ``_flash_path``; its lse is then exact)."""

    kernel: str
    scale: float
    flash: bool


def normalised(kernel: str) -> bool:
    """Whether a kernel's blocks carry (o, normaliser) statistics (softmax, exp) rather than an additive sum."""
    return kernel in ("softmax", "exp")


def _mask(rows: slice, cols: int, causal: bool, device: torch.device) -> Tensor | None:
    """True where key j is excluded from row i of the block: j > i on a causal (diagonal) block; None otherwise."""
    return _strict_mask(rows.stop - rows.start, cols, rows.start + 1, device) if causal else None


def _row_blocks(n: int) -> list[slice]:
    return [slice(a, min(a + ROW_BLOCK, n)) for a in range(0, n, ROW_BLOCK)]


def block_forward(queries: Tensor, keys: Tensor, values: Tensor, how: Blocks, *,
                  causal: bool = False) -> tuple[Tensor, Tensor | None]:
    """(o, normaliser [B, H, n, 2]) for softmax/exp, (acc, None) for linear/round, of [B, H, n, *] rows over
    [B, H, m, *] keys. ``causal``: a diagonal block (key j <= row i), used by the read-out only."""
    kernel, scale = how.kernel, how.scale
    if normalised(kernel):
        q, s = positive_scale(queries, scale)
        if how.flash and _flash_applies(q, values, "softmax"):
            out, lse = _flash(q, keys, values, s, causal)
            return out, _normaliser.from_lse(lse)
    outs, norms = [], []
    for rows in _row_blocks(queries.shape[2]):
        scores = torch.matmul(queries[:, :, rows], keys.transpose(-1, -2)).mul_(scale)
        mask = _mask(rows, keys.shape[2], causal, queries.device)
        if normalised(kernel):
            P, norm = _normaliser.softmax(scores, mask)
            outs.append(torch.matmul(P, values))
            norms.append(norm)
        else:
            outs.append(torch.matmul(get_write_kernel(kernel).weights(scores, mask), values))
    out = torch.cat(outs, dim=2)
    return (out, torch.cat(norms, dim=2)) if norms else (out, None)


def block_backward(d_out: Tensor, queries: Tensor, keys: Tensor, values: Tensor, out: Tensor, norm: Tensor | None,
                   how: Blocks, *, causal: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """(dq, dk, dv) of one block given the rows' output gradient and their *whole-row* ``out`` and normaliser
    ``norm`` (used by softmax only).

    softmax: P = exp(S - shift) / sum, dS = P (dP - dO . out). exp (unnormalised): the same with out = 0 and
    normaliser (0, 1). linear: dS = dP; round: dS = 0. dq = scale dS k, dk = scale dS^T q, dv = P^T dO.
    """
    kernel, scale = how.kernel, how.scale
    if kernel == "exp":
        out, norm, kernel = torch.zeros_like(out), _normaliser.from_lse(torch.zeros_like(out[..., 0])), "softmax"
    if kernel == "softmax":
        assert norm is not None
        q, s = positive_scale(queries, scale)
        if how.flash and _flash_applies(q, values, kernel):
            dq, dk, dv = _flash_backward(d_out, q, keys, values, out, _normaliser.to_lse(norm), s, causal)
            return (dq if scale > 0 else -dq if scale < 0 else torch.zeros_like(dq)), dk, dv
    kappa = get_write_kernel(kernel)
    dq = torch.zeros_like(queries)
    dk = torch.zeros_like(keys)
    dv = torch.zeros_like(values)
    for rows in _row_blocks(queries.shape[2]):
        q_b, d_b = queries[:, :, rows], d_out[:, :, rows]
        mask = _mask(rows, keys.shape[2], causal, queries.device)
        scores = torch.matmul(q_b, keys.transpose(-1, -2)).mul_(scale)
        P = _normaliser.probs(scores, norm[:, :, rows], mask) if kernel == "softmax" and norm is not None else \
            kappa.weights(scores, mask)
        dv += torch.matmul(P.transpose(-1, -2), d_b)
        if kernel == "softmax":
            dP = torch.matmul(d_b, values.transpose(-1, -2))
            if mask is not None:  # dO_t . u_j for masked j may overflow; P is 0 there: never form 0 * inf
                dP.masked_fill_(mask, 0.0)
            dS = P.mul_(dP.sub_((d_b * out[:, :, rows]).sum(-1, keepdim=True)))
        elif kappa.score_grad is not None:
            dS = kappa.score_grad(P, torch.matmul(d_b, values.transpose(-1, -2)), mask)
        else:  # round: piecewise constant, no score gradient
            continue
        dS.mul_(scale)
        dq[:, :, rows] = torch.matmul(dS, keys)
        dk += torch.matmul(dS.transpose(-1, -2), q_b)
    return dq, dk, dv


class RowStats:
    """The running statistics of a shard's rows over the key blocks merged so far, in the order they are added."""

    def __init__(self, like: Tensor, kernel: str) -> None:
        """``like``: [B, H, n, V] (dtype, device and shape of the output)."""
        self.out = torch.zeros_like(like)
        self.norm = _normaliser.empty(like[..., 0]) if normalised(kernel) else None

    def add(self, rows: slice, out: Tensor, norm: Tensor | None) -> None:
        """Merge one block's statistics for ``rows`` (online-softmax merge, or a sum), in place; ``out`` is
        consumed."""
        if self.norm is None:
            self.out[:, :, rows] += out
            return
        assert norm is not None
        merged, old_share, new_share = _normaliser.merge(self.norm[:, :, rows], norm)
        self.out[:, :, rows].mul_(old_share[..., None]).add_(out.mul_(new_share[..., None]))
        self.norm[:, :, rows] = merged


def as_prefix(stats: RowStats, kernel: str) -> tuple[Tensor, Tensor | None]:
    """The earlier shards' contribution in the form impl's u-stage merges (``_merge_prefix``): softmax (o,
    normaliser), exp its sum o Z, linear and round their sum."""
    if kernel == "exp":
        assert stats.norm is not None
        return stats.out * _normaliser.total(stats.norm)[..., None], None
    return stats.out, stats.norm
