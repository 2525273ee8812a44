"""One pair block of an attention-like pass (rows of one shard, keys of another): forward statistics and backward.

Both DeltaFormer passes are attention-like: the write pass (queries w, keys k, values u, weights kappa_1) and the
read-out (queries q, keys k, values u, causal softmax). Across shards they are computed block by block and merged:

- softmax and exp write kernels and the read-out: a block gives (o, lse), its output normalised over the block's
  keys and the row log-sum-exp; blocks merge by the online-softmax rule (``RowStats``). The exp kernel's sum is
  o exp(lse) (``as_prefix``);
- linear and round write kernels: a block gives acc = sum_j kappa_1(w, k_j) u_j; blocks add.

The backward of a block takes the *whole row's* output and log-sum-exp (softmax: P = exp(S - lse) and the
normaliser term dO . out), so a block's gradient is exact however the row was split. These are impl's torch
building blocks: the fused CPU flash op (``_flash``, ``_flash_backward``) where it applies (CPU, K == V), else
explicit score blocks of ``ROW_BLOCK`` rows with impl's kernel and score-gradient functions.
"""

from __future__ import annotations

import torch
from torch import Tensor

from impl._write_kernels import get as get_write_kernel
from impl.torch_ops._readout import positive_scale
from impl.torch_ops.deltaformer import _flash, _flash_applies, _flash_backward, _strict_mask

__all__ = ["ROW_BLOCK", "RowStats", "as_prefix", "block_backward", "block_forward", "normalised"]

ROW_BLOCK = 512
"""Rows per explicit score block (the explicit path holds [ROW_BLOCK, keys] scores at a time)."""


def normalised(kernel: str) -> bool:
    """Whether a kernel's blocks carry (o, lse) statistics (softmax, exp) rather than an additive sum."""
    return kernel in ("softmax", "exp")


def _mask(rows: slice, cols: int, causal: bool, device: torch.device) -> Tensor | None:
    """True where key j is excluded from row i of the block: j > i on a causal (diagonal) block; None otherwise."""
    return _strict_mask(rows.stop - rows.start, cols, rows.start + 1, device) if causal else None


def _row_blocks(n: int) -> list[slice]:
    return [slice(a, min(a + ROW_BLOCK, n)) for a in range(0, n, ROW_BLOCK)]


def _probs(scores: Tensor, mask: Tensor | None, lse: Tensor) -> Tensor:
    """exp(scores - lse) per row, exactly 0 where masked."""
    P = torch.exp(scores - lse[..., None])
    return P if mask is None else P.masked_fill_(mask, 0.0)


def block_forward(queries: Tensor, keys: Tensor, values: Tensor, *, kernel: str, scale: float,
                  causal: bool) -> tuple[Tensor, Tensor | None]:
    """(o, lse) for softmax/exp, (acc, None) for linear/round, of [B, H, n, *] rows over [B, H, m, *] keys.

    ``causal``: a diagonal block (key j <= row i), used by the read-out only. Any real ``scale``.
    """
    if normalised(kernel):
        q, s = positive_scale(queries, scale)
        if _flash_applies(q, values, "softmax"):
            return _flash(q, keys, values, s, causal)
    outs, lses = [], []
    for rows in _row_blocks(queries.shape[2]):
        scores = torch.matmul(queries[:, :, rows], keys.transpose(-1, -2)).mul_(scale)
        mask = _mask(rows, keys.shape[2], causal, queries.device)
        if normalised(kernel):
            lse = torch.logsumexp(scores if mask is None else scores.masked_fill(mask, -torch.inf), dim=-1)
            outs.append(torch.matmul(_probs(scores, mask, lse), values))
            lses.append(lse)
        else:
            outs.append(torch.matmul(get_write_kernel(kernel).weights(scores, mask), values))
    out = torch.cat(outs, dim=2)
    return (out, torch.cat(lses, dim=2)) if lses else (out, None)


def block_backward(d_out: Tensor, queries: Tensor, keys: Tensor, values: Tensor, out: Tensor, lse: Tensor | None,
                   *, kernel: str, scale: float, causal: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(dq, dk, dv) of one block given the rows' output gradient and their *whole-row* ``out`` and ``lse`` (used by
    softmax only).

    softmax: P = exp(S - lse), dS = P (dP - dO . out). exp (unnormalised): the same with out = 0 and lse = 0.
    linear: dS = dP; round: dS = 0. dq = scale dS k, dk = scale dS^T q, dv = P^T dO.
    """
    if kernel == "exp":
        out, lse, kernel = torch.zeros_like(out), torch.zeros_like(out[..., 0]), "softmax"
    if kernel == "softmax":
        assert lse is not None
        q, s = positive_scale(queries, scale)
        if _flash_applies(q, values, kernel):
            dq, dk, dv = _flash_backward(d_out, q, keys, values, out, lse, s, causal)
            return (dq if scale > 0 else -dq if scale < 0 else torch.zeros_like(dq)), dk, dv
    kappa = get_write_kernel(kernel)
    dq = torch.zeros_like(queries)
    dk = torch.zeros_like(keys)
    dv = torch.zeros_like(values)
    for rows in _row_blocks(queries.shape[2]):
        q_b, d_b = queries[:, :, rows], d_out[:, :, rows]
        mask = _mask(rows, keys.shape[2], causal, queries.device)
        scores = torch.matmul(q_b, keys.transpose(-1, -2)).mul_(scale)
        P = _probs(scores, mask, lse[:, :, rows]) if kernel == "softmax" and lse is not None else \
            kappa.weights(scores, mask)
        dv += torch.matmul(P.transpose(-1, -2), d_b)
        if kernel == "softmax":
            dP = torch.matmul(d_b, values.transpose(-1, -2))
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
        self.normalised = normalised(kernel)
        self.out = torch.zeros_like(like)
        self.lse = torch.full_like(like[..., 0], -torch.inf) if self.normalised else None

    def add(self, rows: slice, out: Tensor, lse: Tensor | None) -> None:
        """Merge one block's statistics for ``rows`` (log-sum-exp merge, or a sum), in place; ``out`` is consumed."""
        if self.lse is None:
            self.out[:, :, rows] += out
            return
        assert lse is not None
        old_lse = self.lse[:, :, rows]
        merged = torch.logaddexp(old_lse, lse)
        self.out[:, :, rows].mul_(torch.exp(old_lse - merged)[..., None]).add_(
            out.mul_(torch.exp(lse - merged)[..., None]))
        self.lse[:, :, rows] = merged


def as_prefix(stats: RowStats, kernel: str) -> tuple[Tensor, Tensor | None]:
    """The earlier shards' contribution in the form impl's u-stage merges (``_merge_prefix``): softmax (o, lse),
    exp its sum o exp(lse), linear and round their sum."""
    if kernel == "exp":
        assert stats.lse is not None
        return stats.out * torch.exp(stats.lse)[..., None], None
    return stats.out, stats.lse
