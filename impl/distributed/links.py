"""Point-to-point links between two ranks: the messages of one pass, issued in one agreed order, with timeouts.

Both ranks of a pair derive the same message list from the plan (``schedule.forward_messages`` /
``backward_messages``) and issue its operations in that list's order; the program must send in that order
(``RuntimeError`` otherwise: a program bug, which the tests would show on gloo before it could deadlock NCCL). One
order per pair is what NCCL needs (its point-to-point operations between two ranks run in issue order); gloo
matches by tag, and every message's tag is its position in the list. Receives are posted lazily (when the program
asks for the message, or when a later operation on the link must be issued), so at most the buffers the program
is about to use are allocated. Every wait has a timeout, so a rank that never sends makes its peers fail with an
error instead of hanging.

Memory in flight: a sent tensor stays allocated until the peer has posted its receive, the transfer is done and
the sender has waited on it. torch's gloo works report completion only once waited on, so every send and receive is
waited on by a daemon thread of its own (``_Pending``; the wait releases the GIL; NCCL works need no thread), which
frees a sent tensor as soon as the peer has taken it; the program only asks whether a message is done. The
messages a rank merges into a running result (partial read-outs, the key owners' dq) are expected through an
*inbox* (``Links.expect``): their receives are posted as soon as the agreed order allows, and ``Links.tick``,
called between blocks of work, merges those that have arrived, in a fixed order (so results do not depend on
arrival times) and frees them.
"""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from impl.distributed.contract import Comm
from impl.distributed.schedule import Message, Plan

__all__ = ["TRACE", "Link", "Links", "open_links", "pack", "recv_keys", "send_keys", "unpack"]

TRACE: list[tuple[str, int, int, int, float]] | None = None
"""When a list, every send and every receive appends (kind, src, dst, tag, this thread's CPU time when the program
issued it): ``benchmarks.context_parallel`` replays these to get the critical path in CPU time."""


class _Pending:
    """A send or receive that the program can ask about without blocking (``done``) and wait for with its own
    timeout (``result``).

    gloo (CPU): its works report completion only once waited on, so a daemon thread waits (the group's own timeout
    applies there; the wait releases the GIL); the thread holds the only reference to the work, and so to a send's
    tensor, and drops it when the wait returns. NCCL (CUDA): the work reports completion itself, and the program
    waits on it in its own thread, which is what orders the program's CUDA stream after the transfer."""

    def __init__(self, work: dist.Work, device: torch.device) -> None:
        self.finished = threading.Event()
        self.error: RuntimeError | None = None
        self.work: dist.Work | None = None
        if device.type == "cpu":
            threading.Thread(target=self._wait, args=(work,), daemon=True).start()
        else:
            self.work = work

    def _wait(self, work: dist.Work) -> None:
        try:
            work.wait()
        except RuntimeError as error:
            self.error = error
        finally:
            self.finished.set()

    def done(self) -> bool:
        return self.finished.is_set() if self.work is None else bool(self.work.is_completed())

    def result(self, timeout: datetime.timedelta, what: str, me: int) -> None:
        """Wait up to ``timeout``; a failure or a timeout raises RuntimeError saying ``what`` was waited for."""
        if self.work is not None:
            try:
                self.work.wait(timeout)
                return
            except RuntimeError as error:
                self.error = error
        elif self.finished.wait(timeout.total_seconds()) and self.error is None:
            return
        reason = "timed out" if self.error is None else f"failed: {self.error}"
        raise RuntimeError(f"rank {me}: {what} {reason} (waited up to {timeout.total_seconds():g} s; did every rank "
                           f"call the op with matching arguments?)") from self.error


class Link:
    """The messages between this rank and one peer in one pass."""

    def __init__(self, group: dist.ProcessGroup, me: int, peer: int, messages: Sequence[Message], *,
                 shape: tuple[int, int], dtype: torch.dtype, device: torch.device, timeout: datetime.timedelta,
                 tag_base: int) -> None:
        self.group, self.me, self.peer, self.messages = group, me, peer, list(messages)
        self.shape, self.dtype, self.device, self.timeout, self.tag_base = shape, dtype, device, timeout, tag_base
        self.issued = 0
        self.posted: dict[str, tuple[_Pending, Tensor]] = {}
        self.sends: list[_Pending] = []
        """Sends not yet known to be complete (a send's tensor is freed as soon as its waiting thread ends)."""

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
            self.posted[message.name] = (_Pending(work, self.device), buffer)
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
        self.prune()
        self.sends.append(_Pending(work, self.device))
        self.issued += 1

    def recv(self, name: str, *, traced: bool = True) -> Tensor:
        """Wait for message ``name`` (posting it, and any receive before it, first) and return it. ``traced``:
        record the wait in ``TRACE`` (an inbox records it where the program needs the merged result instead)."""
        if name not in self.posted:
            index = self._index(name)
            if index < self.issued:
                raise RuntimeError(f"rank {self.me} receives {name!r} from rank {self.peer} twice")
            self._post_receives_before(index + 1)
        if TRACE is not None and traced:
            self.trace_recv(name)
        pending, buffer = self.posted.pop(name)
        pending.result(self.timeout, f"receiving {name!r} from rank {self.peer}", self.me)
        self.prune()
        return buffer

    def trace_recv(self, name: str) -> None:
        if TRACE is not None:
            TRACE.append(("recv", self.peer, self.me, self.tag_base + self._index(name), time.thread_time()))

    def post_if_next(self, name: str) -> None:
        """Post the receive of ``name`` if it is the next operation of the agreed order (never ahead of an earlier
        receive the program has not asked for yet, whose buffer it would allocate early)."""
        if self.issued < len(self.messages) and self.messages[self.issued].name == name and \
                self.messages[self.issued].dst == self.me:
            self._post_receives_before(self.issued + 1)

    def arrived(self, name: str) -> bool:
        """Whether the receive of ``name`` is posted and complete (no wait)."""
        return name in self.posted and self.posted[name][0].done()

    def prune(self) -> None:
        """Drop the sends the peer has taken, freeing their tensors (a failed one raises here)."""
        for pending in self.sends:
            if pending.done():
                pending.result(self.timeout, f"sending to rank {self.peer}", self.me)
        self.sends = [pending for pending in self.sends if not pending.done()]

    def finish(self) -> None:
        """Wait until every send has been taken by the peer (their buffers may be reused after this)."""
        if self.posted or self.issued < len(self.messages):
            missing = [m.name for m in self.messages[self.issued:]] + list(self.posted)
            raise RuntimeError(f"rank {self.me}'s link with rank {self.peer} ends with messages not handled: "
                               f"{missing}")
        for pending in self.sends:
            pending.result(self.timeout, f"sending to rank {self.peer}", self.me)
        self.sends.clear()


@dataclass
class _Expected:
    """A message the program merges into a running result as soon as it has arrived."""

    peer: int
    name: str
    merge: Callable[[Tensor], object]
    merged: bool = False


class Links:
    """This rank's links with every peer it exchanges messages with in one pass, and its inbox."""

    def __init__(self, links: dict[int, Link]) -> None:
        self.links = links
        self.inbox: list[_Expected] = []

    def __getitem__(self, peer: int) -> Link:
        return self.links[peer]

    def __contains__(self, peer: int) -> bool:
        return peer in self.links

    def expect(self, peer: int, name: str, merge: Callable[[Tensor], object]) -> None:
        """Message ``name`` from ``peer`` goes to ``merge`` (which must not keep it) once it has arrived; messages
        are merged in the order they were expected, whatever order they arrive in."""
        self.inbox.append(_Expected(peer, name, merge))

    def tick(self) -> None:
        """Between blocks of work: drop completed sends, post the expected receives the agreed order allows, and
        merge the expected messages that have arrived, in order (stopping at the first one still missing)."""
        for link in self.links.values():
            link.prune()
        pending = [item for item in self.inbox if not item.merged]
        for item in pending:
            self.links[item.peer].post_if_next(item.name)
        for item in pending:
            link = self.links[item.peer]
            if not link.arrived(item.name):
                break
            item.merge(link.recv(item.name, traced=False))
            item.merged = True

    def drain(self) -> None:
        """Wait for and merge every expected message not merged yet, in order (the point where the program needs
        their merged result; ``TRACE`` records the early-merged ones here too)."""
        for item in self.inbox:
            link = self.links[item.peer]
            if item.merged:
                link.trace_recv(item.name)
            else:
                item.merge(link.recv(item.name))
                item.merged = True
        self.inbox.clear()

    def finish(self) -> None:
        if self.inbox:
            raise RuntimeError(f"the pass ends with expected messages not merged: {[i.name for i in self.inbox]}")
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
