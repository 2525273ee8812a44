"""The delta rule's state carried across shards: the state entering shard r + 1 is A_r S_in + B_r.

For a shard run from a zero state, the delta rule's final state is B_r, and its transition is
A_r = prod_t (I - beta_t k_t k_t^T) (impl's [K, V] orientation: state_t = (I - beta_t k_t k_t^T) state_{t-1} +
beta_t k_t v_t^T). Outputs are affine in the entering state: o_t = o0_t + S_in^T oA_t, with o0 the zero-state
output and oA_t = A_{<=t}^T (scale q_t) the output of the same recurrence with v = 0 started from the identity.
Every rank computes (o0, B_r) and (oA, A_r) at once, in one pass of impl's chunked delta rule (values [v, 0] from
the state [0, I]), in parallel; only the carry itself, R - 1 messages of [K, V] per head, is sequential. Rank 0
runs its shard from the given initial state directly (its A is never needed).

``StateCarry`` owns the carry's messages: forward receives S_in from rank r - 1 and sends S_out to rank r + 1;
backward receives dL/dS_in of rank r + 1 (added to dL/dS_out) and sends dL/dS_in to rank r - 1: one fixed order,
latest rank first, whatever order autograd reaches it in.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor

from impl.distributed.contract import Comm
from impl.distributed.links import open_links
from impl.distributed.schedule import Plan, carry_messages

__all__ = ["CarrySetup", "StateCarry"]

_FORWARD_TAGS, _BACKWARD_TAGS = 128, 160


@dataclass(frozen=True)
class CarrySetup:
    comm: Comm
    plan: Plan
    K: int
    V: int


class StateCarry(torch.autograd.Function):
    """(o, S_out) of one rank from (o0, oA, A, B): o = o0 + S_in^T oA per row, S_out = A S_in + B.

    o0 [N, L, H, V], oA [N, L, H, K], A [N, H, K, K], B [N, H, K, V], all in one floating dtype. On rank 0, oA and A
    are None, S_in = 0 (its initial state already entered o0 and B) and S_out = B.
    """

    @staticmethod
    def forward(ctx: Any, o0: Tensor, oA: Tensor | None, A: Tensor | None, B: Tensor,
                setup: CarrySetup) -> tuple[Tensor, Tensor]:
        rank, world = setup.comm.rank, setup.plan.world
        N, _, H, _ = o0.shape
        links = open_links(setup.comm, setup.plan, partial(carry_messages, K=setup.K, V=setup.V, name="state"),
                           shape=(N, H), dtype=o0.dtype, tag_base=_FORWARD_TAGS)
        s_in = None
        o, s_out = o0, B
        if rank > 0:
            assert oA is not None and A is not None
            s_in = links[rank - 1].recv("state")
            o = o0 + torch.einsum("nlhk,nhkv->nlhv", oA, s_in)
            s_out = torch.matmul(A, s_in) + B
        if rank + 1 < world:
            links[rank + 1].send("state", s_out)
        links.finish()
        ctx.save_for_backward(oA, A, s_in)
        ctx.setup = setup
        return o, s_out

    @staticmethod
    def backward(ctx: Any, d_o: Tensor, d_s_out: Tensor) -> tuple[Tensor | None, ...]:
        oA, A, s_in = ctx.saved_tensors
        setup: CarrySetup = ctx.setup
        rank, world = setup.comm.rank, setup.plan.world
        N, _, H, _ = d_o.shape
        links = open_links(setup.comm, setup.plan, partial(carry_messages, K=setup.K, V=setup.V, name="state_grad",
                                                           reverse=True),
                           shape=(N, H), dtype=d_o.dtype, tag_base=_BACKWARD_TAGS)
        g = d_s_out.clone()
        if rank + 1 < world:
            g += links[rank + 1].recv("state_grad")
        if rank == 0:
            links.finish()
            return d_o, None, None, g, None
        d_oA = torch.einsum("nlhv,nhkv->nlhk", d_o, s_in)
        d_s_in = torch.einsum("nlhk,nlhv->nhkv", oA, d_o) + torch.matmul(A.transpose(-1, -2), g)
        links[rank - 1].send("state_grad", d_s_in)
        links.finish()
        return d_o, d_oA, torch.matmul(g, s_in.transpose(-1, -2)), g, None
