"""The read-out across shards: causal softmax attention of q over (k, u), merged by log-sum-exp, and its backward.

Forward, rank r's rows: its diagonal block (causal) plus one block per earlier shard j. The key owner j computes
the rows [h, L_r) of block (r, j) as soon as u_j is final (rank j is then idle: its own rows wait for nothing but
its own u) and sends the partial output and log-sum-exp; rank r computes rows [0, h) itself (``schedule``: h = 0
except on the adjacent pair). Rank r merges all blocks in rank order, then its diagonal block.

Backward: with the merged output o and log-sum-exp, each block's gradient is exact on its own
(``blocks.block_backward``). The key owner computes its share of every later shard's block (it receives
q, dO, o, lse of those rows and returns dq), so that dL/du_j, needed before rank j's write-pass backward, is
assembled on rank j without waiting for any later shard's solve.
"""

from __future__ import annotations

from torch import Tensor

from impl._nonfinite import split_nonfinite
from impl.distributed.blocks import RowStats, block_backward, block_forward
from impl.distributed.links import Links, pack, recv_keys, unpack
from impl.distributed.schedule import Plan

__all__ = ["readout_for_later", "readout_grad_for_later", "readout_grad_own_rows", "readout_own_rows",
           "receive_readout_dq", "receive_readout_key_grads", "send_readout_grad_rows", "send_readout_rows"]

_SOFTMAX = "softmax"


def send_readout_rows(links: Links, plan: Plan, r: int, q: Tensor) -> None:
    """Rows of q that earlier ranks read out for rank r (the key owners' shares)."""
    for j in range(r):
        if plan.helped("readout", r, j):
            links[j].send("readout_rows", q[:, :, plan.owner_rows("readout", r, j):])


def readout_for_later(links: Links, plan: Plan, r: int, k: Tensor, u: Tensor, *, scale: float) -> None:
    """Rank r's share (as key owner) of every later shard's read-out block over (k_r, u_r)."""
    for later in range(r + 1, plan.world):
        if plan.helped("readout", later, r):
            rows = links[later].recv("readout_rows")
            out, lse = block_forward(rows, k, u, kernel=_SOFTMAX, scale=scale, causal=False)
            assert lse is not None
            links[later].send("readout_result", pack(out, lse))


def readout_own_rows(links: Links, plan: Plan, r: int, q: Tensor, k: Tensor, u: Tensor,
                     kept: dict[int, tuple[Tensor, Tensor]], *, scale: float) -> tuple[Tensor, Tensor]:
    """(o, lse) of rank r's rows: its own blocks first (diagonal and row-owner shares), then the key owners' shares
    as they arrive; merged in rank order with the diagonal block last (the same order on every run)."""
    L, V = q.shape[2], u.shape[-1]
    # an overflowed u_j must not turn the masked (zero) weights of earlier rows into NaN: impl's split_nonfinite
    values, overflow = split_nonfinite(u, dim=2)
    diagonal = block_forward(q, k, values, kernel=_SOFTMAX, scale=scale, causal=True)
    own = {}
    for j in range(r):
        h = plan.owner_rows("readout", r, j)
        if h > 0:
            k_j, u_j = kept[j]
            own[j] = block_forward(q[:, :, :h], k_j, u_j, kernel=_SOFTMAX, scale=scale, causal=False)
    stats = RowStats(diagonal[0], _SOFTMAX)
    for j in range(r):
        h = plan.owner_rows("readout", r, j)
        if h > 0:
            stats.add(slice(0, h), *own.pop(j))
        if h < L:
            out, lse = unpack(links[j].recv("readout_result"), [V, 0])
            stats.add(slice(h, L), out, lse)
    stats.add(slice(0, L), *diagonal)
    assert stats.lse is not None
    return (stats.out if overflow is None else stats.out + overflow), stats.lse


def send_readout_grad_rows(links: Links, plan: Plan, r: int, q: Tensor, d_out: Tensor, out: Tensor,
                           lse: Tensor) -> None:
    """Rows (q, dO, o, lse) whose read-out backward earlier ranks compute for rank r."""
    for j in range(r):
        if plan.helped("readout_grad", r, j):
            h = plan.owner_rows("readout_grad", r, j)
            links[j].send("readout_rows", pack(*(x[:, :, h:] for x in (q, d_out, out, lse))))


def readout_grad_for_later(links: Links, plan: Plan, r: int, k: Tensor, u: Tensor, dk: Tensor, du: Tensor, *,
                           scale: float) -> None:
    """Rank r's share (as key owner) of the later shards' read-out backward: dq goes back, dk and du stay."""
    K, V = k.shape[-1], u.shape[-1]
    for later in range(r + 1, plan.world):
        if plan.helped("readout_grad", later, r):
            q_rows, d_rows, o_rows, lse_rows = unpack(links[later].recv("readout_rows"), [K, V, V, 0])
            dq, dk_part, du_part = block_backward(d_rows, q_rows, k, u, o_rows, lse_rows, kernel=_SOFTMAX,
                                                  scale=scale, causal=False)
            links[later].send("readout_dq", dq)
            dk += dk_part
            du += du_part


def readout_grad_own_rows(links: Links, plan: Plan, r: int, q: Tensor, k: Tensor, u: Tensor, d_out: Tensor,
                          out: Tensor, lse: Tensor, dq: Tensor, dk: Tensor, du: Tensor, *,
                          scale: float) -> dict[int, tuple[Tensor, Tensor]]:
    """The diagonal block and rank r's shares of its blocks over earlier keys ((dk_j, du_j) sent to rank j).

    Returns the earlier shards' (k, u) received here, for the write-pass backward to reuse."""
    dq_d, dk_d, du_d = block_backward(d_out, q, k, u, out, lse, kernel=_SOFTMAX, scale=scale, causal=True)
    dq += dq_d
    dk += dk_d
    du += du_d
    kept = {}
    for j in range(r):
        h = plan.owner_rows("readout_grad", r, j)
        if h == 0:
            continue
        k_j, u_j = recv_keys(links[j])
        dq_part, dk_j, du_j = block_backward(d_out[:, :, :h], q[:, :, :h], k_j, u_j, out[:, :, :h], lse[:, :, :h],
                                             kernel=_SOFTMAX, scale=scale, causal=False)
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


def receive_readout_dq(links: Links, plan: Plan, r: int, dq: Tensor) -> None:
    """Add the key owners' shares of dq for rank r's rows."""
    for j in range(r):
        if plan.helped("readout_grad", r, j):
            dq[:, :, plan.owner_rows("readout_grad", r, j):] += links[j].recv("readout_dq")
