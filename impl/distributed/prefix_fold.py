"""The write pass across shards: fold the earlier shards' (k, u) into a shard's prefix statistics, and its backward.

Forward, rank r: every earlier shard j contributes sum_{keys of j} kappa_1(w_t, k_j) u_j to each row t of rank r
(softmax: normalised over all earlier keys). Rank r folds block j as soon as u_j arrives (rows [0, h) of the
adjacent block, all rows of the others; rank r - 1 folds rows [h, L_r) of the adjacent block, ``schedule``), merged
in rank order into ``blocks.RowStats``. impl's chunked u-stage then solves the shard with that prefix merged into
every chunk (``impl.torch_ops.deltaformer._u_forward(prefix=...)``).

Backward: with X = M^{-T} G solved shard by shard in reverse rank order, a fold block (rows of r, keys of j)
contributes to the earlier shard's right-hand side G_j the values' gradient P_{r,j}^T dO_r, and to dk_j and dw_r
(``blocks.block_backward`` with the saved whole-row r = P u and lse). Rank r computes its share of its blocks after
its own X is final and sends (dk_j, dv_j) to rank j; rank j adds every later shard's share to G_j before its solve.
"""

from __future__ import annotations

import torch
from torch import Tensor

from impl.distributed.blocks import RowStats, as_prefix, block_backward, block_forward
from impl.distributed.links import Links, pack, recv_keys, unpack
from impl.distributed.schedule import Plan

__all__ = ["cross_grads_as_row_owner", "fold_earlier", "help_later_folds", "receive_cross_grads", "send_fold_rows"]

_READOUT_KINDS = ("readout",)
_FORWARD_KINDS = ("fold", "readout")


def send_fold_rows(links: Links, plan: Plan, r: int, w: Tensor) -> None:
    """Rows of w that earlier ranks fold for rank r (the key owner's share of each block)."""
    for j in range(r):
        if plan.helped("fold", r, j):
            links[j].send("fold_rows", w[:, :, plan.owner_rows("fold", r, j):])


def fold_earlier(links: Links, plan: Plan, r: int, w: Tensor, like: Tensor, *, kernel: str,
                 scale: float) -> tuple[tuple[Tensor, Tensor | None] | None, dict[int, tuple[Tensor, Tensor]]]:
    """The prefix of rank r's rows over every earlier shard (None on rank 0), and the earlier shards' (k, u)
    that rank r's read-out share still needs. ``like``: [B, H, L_r, V]."""
    if r == 0:
        return None, {}
    stats = RowStats(like, kernel)
    kept = {}
    for j in range(r):
        if plan.key_data_needed(r, j, _FORWARD_KINDS):
            k_j, u_j = recv_keys(links[j])
            h = plan.owner_rows("fold", r, j)
            if h > 0:
                stats.add(slice(0, h), *block_forward(w[:, :, :h], k_j, u_j, kernel=kernel, scale=scale,
                                                      causal=False))
            if plan.key_data_needed(r, j, _READOUT_KINDS):
                kept[j] = (k_j, u_j)
        if plan.helped("fold", r, j):
            h = plan.owner_rows("fold", r, j)
            result = links[j].recv("fold_result")
            out, lse = unpack(result, [like.shape[-1], 0])
            stats.add(slice(h, plan.lengths[r]), out, lse if stats.lse is not None else None)
    return as_prefix(stats, kernel), kept


def help_later_folds(links: Links, plan: Plan, r: int, k: Tensor, u: Tensor, *, kernel: str, scale: float) -> None:
    """Rank r's share (as key owner) of the later ranks' fold blocks over its own (k, u)."""
    for later in range(r + 1, plan.world):
        if plan.helped("fold", later, r):
            rows = links[later].recv("fold_rows")
            out, lse = block_forward(rows, k, u, kernel=kernel, scale=scale, causal=False)
            links[later].send("fold_result", pack(out, torch.zeros_like(out[..., 0]) if lse is None else lse))


def receive_cross_grads(links: Links, plan: Plan, r: int, k: Tensor, u: Tensor, dk: Tensor, g: Tensor, *,
                        w_dim: int, kernel: str, scale: float) -> None:
    """Add every later shard's fold-block gradients for rank r's keys into dk and g (= dL/du before the solve).

    Latest rank first (its X is final first); rank r + 1's block is last, and rank r computes its own share of
    that block here (it received the rows w, dO, r, lse of rank r + 1 after rank r + 1's solve).
    """
    V = u.shape[-1]
    for later in reversed(range(r + 1, plan.world)):
        if plan.helped("cross_grad", later, r):
            w_rows, d_rows, r_rows, lse_rows = unpack(links[later].recv("cross_rows"), [w_dim, V, V, 0])
            dw, dk_part, dv_part = block_backward(d_rows, w_rows, k, u, r_rows, lse_rows, kernel=kernel, scale=scale,
                                                  causal=False)
            links[later].send("cross_dw", dw)
            dk += dk_part
            g += dv_part
        if plan.owner_rows("cross_grad", later, r) > 0:
            dk_part, dv_part = unpack(links[later].recv("cross_key_grads"), [k.shape[-1], V])
            dk += dk_part
            g += dv_part


def cross_grads_as_row_owner(links: Links, plan: Plan, r: int, w: Tensor, d_out: Tensor, r_w: Tensor,
                             lse_w: Tensor | None, kept: dict[int, tuple[Tensor, Tensor]], dw: Tensor, *, kernel: str,
                             scale: float) -> None:
    """Rank r's share of its fold blocks' backward (latest key shard first), once its own X (and so dO) is final:
    dw of its rows into ``dw``, (dk_j, dv_j) sent to each earlier rank; the helper's rows go to rank r - 1 first."""
    lse = lse_w if lse_w is not None else torch.zeros_like(r_w[..., 0])  # unused by kernels other than softmax
    for j in reversed(range(r)):
        if plan.helped("cross_grad", r, j):
            h = plan.owner_rows("cross_grad", r, j)
            links[j].send("cross_rows", pack(*(x[:, :, h:] for x in (w, d_out, r_w, lse))))
    for j in reversed(range(r)):
        h = plan.owner_rows("cross_grad", r, j)
        if h == 0:
            continue
        k_j, u_j = kept.pop(j) if j in kept else recv_keys(links[j])
        dw_part, dk_j, dv_j = block_backward(d_out[:, :, :h], w[:, :, :h], k_j, u_j, r_w[:, :, :h], lse[:, :, :h],
                                             kernel=kernel, scale=scale, causal=False)
        dw[:, :, :h] += dw_part
        links[j].send("cross_key_grads", pack(dk_j, dv_j))
    for j in range(r):
        if plan.helped("cross_grad", r, j):
            dw[:, :, plan.owner_rows("cross_grad", r, j):] += links[j].recv("cross_dw")
