"""The delta rule (DeltaNet) with the sequence split across ranks; same contract as ``impl.delta_rule``.

Each rank runs impl's chunked delta rule on its shard once, from the state [0, I] with values [v, 0], which gives
its zero-state output and final state and its transition at once (``state_carry``); then the states are carried
from rank to rank (R - 1 small messages) and each rank adds the entering state's contribution to its output.
"""

from __future__ import annotations

import datetime
import math
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

import impl
from impl import _validate
from impl.delta_rule import RecurrentOutput, check_recurrent
from impl.distributed import contract, schedule
from impl.distributed.schedule import Plan
from impl.distributed.state_carry import CarrySetup, StateCarry
from impl.torch_ops._common import compute_dtype

__all__ = ["delta_rule"]

OP = "impl.distributed.delta_rule"
_FIELDS = ("B", "T", "H", "K", "V", "dtype", "scale", "chunk_size", "gradient tracking")
_SAME = ("B", "H", "K", "V", "dtype", "scale", "chunk_size", "gradient tracking")
_LABELS = {"dtype": [str(d) for d in _validate.FLOAT_DTYPES], "gradient tracking": ["off", "on"]}


def delta_rule(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, *, group: dist.ProcessGroup | None = None,
               scale: float | None = None, initial_state: Tensor | None = None, output_final_state: bool = False,
               chunk_size: int | None = None, timeout: datetime.timedelta | float | None = None) -> RecurrentOutput:
    """DeltaNet on this rank's contiguous shard: q, k [B, T_r, H, K], v [B, T_r, H, V], beta [B, T_r, H] ->
    (o [B, T_r, H, V], final_state [B, H, K, V] on the last rank, None on the others).

    The shards, concatenated in rank order, are one sequence per batch row: the result equals ``impl.delta_rule``
    on it. ``initial_state`` [B, H, K, V] is read on the first rank (the others must pass None). Every rank of
    ``group`` must call it with the same B, H, K, V, dtype, ``scale`` and ``chunk_size``, and all or none of them
    tracking gradients. Packed sequences (``cu_seqlens``) are not supported. Timeouts and errors as
    ``impl.distributed.deltaformer_attn``.
    """
    comm = contract.resolve(group, timeout, OP)
    tracked = torch.is_grad_enabled() and any(isinstance(x, Tensor) and x.requires_grad
                                              for x in (q, k, v, beta, initial_state))
    checked: dict[str, Any] = {}

    def check() -> list[float]:
        qt, kt, vt, bt, resolved, state, flag, chunk, _ = check_recurrent(
            q, k, v, beta, scale, initial_state, output_final_state, chunk_size, None)
        if bt is None:
            raise TypeError("beta must be a torch.Tensor [B, T, H], got NoneType")
        if state is not None and comm.rank > 0:
            raise ValueError(f"initial_state is read on the first rank only; rank {comm.rank} got one (pass None on "
                             f"ranks > 0)")
        contract.check_device(qt.device, comm)
        checked.update(q=qt, k=kt, v=vt, beta=bt, scale=resolved, state=state, flag=flag, chunk=chunk)
        B, T, H, K = qt.shape
        return [B, T, H, K, vt.shape[-1], _validate.FLOAT_DTYPES.index(qt.dtype),
                math.nan if scale is None else resolved, 0 if chunk is None else chunk, float(tracked)]

    fields = contract.agree(comm, OP, _FIELDS, check, _SAME, _LABELS)
    qt, kt, vt, bt = checked["q"], checked["k"], checked["v"], checked["beta"]
    B, L, H, K = qt.shape
    V = vt.shape[-1]
    options = {"scale": checked["scale"], "output_final_state": True, "chunk_size": checked["chunk"]}
    dtype = compute_dtype(vt.dtype)
    if comm.rank == 0:
        o0, state = impl.delta_rule(qt, kt, vt, bt, initial_state=checked["state"], **options)
        assert state is not None
        parts: tuple[Tensor, Tensor | None, Tensor | None, Tensor] = (o0.to(dtype), None, None, state.to(dtype))
    else:
        zeros = torch.zeros(B, L, H, K, dtype=vt.dtype, device=vt.device)
        start = torch.cat([torch.zeros(B, H, K, V, dtype=vt.dtype, device=vt.device),
                           torch.eye(K, dtype=vt.dtype, device=vt.device).expand(B, H, K, K)], dim=-1)
        o_both, state_both = impl.delta_rule(qt, kt, torch.cat([vt, zeros], dim=-1), bt, initial_state=start,
                                             **options)
        assert state_both is not None
        parts = (o_both[..., :V].to(dtype), o_both[..., V:].to(dtype), state_both[..., V:].to(dtype),
                 state_both[..., :V].to(dtype))
    setup = CarrySetup(comm, Plan(tuple(int(f["T"]) for f in fields), schedule.SPLITS), K, V)
    o, final = StateCarry.apply(*parts, setup)  # type: ignore[no-untyped-call]
    last = comm.rank == comm.world - 1
    return RecurrentOutput(o.to(vt.dtype), final.to(vt.dtype) if last and checked["flag"] else None)
