"""The write pass across shards: fold the earlier shards' (k, u) into a shard's prefix statistics, and its backward.

Forward, rank r: every earlier shard j contributes sum_{keys of j} kappa_1(w_t, k_j) u_j to each row t of rank r
(softmax: normalised over all earlier keys). Rank r folds block j as soon as u_j arrives (rows [0, h) of the
adjacent block, all rows of the others; rank r - 1 folds rows [h, L_r) of the adjacent block, ``schedule``), merged
in rank order into ``blocks.RowStats``. impl's chunked u-stage then solves the shard with that prefix merged into
every chunk (``impl.torch_ops.deltaformer._u_forward(prefix=...)``).

Backward: with X = M^{-T} G solved shard by shard in reverse rank order, a fold block (rows of r, keys of j)
contributes to the earlier shard's right-hand side G_j the values' gradient P_{r,j}^T dO_r, and to dk_j and dw_r
(``blocks.block_backward`` with the saved whole-row r = P u and normaliser). Rank r computes its share of its
blocks after its own X is final and sends (dk_j, dv_j) to rank j; rank j adds every later shard's share to G_j
before its solve.
"""

from __future__ import annotations

from torch import Tensor

from impl.distributed.blocks import Blocks, RowStats, as_prefix, block_backward, block_forward
from impl.distributed.links import Links, pack, recv_keys, unpack
from impl.distributed.schedule import Plan

__all__ = ["cross_grads_as_row_owner", "fold_earlier", "help_later_folds", "receive_cross_grads", "send_fold_rows"]

_READOUT_KINDS = ("readout",)
_FORWARD_KINDS = ("fold", "readout")


def _no_normaliser(like: Tensor) -> Tensor:
    """The two zero columns that stand in a message for the normaliser of a kernel without one (linear, round)."""
    return like.new_zeros(*like.shape[:-1], 2)


def send_fold_rows(links: Links, plan: Plan, r: int, w: Tensor) -> None:
    """Rows of w that earlier ranks fold for rank r (the key owner's share of each block)."""
    for j in range(r):
        if plan.helped("fold", r, j):
            links[j].send("fold_rows", w[:, :, plan.owner_rows("fold", r, j):])


def fold_earlier(links: Links, plan: Plan, r: int, w: Tensor, like: Tensor,
                 how: Blocks) -> tuple[tuple[Tensor, Tensor | None] | None, dict[int, tuple[Tensor, Tensor]]]:
    """The prefix of rank r's rows over every earlier shard (None on rank 0), and the earlier shards' (k, u)
    that rank r's read-out share still needs. ``like``: [B, H, L_r, V]."""
    if r == 0:
        return None, {}
    stats = RowStats(like, how.kernel)
    kept = {}
    for j in range(r):
        if plan.key_data_needed(r, j, _FORWARD_KINDS):
            k_j, u_j = recv_keys(links[j])
            h = plan.owner_rows("fold", r, j)
            if h > 0:
                stats.add(slice(0, h), *block_forward(w[:, :, :h], k_j, u_j, how))
            if plan.key_data_needed(r, j, _READOUT_KINDS):
                kept[j] = (k_j, u_j)
        if plan.helped("fold", r, j):
            h = plan.owner_rows("fold", r, j)
            result = links[j].recv("fold_result")
            out, norm = unpack(result, [like.shape[-1], 2])
            stats.add(slice(h, plan.lengths[r]), out, norm if stats.norm is not None else None)
        links.tick()
    return as_prefix(stats, how.kernel), kept


def help_later_folds(links: Links, plan: Plan, r: int, k: Tensor, u: Tensor, how: Blocks) -> None:
    """Rank r's share (as key owner) of the later ranks' fold blocks over its own (k, u)."""
    for later in range(r + 1, plan.world):
        if plan.helped("fold", later, r):
            rows = links[later].recv("fold_rows")
            out, norm = block_forward(rows, k, u, how)
            links[later].send("fold_result", pack(out, _no_normaliser(out) if norm is None else norm))
            links.tick()


def receive_cross_grads(links: Links, plan: Plan, r: int, k: Tensor, u: Tensor, dk: Tensor, g: Tensor, *,
                        w_dim: int, how: Blocks) -> None:
    """Add every later shard's fold-block gradients for rank r's keys into dk and g (= dL/du before the solve).

    Latest rank first (its X is final first); rank r + 1's block is last, and rank r computes its own share of
    that block here (it received the rows w, dO, r and their normaliser from rank r + 1 after its solve).
    """
    V = u.shape[-1]
    for later in reversed(range(r + 1, plan.world)):
        if plan.helped("cross_grad", later, r):
            w_rows, d_rows, r_rows, norm_rows = unpack(links[later].recv("cross_rows"), [w_dim, V, V, 2])
            dw, dk_part, dv_part = block_backward(d_rows, w_rows, k, u, r_rows, norm_rows, how)
            links[later].send("cross_dw", dw)
            dk += dk_part
            g += dv_part
        if plan.owner_rows("cross_grad", later, r) > 0:
            dk_part, dv_part = unpack(links[later].recv("cross_key_grads"), [k.shape[-1], V])
            dk += dk_part
            g += dv_part
        links.tick()


def cross_grads_as_row_owner(links: Links, plan: Plan, r: int, w: Tensor, d_out: Tensor, r_w: Tensor,
                             norm_w: Tensor | None, kept: dict[int, tuple[Tensor, Tensor]], dw: Tensor,
                             how: Blocks) -> None:
    """Rank r's share of its fold blocks' backward (latest key shard first), once its own X (and so dO) is final:
    dw of its rows into ``dw``, (dk_j, dv_j) sent to each earlier rank; the helper's rows go to rank r - 1 first."""
    norm = norm_w if norm_w is not None else _no_normaliser(r_w)  # unused by kernels other than softmax
    for j in reversed(range(r)):
        if plan.helped("cross_grad", r, j):
            h = plan.owner_rows("cross_grad", r, j)
            links[j].send("cross_rows", pack(*(x[:, :, h:] for x in (w, d_out, r_w, norm))))
    for j in reversed(range(r)):
        h = plan.owner_rows("cross_grad", r, j)
        if h == 0:
            continue
        k_j, u_j = kept.pop(j) if j in kept else recv_keys(links[j])
        dw_part, dk_j, dv_j = block_backward(d_out[:, :, :h], w[:, :, :h], k_j, u_j, r_w[:, :, :h], norm[:, :, :h],
                                             how)
        dw[:, :, :h] += dw_part
        links[j].send("cross_key_grads", pack(dk_j, dv_j))
        links.tick()
    for j in range(r):
        if plan.helped("cross_grad", r, j):
            dw[:, :, plan.owner_rows("cross_grad", r, j):] += links[j].recv("cross_dw")
