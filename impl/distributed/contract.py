"""The contract every rank checks before any data moves: an initialised group, valid local input, and inputs that
agree across ranks (B, H, K, V, dtype, options), settled by one all-gather so that every rank raises the same
clear error, never a hang.

Each rank validates its own shard with impl's checks; the outcome (an error class and message, or the shard's
sizes and options) is encoded in a fixed-size byte vector and all-gathered with a timeout. Then every rank sees
every rank's outcome and raises identically: the rank whose input failed re-raises its own error, the others
raise ``ValueError`` quoting it; a mismatch across ranks raises ``ValueError`` naming the field and the ranks.
"""

from __future__ import annotations

import datetime
import math
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["Comm", "agree", "check_device", "resolve"]

_MESSAGE_BYTES = 480
_ERRORS: tuple[type[Exception], ...] = (TypeError, ValueError, RuntimeError)


@dataclass(frozen=True)
class Comm:
    """The process group an op runs on, this rank's place in it, the wait limit, and the messages' device."""

    group: dist.ProcessGroup
    rank: int
    world: int
    timeout: datetime.timedelta
    device: torch.device


def _group_timeout(group: dist.ProcessGroup, backend: str) -> datetime.timedelta:
    """The group's own timeout (set by ``init_process_group(timeout=...)``) when torch exposes it."""
    try:
        device = torch.device("cuda" if backend == "nccl" else "cpu")
        timeout = group._get_backend(device).options._timeout
        if isinstance(timeout, datetime.timedelta) and timeout.total_seconds() > 0:
            return timeout
    except (AttributeError, RuntimeError):
        pass
    return dist.default_pg_timeout


def resolve(group: dist.ProcessGroup | None, timeout: datetime.timedelta | float | None, op: str) -> Comm:
    """The group (default: the default group) and the timeout (default: the group's own). Local checks only.

    Raises:
        RuntimeError: torch.distributed is unavailable or no process group is initialised.
        ValueError: this process is not a member of ``group``; a non-positive timeout.
        TypeError: ``group`` or ``timeout`` of the wrong kind.
    """
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(f"{op} needs an initialised process group: call torch.distributed.init_process_group "
                           f"(gloo for CPU tensors, nccl for CUDA tensors) on every rank first")
    if group is not None and not isinstance(group, dist.ProcessGroup):
        raise TypeError(f"group must be None (the default group) or a torch.distributed.ProcessGroup, got "
                        f"{type(group).__name__}")
    resolved = dist.group.WORLD if group is None else group
    assert resolved is not None
    rank = dist.get_rank(resolved)
    if rank < 0:
        raise ValueError(f"this process (global rank {dist.get_rank()}) is not a member of the given group")
    backend = str(dist.get_backend(resolved))
    if timeout is None:
        limit = _group_timeout(resolved, backend)
    elif isinstance(timeout, datetime.timedelta):
        limit = timeout
    elif isinstance(timeout, int | float) and not isinstance(timeout, bool):
        limit = datetime.timedelta(seconds=float(timeout))
    else:
        raise TypeError(f"timeout must be None, seconds (a number) or a datetime.timedelta, got "
                        f"{type(timeout).__name__}")
    if not limit.total_seconds() > 0:
        raise ValueError(f"timeout must be positive, got {limit.total_seconds()} s")
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    return Comm(resolved, rank, dist.get_world_size(resolved), limit, device)


def check_device(device: torch.device, comm: Comm) -> None:
    """The inputs' device suits the group's backend: CPU tensors for gloo, CUDA tensors for NCCL."""
    backend = str(dist.get_backend(comm.group))
    if backend == "gloo" and device.type != "cpu":
        raise ValueError(f"the gloo backend needs CPU tensors, got tensors on {device}")
    if backend == "nccl" and device.type != "cuda":
        raise ValueError(f"the nccl backend needs CUDA tensors, got tensors on {device}")


def _encode(fields: Sequence[float], error: Exception | None) -> torch.Tensor:
    status = 0 if error is None else 1 + next(i for i, cls in enumerate(_ERRORS) if isinstance(error, cls))
    text = b"" if error is None else str(error).encode()[:_MESSAGE_BYTES]
    packed = struct.pack(f"<{1 + len(fields)}d", float(status), *fields) + text.ljust(_MESSAGE_BYTES, b"\0")
    return torch.frombuffer(bytearray(packed), dtype=torch.uint8)


def _decode(row: torch.Tensor, count: int) -> tuple[int, list[float], str]:
    raw = bytes(row.cpu().tolist())
    status, *fields = struct.unpack_from(f"<{1 + count}d", raw)
    text = raw[8 * (1 + count):].rstrip(b"\0").decode(errors="replace")
    return int(status), list(fields), text


def agree(comm: Comm, op: str, names: Sequence[str], check: Callable[[], Sequence[float]],
          same: Sequence[str], labels: Mapping[str, Sequence[str]] | None = None) -> list[dict[str, float]]:
    """Run the local ``check`` (returns this rank's values of ``names``), all-gather every rank's outcome, and
    raise on every rank if any rank's check failed or a field in ``same`` differs between ranks.

    Returns each rank's fields (index = rank). NaN compares equal to NaN (an option left at None). ``labels``
    names the values of index-coded fields in messages (e.g. the kernel).
    """
    error: Exception | None = None
    fields: Sequence[float] = [0.0] * len(names)
    try:
        fields = check()
    except _ERRORS as caught:
        error = caught
    mine = _encode(fields, error).to(comm.device)
    gathered = [torch.empty_like(mine) for _ in range(comm.world)]
    work = dist.all_gather(gathered, mine, group=comm.group, async_op=True)
    assert work is not None
    try:
        work.wait(comm.timeout)
    except RuntimeError as failure:
        raise RuntimeError(f"rank {comm.rank}: {op} timed out after {comm.timeout.total_seconds():g} s (or failed) "
                           f"while the ranks compared their inputs: did every rank of the group call {op}? "
                           f"({failure})") from failure
    outcomes = [_decode(row, len(names)) for row in gathered]
    for rank, (status, _, text) in enumerate(outcomes):
        if status:
            if rank == comm.rank and error is not None:
                raise error
            raise ValueError(f"{op}: rank {rank} rejected its input ({_ERRORS[status - 1].__name__}: {text})")
    values = [dict(zip(names, row, strict=True)) for _, row, _ in outcomes]
    for name in same:
        seen = [v[name] for v in values]
        if any(not _equal(x, seen[0]) for x in seen):
            names_of = (labels or {}).get(name)
            listing = ", ".join(f"rank {rank}: {names_of[int(x)] if names_of else _show(x)}"
                                for rank, x in enumerate(seen))
            raise ValueError(f"{op}: {name} must be the same on every rank, got {listing}")
    return values


def _equal(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _show(x: float) -> str:
    return "None" if math.isnan(x) else (str(int(x)) if x == int(x) else repr(x))
