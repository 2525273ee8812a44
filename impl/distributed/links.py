"""Point-to-point links between two ranks: the messages of one pass, issued in one agreed order, with timeouts.

Both ranks of a pair derive the same message list from the plan (``schedule.forward_messages`` /
``backward_messages``) and issue its operations in that list's order; the program must send in that order
(``RuntimeError`` otherwise: a program bug, which the tests would show on gloo before it could deadlock NCCL). One
order per pair is what NCCL needs (its point-to-point operations between two ranks run in issue order); gloo
matches by tag, and every message's tag is its position in the list. Receives are posted lazily (when the program
asks for the message, or when a later operation on the link must be issued), so at most the buffers the program
is about to use are allocated. Every wait has a timeout, so a rank that never sends makes its peers fail with an
error instead of hanging.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from impl.distributed.contract import Comm
from impl.distributed.schedule import Message, Plan

__all__ = ["TRACE", "Link", "Links", "open_links", "pack", "recv_keys", "send_keys", "unpack"]

TRACE: list[tuple[str, int, int, int, float]] | None = None
"""When a list, every send and every receive appends (kind, src, dst, tag, this thread's CPU time when the program
issued it): ``benchmarks.context_parallel`` replays these to get the critical path in CPU time."""


class Link:
    """The messages between this rank and one peer in one pass."""

    def __init__(self, group: dist.ProcessGroup, me: int, peer: int, messages: Sequence[Message], *,
                 shape: tuple[int, int], dtype: torch.dtype, device: torch.device, timeout: datetime.timedelta,
                 tag_base: int) -> None:
        self.group, self.me, self.peer, self.messages = group, me, peer, list(messages)
        self.shape, self.dtype, self.device, self.timeout, self.tag_base = shape, dtype, device, timeout, tag_base
        self.issued = 0
        self.posted: dict[str, tuple[dist.Work, Tensor]] = {}
        self.sends: list[dist.Work] = []

    def _post_receives_before(self, index: int) -> None:
        """Issue the receives at positions [issued, index); a send among them is a program-order bug."""
        while self.issued < index:
            message = self.messages[self.issued]
            if message.dst != self.me:
                raise RuntimeError(f"rank {self.me} handles message {self.messages[index].name!r} with rank "
                                   f"{self.peer} before sending {message.name!r}, which the agreed order puts first")
            buffer = torch.empty(*self.shape, message.rows, message.width, dtype=self.dtype, device=self.device)
            work = dist.irecv(buffer, group=self.group, tag=self.tag_base + self.issued, group_src=self.peer)
            assert work is not None
            self.posted[message.name] = (work, buffer)
            self.issued += 1

    def _index(self, name: str) -> int:
        for index, message in enumerate(self.messages):
            if message.name == name:
                return index
        raise RuntimeError(f"the plan has no message {name!r} between ranks {self.me} and {self.peer}")

    def send(self, name: str, tensor: Tensor) -> None:
        index = self._index(name)
        if index < self.issued:
            raise RuntimeError(f"rank {self.me} sends {name!r} to rank {self.peer} twice")
        self._post_receives_before(index)
        message = self.messages[index]
        if message.src != self.me:
            raise RuntimeError(f"message {name!r} goes from rank {self.peer} to rank {self.me}, not the other way")
        want = (*self.shape, message.rows, message.width)
        if tuple(tensor.shape) != want:
            raise RuntimeError(f"message {name!r} from rank {self.me} has shape {tuple(tensor.shape)}, the plan says "
                               f"{want}")
        if TRACE is not None:
            TRACE.append(("send", self.me, self.peer, self.tag_base + index, time.thread_time()))
        payload = tensor.to(self.dtype).contiguous()
        work = dist.isend(payload, group=self.group, tag=self.tag_base + index, group_dst=self.peer)
        assert work is not None
        self.sends.append(work)
        self.issued += 1

    def recv(self, name: str) -> Tensor:
        """Wait for message ``name`` (posting it, and any receive before it, first) and return it."""
        if name not in self.posted:
            index = self._index(name)
            if index < self.issued:
                raise RuntimeError(f"rank {self.me} receives {name!r} from rank {self.peer} twice")
            self._post_receives_before(index + 1)
        if TRACE is not None:
            TRACE.append(("recv", self.peer, self.me, self.tag_base + self._index(name), time.thread_time()))
        work, buffer = self.posted.pop(name)
        _wait(work, self.timeout, f"receiving {name!r} from rank {self.peer}", self.me)
        return buffer

    def finish(self) -> None:
        """Wait until every send has been taken by the peer (their buffers may be reused after this)."""
        if self.posted or self.issued < len(self.messages):
            missing = [m.name for m in self.messages[self.issued:]] + list(self.posted)
            raise RuntimeError(f"rank {self.me}'s link with rank {self.peer} ends with messages not handled: "
                               f"{missing}")
        for work in self.sends:
            _wait(work, self.timeout, f"sending to rank {self.peer}", self.me)
        self.sends.clear()


def _wait(work: dist.Work, timeout: datetime.timedelta, what: str, me: int) -> None:
    try:
        work.wait(timeout)
    except RuntimeError as error:
        raise RuntimeError(f"rank {me}: {what} failed or timed out after {timeout.total_seconds():g} s (did every rank "
                           f"call the op with matching arguments?): {error}") from error


class Links:
    """This rank's links with every peer it exchanges messages with in one pass."""

    def __init__(self, links: dict[int, Link]) -> None:
        self.links = links

    def __getitem__(self, peer: int) -> Link:
        return self.links[peer]

    def __contains__(self, peer: int) -> bool:
        return peer in self.links

    def finish(self) -> None:
        for peer in sorted(self.links):
            self.links[peer].finish()


def send_keys(link: Link, k: Tensor, u: Tensor) -> None:
    """A shard's key data, (k, u), as the two messages "keys" and "values" (no packed copy)."""
    link.send("keys", k)
    link.send("values", u)


def recv_keys(link: Link) -> tuple[Tensor, Tensor]:
    return link.recv("keys"), link.recv("values")


def pack(*tensors: Tensor) -> Tensor:
    """Concatenate [B, H, n, *] (or [B, H, n]) tensors along the last dimension into one message."""
    return torch.cat([t if t.ndim == 4 else t[..., None] for t in tensors], dim=-1)


def unpack(message: Tensor, widths: Sequence[int]) -> list[Tensor]:
    """Split a packed message back; a width of 0 means a [B, H, n] tensor (one column, squeezed)."""
    parts = torch.split(message, [max(w, 1) for w in widths], dim=-1)
    return [p[..., 0] if w == 0 else p for p, w in zip(parts, widths, strict=True)]


def open_links(comm: Comm, plan: Plan, messages: Callable[[Plan, int, int], list[Message]], *,
               shape: tuple[int, int], dtype: torch.dtype, tag_base: int) -> Links:
    """This rank's links for one pass: ``messages(plan, j, r)`` lists a pair's messages (j < r) in issue order."""
    me = comm.rank
    links = {}
    for peer in range(plan.world):
        if peer == me:
            continue
        listed = messages(plan, min(me, peer), max(me, peer))
        if listed:
            links[peer] = Link(comm.group, me, peer, listed, shape=shape, dtype=dtype, device=comm.device,
                               timeout=comm.timeout, tag_base=tag_base)
    return Links(links)
