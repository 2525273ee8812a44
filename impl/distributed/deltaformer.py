"""DeltaFormer attention with the sequence split across ranks (context parallelism); same semantics as
``impl.deltaformer_attn``.

Forward of rank r (``docs/context_parallel.md`` has the timeline and cost model):

1. send the rows that earlier ranks compute for it (``prefix_fold.send_fold_rows``, ``ring_readout.send_readout_rows``);
2. fold every earlier shard's (k, u) into its rows' prefix as each arrives (``prefix_fold.fold_earlier``);
3. solve its shard with impl's chunked u-stage, the prefix merged into every chunk;
4. send (k_r, u_r) to the later ranks, fold its share of rank r + 1's rows, read out its share of every later
   shard's rows over (k_r, u_r) (``ring_readout.readout_for_later``);
5. read out its own rows: the diagonal block, its own shares, and the partial outputs the key owners sent.

Backward (a custom autograd Function issuing its own messages in the plan's order, never autograd-driven
collectives): read-out backward first (every block is independent once o and lse are known, so dL/du of every
shard is assembled without waiting for any solve), then the write pass in reverse rank order.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from impl import _validate, _write_kernels
from impl.distributed import contract, prefix_fold, ring_readout, schedule
from impl.distributed.links import Links, open_links, send_keys
from impl.distributed.schedule import Message, Plan, backward_messages, forward_messages
from impl.torch_ops._common import compute_dtype, from_bhtd, over_head_groups, to_bhtd
from impl.torch_ops.deltaformer import _flash_path, _u_backward, _u_forward, default_chunk_size

__all__ = ["deltaformer_attn"]

OP = "impl.distributed.deltaformer_attn"
_FIELDS = ("B", "T", "H", "K", "V", "dtype", "kernel", "write", "scale", "chunk_size", "gradient tracking")
_SAME = ("B", "H", "K", "V", "dtype", "kernel", "write", "scale", "chunk_size", "gradient tracking")
_LABELS = {"dtype": [str(d) for d in _validate.FLOAT_DTYPES], "kernel": list(_write_kernels.NAMES),
           "write": list(_write_kernels.WRITES), "gradient tracking": ["off", "on"]}
_FORWARD_TAGS, _BACKWARD_TAGS = 0, 64


@dataclass(frozen=True)
class _Setup:
    comm: contract.Comm
    plan: Plan
    write: str
    kernel: str
    write_scale: float
    read_scale: float
    chunk_size: int
    flash: bool = False
    """impl's chunk algorithm for this rank's shard (``_flash_path``), decided once for forward and backward."""


def _local_u(setup: _Setup, w: Tensor, k: Tensor, v: Tensor, beta: Tensor,
             prefix: tuple[Tensor, Tensor | None] | None, for_backward: bool) -> tuple[Tensor, Tensor | None,
                                                                                       Tensor | None]:
    """impl's chunked u-stage on this shard, the earlier shards' prefix merged into every chunk."""
    run = partial(_u_forward, kernel=setup.kernel, scale=setup.write_scale, chunk_size=setup.chunk_size,
                  for_backward=for_backward, flash=setup.flash)
    if prefix is None:
        u, r_w, lse_w = over_head_groups(run, w, k, v, beta)
    else:
        u, r_w, lse_w = over_head_groups(lambda w_, k_, v_, b_, a_, l_: run(w_, k_, v_, b_, prefix=(a_, l_)),
                                         w, k, v, beta, prefix[0], prefix[1])
    assert u is not None
    return u, r_w, lse_w


def _open(setup: _Setup, q: Tensor, V: int, messages: Callable[..., list[Message]], tag_base: int) -> Links:
    """This rank's links for one pass of ``setup``'s call ([B, H, L, K] rows q, V value columns)."""
    B, H, _, K = q.shape
    return open_links(setup.comm, setup.plan, partial(messages, K=K, V=V), shape=(B, H), dtype=q.dtype,
                      tag_base=tag_base)


def _send_keys_to_later(links: Links, plan: Plan, r: int, k: Tensor, u: Tensor, kinds: tuple[str, ...]) -> None:
    """(k_r, u_r) to every later rank that computes rows of these kinds over them."""
    for later in range(r + 1, plan.world):
        if plan.key_data_needed(later, r, kinds):
            send_keys(links[later], k, u)


def _forward(setup: _Setup, q: Tensor, k: Tensor, v: Tensor, beta: Tensor,
             for_backward: bool) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
    """(o, lse_o, u, r_w, lse_w) of this rank's shard; [B, H, L, *] in the compute dtype."""
    plan, r = setup.plan, setup.comm.rank
    w = q if setup.write == "q" else k
    links = _open(setup, q, v.shape[-1], forward_messages, _FORWARD_TAGS)
    prefix_fold.send_fold_rows(links, plan, r, w)
    ring_readout.send_readout_rows(links, plan, r, q)
    prefix, kept = prefix_fold.fold_earlier(links, plan, r, w, v, kernel=setup.kernel, scale=setup.write_scale)
    u, r_w, lse_w = _local_u(setup, w, k, v, beta, prefix, for_backward)
    _send_keys_to_later(links, plan, r, k, u, ("fold", "readout"))
    prefix_fold.help_later_folds(links, plan, r, k, u, kernel=setup.kernel, scale=setup.write_scale)
    ring_readout.readout_for_later(links, plan, r, k, u, scale=setup.read_scale)
    o, lse_o = ring_readout.readout_own_rows(links, plan, r, q, k, u, kept, scale=setup.read_scale)
    links.finish()
    return o, lse_o, u, r_w, lse_w


def _backward(setup: _Setup, d_o: Tensor, q: Tensor, k: Tensor, beta: Tensor, u: Tensor, r_w: Tensor,
              lse_w: Tensor | None, o: Tensor, lse_o: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(dq, dk, dv, dbeta) of this rank's shard."""
    plan, r = setup.plan, setup.comm.rank
    w = q if setup.write == "q" else k
    links = _open(setup, q, u.shape[-1], backward_messages, _BACKWARD_TAGS)
    ring_readout.send_readout_grad_rows(links, plan, r, q, d_o, o, lse_o)
    _send_keys_to_later(links, plan, r, k, u, ("readout_grad", "cross_grad"))
    dq, dk, g = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(u)
    ring_readout.readout_grad_for_later(links, plan, r, k, u, dk, g, scale=setup.read_scale)
    kept = ring_readout.readout_grad_own_rows(links, plan, r, q, k, u, d_o, o, lse_o, dq, dk, g,
                                              scale=setup.read_scale)
    ring_readout.receive_readout_key_grads(links, plan, r, dk, g)
    prefix_fold.receive_cross_grads(links, plan, r, k, u, dk, g, w_dim=q.shape[-1], kernel=setup.kernel,
                                    scale=setup.write_scale)
    dw, dk_local, dv, dbeta = over_head_groups(
        partial(_u_backward, kernel=setup.kernel, scale=setup.write_scale, chunk_size=setup.chunk_size,
                flash=setup.flash),
        g, w, k, u, beta, r_w, lse_w)
    assert dw is not None and dk_local is not None and dv is not None and dbeta is not None
    prefix_fold.cross_grads_as_row_owner(links, plan, r, w, -beta[..., None] * dv, r_w, lse_w, kept, dw,
                                         kernel=setup.kernel, scale=setup.write_scale)
    ring_readout.receive_readout_dq(links, plan, r, dq)
    links.finish()
    dk += dk_local
    if setup.write == "q":
        dq += dw
    else:
        dk += dw
    return dq, dk, dv, dbeta


class _DistributedDeltaFormer(torch.autograd.Function):
    """o of this rank's shard; the backward exchanges its own messages (in the plan's order) with the other ranks."""

    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, v: Tensor, beta: Tensor, setup: _Setup) -> Tensor:
        o, lse_o, u, r_w, lse_w = _forward(setup, q, k, v, beta, for_backward=True)
        ctx.save_for_backward(q, k, beta, u, r_w, lse_w, o, lse_o)
        ctx.setup = setup
        return o

    @staticmethod
    def backward(ctx: Any, d_o: Tensor) -> tuple[Tensor | None, ...]:
        q, k, beta, u, r_w, lse_w, o, lse_o = ctx.saved_tensors
        dq, dk, dv, dbeta = _backward(ctx.setup, d_o.contiguous(), q, k, beta, u, r_w, lse_w, o, lse_o)
        return dq, dk, dv, dbeta, None


def deltaformer_attn(q: Tensor, k: Tensor, v: Tensor, beta: Tensor | None = None, *,
                     group: dist.ProcessGroup | None = None, write: str = "k", kernel: str = "softmax",
                     scale: float | None = None, chunk_size: int | None = None,
                     timeout: datetime.timedelta | float | None = None) -> Tensor:
    """DeltaFormer attention of this rank's contiguous shard of the sequence: q, k [B, T_r, H, K], v [B, T_r, H, V],
    beta [B, T_r, H] or None -> o [B, T_r, H, V], this shard's rows of ``impl.deltaformer_attn`` on the whole
    sequence (shards concatenated in rank order; T_r >= 1 may differ between ranks).

    Every rank of ``group`` (default: the default group) must call it with the same B, H, K, V, dtype, ``write``,
    ``kernel``, ``scale`` and ``chunk_size`` (the triangular-solve block inside each shard; None: impl's default for
    the device), and, if gradients are tracked on one rank, on all of them (then every rank must backpropagate
    through its output). Differentiable; the backward communicates too. gloo needs CPU tensors, NCCL CUDA tensors.
    Every wait is limited by ``timeout`` (None: the group's timeout; a number is seconds).

    Raises (on every rank, after one all-gather of the ranks' validation results):
        RuntimeError: no initialised process group; a timeout (a rank did not call the op, or died).
        TypeError, ValueError: as ``impl.deltaformer_attn`` for this rank's input (re-raised on that rank; the
            others raise ValueError quoting it), or the ranks disagree on a size or option (ValueError).
    """
    comm = contract.resolve(group, timeout, OP)
    tracked = torch.is_grad_enabled() and any(isinstance(x, Tensor) and x.requires_grad for x in (q, k, v, beta))
    checked: dict[str, Any] = {}

    def check() -> list[float]:
        write_ = _validate.check_choice("write", write, _write_kernels.WRITES)
        kernel_ = _validate.check_choice("kernel", kernel, _write_kernels.NAMES)
        qt, kt, vt, bt = _validate.check_qkv(q, k, v, beta)
        given = _validate.check_scale(scale)
        chunk = _validate.check_chunk_size(chunk_size)
        contract.check_device(qt.device, comm)
        checked.update(q=qt, k=kt, v=vt, beta=bt, scale=given,
                       chunk=default_chunk_size(qt.device) if chunk is None else chunk)
        B, T, H, K = qt.shape
        return [B, T, H, K, vt.shape[-1], _validate.FLOAT_DTYPES.index(qt.dtype), _write_kernels.NAMES.index(kernel_),
                _write_kernels.WRITES.index(write_), math.nan if given is None else given,
                0 if chunk is None else chunk, float(tracked)]

    fields = contract.agree(comm, OP, _FIELDS, check, _SAME, _LABELS)
    qt, kt, vt, bt = checked["q"], checked["k"], checked["v"], checked["beta"]
    write_scale, read_scale = _write_kernels.resolve_scales(kernel, qt.shape[-1], checked["scale"])
    dtype = compute_dtype(vt.dtype)
    bt = torch.ones(qt.shape[:3], dtype=qt.dtype, device=qt.device) if bt is None else bt
    qb, kb, vb, bb = (to_bhtd(x, dtype) for x in (qt, kt, vt, bt))
    flash = _flash_path((qb if write == "q" else kb).detach(), kb.detach(), vb, kernel, write_scale)
    setup = _Setup(comm, Plan(tuple(int(f["T"]) for f in fields), schedule.SPLITS), write, kernel, write_scale,
                   read_scale, checked["chunk"], flash)
    if tracked:
        o: Tensor = _DistributedDeltaFormer.apply(qb, kb, vb, bb, setup)  # type: ignore[no-untyped-call]
    else:
        with torch.no_grad():
            o = _forward(setup, qb, kb, vb, bb, for_backward=False)[0]
    return from_bhtd(o, vt.dtype)

