"""The read-out across shards: causal softmax attention of q over (k, u), merged by the online-softmax rule, and its
backward.

Forward, rank r's rows: its diagonal block (causal) plus one block per earlier shard j. The key owner j computes
the rows [h, L_r) of block (r, j) as soon as u_j is final (rank j is then idle: its own rows wait for nothing but
its own u) and sends the partial output and normaliser; rank r computes rows [0, h) itself (``schedule``: h = 0
except on the adjacent pair). Rank r merges the key owners' partials as they arrive (in rank order, between its
other blocks of work: ``links.Links.expect``), then its own shares, then its diagonal block.

Backward: with the merged output o and normaliser, each block's gradient is exact on its own
(``blocks.block_backward``). The key owner computes its share of every later shard's block (it receives q, dO, o
and the normaliser of those rows and returns dq), so that dL/du_j, needed before rank j's write-pass backward, is
assembled on rank j without waiting for any later shard's solve.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor

from impl._nonfinite import split_nonfinite
from impl.distributed.blocks import Blocks, RowStats, block_backward, block_forward
from impl.distributed.links import Links, pack, recv_keys, send_keys, unpack
from impl.distributed.schedule import Plan

__all__ = ["expect_readout_dq", "expect_readout_results", "readout_for_later", "readout_grad_for_later",
           "readout_grad_own_rows", "readout_own_rows", "receive_readout_key_grads", "send_readout_grad_rows",
           "send_readout_rows"]

def send_readout_rows(links: Links, plan: Plan, r: int, q: Tensor) -> None:
    """Rows of q that earlier ranks read out for rank r (the key owners' shares)."""
    for j in range(r):
        if plan.helped("readout", r, j):
            links[j].send("readout_rows", q[:, :, plan.owner_rows("readout", r, j):])


def expect_readout_results(links: Links, plan: Plan, r: int, like: Tensor) -> RowStats:
    """The key owners' partial read-outs of rank r's rows, merged into the returned statistics as they arrive (in
    rank order, ``Links.expect``), so that no key owner holds its partial until rank r's pass ends. ``like``:
    [B, H, L_r, V]."""
    stats = RowStats(like, "softmax")
    for j in range(r):
        if plan.helped("readout", r, j):
            links.expect(j, "readout_result", partial(_merge_partial, stats, slice(plan.owner_rows("readout", r, j),
                                                                                   plan.lengths[r])))
    return stats


def _merge_partial(stats: RowStats, rows: slice, message: Tensor) -> None:
    out, norm = unpack(message, [message.shape[-1] - 2, 2])
    stats.add(rows, out, norm)


def readout_for_later(links: Links, plan: Plan, r: int, k: Tensor, u: Tensor, how: Blocks) -> None:
    """Rank r's share (as key owner) of every later shard's read-out block over (k_r, u_r)."""
    for later in range(r + 1, plan.world):
        if plan.helped("readout", later, r):
            rows = links[later].recv("readout_rows")
            out, norm = block_forward(rows, k, u, how)
            assert norm is not None
            links[later].send("readout_result", pack(out, norm))
            links.tick()


def readout_own_rows(links: Links, plan: Plan, r: int, q: Tensor, k: Tensor, u: Tensor,
                     kept: dict[int, tuple[Tensor, Tensor]], remote: RowStats, how: Blocks) -> tuple[Tensor, Tensor]:
    """(o, normaliser) of rank r's rows: ``remote`` (the key owners' shares, ``expect_readout_results``; the rest
    merged here as they arrive), then rank r's own shares of earlier blocks, then the diagonal block (the same
    order on every run)."""
    # an overflowed u_j must not turn the masked (zero) weights of earlier rows into NaN: impl's split_nonfinite
    values, overflow = split_nonfinite(u, dim=2)
    diagonal = block_forward(q, k, values, how, causal=True)
    own = {}
    for j in range(r):
        h = plan.owner_rows("readout", r, j)
        if h > 0:
            k_j, u_j = kept[j]
            own[j] = block_forward(q[:, :, :h], k_j, u_j, how)
    links.drain()
    for j, (out, norm) in own.items():
        remote.add(slice(0, plan.owner_rows("readout", r, j)), out, norm)
    remote.add(slice(0, q.shape[2]), *diagonal)
    assert remote.norm is not None
    return (remote.out if overflow is None else remote.out + overflow), remote.norm


def send_readout_grad_rows(links: Links, plan: Plan, r: int, q: Tensor, d_out: Tensor, out: Tensor,
                           norm: Tensor) -> None:
    """Rows (q, dO, o, normaliser) whose read-out backward earlier ranks compute for rank r."""
    for j in range(r):
        if plan.helped("readout_grad", r, j):
            h = plan.owner_rows("readout_grad", r, j)
            links[j].send("readout_rows", pack(*(x[:, :, h:] for x in (q, d_out, out, norm))))


def expect_readout_dq(links: Links, plan: Plan, r: int, q: Tensor) -> Tensor:
    """The key owners' shares of dq for rank r's rows, summed (in rank order) as they arrive into the returned
    buffer (``Links.expect``)."""
    dq = torch.zeros_like(q)
    for j in range(r):
        if plan.helped("readout_grad", r, j):
            links.expect(j, "readout_dq", dq[:, :, plan.owner_rows("readout_grad", r, j):].add_)
    return dq


def readout_grad_for_later(links: Links, plan: Plan, r: int, k: Tensor, u: Tensor, dk: Tensor, du: Tensor,
                           how: Blocks) -> None:
    """Rank r's share (as key owner) of the later shards' read-out backward: dq goes back, dk and du stay; then
    (k_r, u_r) to each later rank that computes rows over them in the backward. Latest rank first: a later rank
    sends its rows to every earlier one, so it has the most rows in flight; taking them first frees them first."""
    K, V = k.shape[-1], u.shape[-1]
    for later in reversed(range(r + 1, plan.world)):
        if plan.helped("readout_grad", later, r):
            q_rows, d_rows, o_rows, norm_rows = unpack(links[later].recv("readout_rows"), [K, V, V, 2])
            dq, dk_part, du_part = block_backward(d_rows, q_rows, k, u, o_rows, norm_rows, how)
            links[later].send("readout_dq", dq)
            dk += dk_part
            du += du_part
        if plan.key_data_needed(later, r, ("readout_grad", "cross_grad")):
            send_keys(links[later], k, u)
        links.tick()


def readout_grad_own_rows(links: Links, plan: Plan, r: int, q: Tensor, k: Tensor, u: Tensor, d_out: Tensor,
                          out: Tensor, norm: Tensor, dq: Tensor, dk: Tensor, du: Tensor,
                          how: Blocks) -> dict[int, tuple[Tensor, Tensor]]:
    """The diagonal block and rank r's shares of its blocks over earlier keys ((dk_j, du_j) sent to rank j).

    Returns the earlier shards' (k, u) received here, for the write-pass backward to reuse."""
    dq_d, dk_d, du_d = block_backward(d_out, q, k, u, out, norm, how, causal=True)
    dq += dq_d
    dk += dk_d
    du += du_d
    kept = {}
    for j in range(r):
        h = plan.owner_rows("readout_grad", r, j)
        if h == 0:
            continue
        k_j, u_j = recv_keys(links[j])
        dq_part, dk_j, du_j = block_backward(d_out[:, :, :h], q[:, :, :h], k_j, u_j, out[:, :, :h], norm[:, :, :h],
                                             how)
        dq[:, :, :h] += dq_part
        links[j].send("readout_key_grads", pack(dk_j, du_j))
        if plan.owner_rows("cross_grad", r, j) > 0:
            kept[j] = (k_j, u_j)
    return kept


def receive_readout_key_grads(links: Links, plan: Plan, r: int, dk: Tensor, du: Tensor) -> None:
    """Add the later shards' own-row shares of their read-out blocks over rank r's keys."""
    K = dk.shape[-1]
    for later in range(r + 1, plan.world):
        if plan.owner_rows("readout_grad", later, r) > 0:
            dk_part, du_part = unpack(links[later].recv("readout_key_grads"), [K, du.shape[-1]])
            dk += dk_part
            du += du_part
