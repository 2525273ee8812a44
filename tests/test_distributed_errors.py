"""Bad input gives a clear error on every rank, never a hang; the plan and the links refuse what would deadlock.

The multi-rank scenarios run inside the 3-rank group of tests/_distributed_support.py (rank 1 or 2 is the odd
one out); each rank records the exception it raised.
"""

from __future__ import annotations

import datetime

import pytest
import torch

import impl.distributed as idist
from impl.distributed.links import Link
from impl.distributed.schedule import SPLITS, Message, Plan, Splits, backward_messages, forward_messages
from tests._distributed_support import group_results


def _errors() -> list[dict[str, tuple[str, str]]]:
    return [rank["errors"] for rank in group_results(3)]


@pytest.mark.parametrize(("scenario", "field", "listing"), [
    ("heads differ", "H", "rank 0: 2, rank 1: 1, rank 2: 2"),
    ("batch differs", "B", "rank 0: 2, rank 1: 2, rank 2: 1"),
    ("head dim differs", "K", "rank 0: 3, rank 1: 4, rank 2: 4"),
    ("kernel differs", "kernel", "rank 0: softmax, rank 1: softmax, rank 2: linear"),
    ("grad on one rank", "gradient tracking", "rank 0: on, rank 1: off, rank 2: off"),
])
def test_a_mismatch_across_ranks_raises_the_same_value_error_on_every_rank(scenario: str, field: str,
                                                                           listing: str) -> None:
    for rank, seen in enumerate(_errors()):
        kind, message = seen[scenario]
        assert kind == "ValueError", (rank, seen[scenario])
        assert f"{field} must be the same on every rank, got {listing}" in message, (rank, message)


@pytest.mark.parametrize(("scenario", "odd", "kind", "text"), [
    ("nan on one rank", 1, "ValueError", "k contains NaN or Inf"),
    ("state on a later rank", 1, "ValueError", "initial_state is read on the first rank only; rank 1 got one"),
])
def test_a_local_error_is_raised_on_its_rank_and_quoted_on_the_others(scenario: str, odd: int, kind: str,
                                                                     text: str) -> None:
    for rank, seen in enumerate(_errors()):
        got_kind, message = seen[scenario]
        if rank == odd:
            assert (got_kind, message) == (kind, message) and message.startswith(text), (rank, seen[scenario])
        else:
            assert got_kind == "ValueError", (rank, seen[scenario])
            assert f"rank {odd} rejected its input ({kind}: {text}" in message, (rank, message)


def test_a_rank_that_never_calls_makes_the_others_time_out_with_an_error() -> None:
    for rank, (kind, message) in enumerate(e["a rank does not call"] for e in _errors()):
        if rank == 1:
            assert (kind, message) == ("", "")
        else:
            assert kind == "RuntimeError", message
            assert "timed out after 3 s" in message and "did every rank of the group call" in message


def test_without_an_initialised_process_group_every_op_raises() -> None:
    assert not torch.distributed.is_initialized()
    x = torch.zeros(1, 2, 1, 2)
    with pytest.raises(RuntimeError, match=r"initialised process group: call torch\.distributed\.init_process_group"):
        idist.deltaformer_attn(x, x, x)
    with pytest.raises(RuntimeError, match="needs an initialised process group"):
        idist.delta_rule(x, x, x, torch.zeros(1, 2, 1))


def test_a_send_out_of_the_agreed_order_is_refused_before_anything_is_sent() -> None:
    """The links' order is what keeps NCCL (which runs a pair's operations in issue order) from deadlocking."""
    messages = [Message("first", 0, 1, 1, 1), Message("second", 0, 1, 1, 1)]
    link = Link(None, 0, 1, messages, shape=(1, 1), dtype=torch.float64,  # type: ignore[arg-type]
                device=torch.device("cpu"), timeout=datetime.timedelta(seconds=1), tag_base=0)
    with pytest.raises(RuntimeError, match="before sending 'first', which the agreed order puts first"):
        link.send("second", torch.zeros(1, 1, 1, 1))


@pytest.mark.parametrize("splits", [SPLITS, Splits(0.0, 0.0, 0.0, 0.0), Splits(1.0, 1.0, 1.0, 1.0)])
def test_every_row_of_every_block_is_assigned_to_exactly_one_side(splits: Splits) -> None:
    plan = Plan((3, 1, 5, 2), splits)
    for r in range(plan.world):
        for j in range(r):
            for kind in ("fold", "readout", "readout_grad", "cross_grad"):
                h = plan.owner_rows(kind, r, j)
                assert 0 <= h <= plan.lengths[r]
                assert plan.helped(kind, r, j) == (h < plan.lengths[r])
            names = [m.name for m in forward_messages(plan, j, r, K=2, V=3)]
            assert len(names) == len(set(names))
            for m in forward_messages(plan, j, r, K=2, V=3) + backward_messages(plan, j, r, K=2, V=3):
                assert {m.src, m.dst} == {j, r}
    with pytest.raises(ValueError, match="a pair block needs 0 <= j < r < 4"):
        plan.owner_rows("fold", 1, 1)
