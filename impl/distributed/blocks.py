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

from impl.torch_ops.deltaformer import (
    _block_probs,
    _block_score_grad,
    _flash,
    _flash_applies,
    _flash_backward,
    _strict_mask,
)

__all__ = ["ROW_BLOCK", "RowStats", "as_prefix", "block_backward", "block_forward", "normalised"]

ROW_BLOCK = 512
"""Rows per explicit score block (the explicit path holds [ROW_BLOCK, keys] scores at a time)."""


def normalised(kernel: str) -> bool:
    """Whether a kernel's blocks carry (o, lse) statistics (softmax, exp) rather than an additive sum."""
    return kernel in ("softmax", "exp")


def _mask(rows: slice, cols: int, causal: bool, device: torch.device) -> Tensor:
    """True where key j is excluded from row i of the block: j > i on a causal (diagonal) block, none otherwise."""
    n = rows.stop - rows.start
    if causal:
        return _strict_mask(n, cols, rows.start + 1, device)
    return torch.zeros(n, cols, dtype=torch.bool, device=device)


def _row_blocks(n: int) -> list[slice]:
    return [slice(a, min(a + ROW_BLOCK, n)) for a in range(0, n, ROW_BLOCK)]


def block_forward(queries: Tensor, keys: Tensor, values: Tensor, *, kernel: str, scale: float,
                  causal: bool) -> tuple[Tensor, Tensor | None]:
    """(o, lse) for softmax/exp, (acc, None) for linear/round, of [B, H, n, *] rows over [B, H, m, *] keys.

    ``causal``: a diagonal block (key j <= row i), used by the read-out only.
    """
    family = "softmax" if normalised(kernel) else kernel
    if _flash_applies(queries, values, family):
        return _flash(queries, keys, values, scale, causal)
    outs, lses = [], []
    for rows in _row_blocks(queries.shape[2]):
        scores = torch.matmul(queries[:, :, rows], keys.transpose(-1, -2)).mul_(scale)
        P, lse = _block_probs(scores, _mask(rows, keys.shape[2], causal, queries.device), family, None)
        outs.append(torch.matmul(P, values))
        lses.append(lse)
    out = torch.cat(outs, dim=2)
    if family != "softmax":
        return out, None
    return out, torch.cat([x for x in lses if x is not None], dim=2)


def block_backward(d_out: Tensor, queries: Tensor, keys: Tensor, values: Tensor, out: Tensor, lse: Tensor | None,
                   *, kernel: str, scale: float, causal: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(dq, dk, dv) of one block given the rows' output gradient and their *whole-row* ``out`` and ``lse``.

    softmax: P = exp(S - lse), dS = P (dP - dO . out). exp (unnormalised): the same with out = 0 and lse = 0.
    linear: dS = dP; round: dS = 0. dq = scale dS k, dk = scale dS^T q, dv = P^T dO.
    """
    if kernel == "exp":
        out, lse, kernel = torch.zeros_like(out), torch.zeros_like(out[..., 0]), "softmax"
    if kernel == "softmax" and _flash_applies(queries, values, kernel):
        assert lse is not None
        return _flash_backward(d_out, queries, keys, values, out, lse, scale, causal)
    dq = torch.zeros_like(queries)
    dk = torch.zeros_like(keys)
    dv = torch.zeros_like(values)
    for rows in _row_blocks(queries.shape[2]):
        q_b, d_b = queries[:, :, rows], d_out[:, :, rows]
        mask = _mask(rows, keys.shape[2], causal, queries.device)
        scores = torch.matmul(q_b, keys.transpose(-1, -2)).mul_(scale)
        P, _ = _block_probs(scores, mask, kernel, None if lse is None else lse[:, :, rows])
        dv += torch.matmul(P.transpose(-1, -2), d_b)
        if kernel == "round":  # piecewise constant: no score gradient
            continue
        row_dot = (d_b * out[:, :, rows]).sum(-1) if kernel == "softmax" else None
        dS = _block_score_grad(P, torch.matmul(d_b, values.transpose(-1, -2)), mask, kernel, row_dot).mul_(scale)
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
