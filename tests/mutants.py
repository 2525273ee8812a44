"""Mutants for the harness: small, self-contained chunked kernels with the public impl signatures, each with one
injected bug from a class the harness must catch (issue 11), plus correct kernels that must pass in every dtype.

Self-contained on purpose (they do not patch ``impl``): a mutant that broke because impl's internals changed would
crash, and a crash is "caught" for a meaningless reason. Each bug is a flag of one readable reference:

- ``varlen_keys`` / ``varlen_readout`` / ``varlen_state``: packed sequences see earlier sequences' keys (in the
  write, in the read-out) or state;
- ``future_max`` / ``future_max_all``: the softmax shifted by the maximum of the whole score row, future keys
  included (those of the chunk's block / of the whole sequence), instead of the causal maximum;
- ``unwritten_tail`` / ``unwritten_out``: rows of the last partial chunk left unwritten (of u / of o), the buffer
  from ``torch.empty``;
- ``dv_zero`` / ``dv_unwritten``: a backward that drops dv for the first T % C rows of each sequence (zeroed / left
  unwritten);
- ``residual_rounded`` / ``acc_rounded``: with fp16/bf16 inputs, beta * acc (resp. acc) rounded to the input dtype
  before the subtraction v - beta * acc (the delta rule: K S rounded before V - K S).
"""

from __future__ import annotations

import itertools
import math
from functools import partial
from typing import Any

import torch
from torch import Tensor

import impl

__all__ = ["CORRECT", "MUTANTS", "POLICIES", "float64_inside", "reference"]


def _compute(dtype: torch.dtype, bug: str | None) -> torch.dtype:
    if bug in ("float64", "compute_float32", "compute_bfloat16"):
        return {"float64": torch.float64, "compute_float32": torch.float32, "compute_bfloat16": torch.bfloat16}[bug]
    return torch.promote_types(dtype, torch.float32)


def _low(x: Tensor, dtype: torch.dtype) -> Tensor:
    """x rounded to the (input) dtype and back: a no-op unless the input dtype is narrower."""
    return x.to(dtype).to(x.dtype)


class _DropRows(torch.autograd.Function):
    """Identity forward; backward drops the gradient of the first ``n`` rows (dim -2), zeroed or left unwritten."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, n: int, unwritten: bool) -> Tensor:
        ctx.n, ctx.unwritten = n, unwritten
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None]:
        out = torch.empty_like(grad) if ctx.unwritten else torch.zeros_like(grad)
        out[..., ctx.n:, :] = grad[..., ctx.n:, :]
        return out, None, None


def _t(x: Tensor) -> Tensor:
    return x.transpose(-1, -2)


def _normalised(e: Tensor) -> Tensor:
    total = e.sum(-1, keepdim=True)
    return e / torch.where(total > 0, total, torch.ones_like(total))


def _kappa(scores: Tensor, mask: Tensor, kernel: str, bug: str | None) -> Tensor:
    """kappa_1 of a [..., T_c, e] score block, 0 where ``mask`` (not strictly earlier)."""
    if kernel == "softmax":
        masked = scores.masked_fill(mask, -math.inf)
        if bug == "future_max":
            shift = scores.amax(-1, keepdim=True)  # the whole row of the block, future keys included
        else:  # the causal maximum; 0 for a row without earlier keys
            shift = masked.amax(-1, keepdim=True)
            shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
        return _normalised(torch.exp(masked - shift))
    if kernel == "exp":
        return torch.exp(scores).masked_fill(mask, 0.0)
    if kernel == "linear":
        return scores.masked_fill(mask, 0.0)
    return torch.round(scores).masked_fill(mask, 0.0)


def _u(w: Tensor, k: Tensor, v: Tensor, beta: Tensor, kernel: str, scale: float, C: int, in_dtype: torch.dtype,
       bug: str | None) -> Tensor:
    """One sequence, all heads: w, k [..., T, K], v [..., T, V], beta [..., T] -> u [..., T, V] by chunks (DF.4)."""
    T = w.shape[-2]
    parts: list[Tensor] = []
    stop = T - T % C if bug == "unwritten_tail" and T % C else T
    whole = (w @ _t(k)) * scale if bug == "future_max_all" else None
    for s in range(0, stop, C):
        e = min(s + C, T)
        scores = (w[..., s:e, :] @ _t(k[..., :e, :])) * scale
        mask = torch.arange(e)[None, :] >= torch.arange(s, e)[:, None]
        if whole is not None:  # shifted by the maximum over every key of the sequence
            shift = whole[..., s:e, :].amax(-1, keepdim=True)
            P = _normalised(torch.exp(scores - shift).masked_fill(mask, 0.0))
        else:
            P = _kappa(scores, mask, kernel, bug)
        acc = P[..., :s] @ torch.cat(parts, dim=-2) if parts else torch.zeros_like(v[..., s:e, :])
        beta_c = beta[..., s:e, None]
        if bug == "residual_rounded":
            rhs = v[..., s:e, :] - _low(beta_c * acc, in_dtype)
        elif bug == "acc_rounded":
            rhs = v[..., s:e, :] - beta_c * _low(acc, in_dtype)
        else:
            rhs = v[..., s:e, :] - beta_c * acc
        A = torch.eye(e - s, dtype=v.dtype) + beta_c * P[..., s:]
        u_c = torch.linalg.solve_triangular(A, rhs, upper=False, unitriangular=True)
        parts.append(_low(u_c, in_dtype) if bug == "intermediates_input" else u_c)
    u = torch.empty_like(v)  # rows past ``stop`` stay unwritten under the unwritten_tail bug
    if parts:
        u[..., :stop, :] = torch.cat(parts, dim=-2)
    return u


def _readout(q: Tensor, k: Tensor, u: Tensor, scale: float, C: int, bug: str | None) -> Tensor:
    T = q.shape[-2]
    scores = (q @ _t(k)) * scale
    causal = torch.ones(T, T, dtype=torch.bool).triu(1)
    if bug == "future_max":  # softmax attention shifted by the whole row's maximum, future keys included
        o = _normalised(torch.exp(scores - scores.amax(-1, keepdim=True)).masked_fill(causal, 0.0)) @ u
    else:
        o = torch.softmax(scores.masked_fill(causal, -math.inf), dim=-1) @ u
    if bug == "unwritten_out" and T % C:
        out = torch.empty_like(o)
        out[..., :T - T % C, :] = o[..., :T - T % C, :]
        return out
    return o


def _segments(cu_seqlens: Tensor | None, T: int) -> list[tuple[int, int]]:
    if cu_seqlens is None:
        return [(0, T)]
    bounds = [int(c) for c in cu_seqlens.tolist()]
    return list(itertools.pairwise(bounds))


def _dv(v: Tensor, C: int, bug: str | None) -> Tensor:
    """v of one sequence ([..., T, V]) with the dv-dropping backward bugs attached."""
    n = v.shape[-2] % C
    if bug in ("dv_zero", "dv_unwritten") and n and v.shape[-2] > C:
        return _DropRows.apply(v, n, bug == "dv_unwritten")  # type: ignore[no-untyped-call,no-any-return]
    return v


def reference(q: Tensor, k: Tensor, v: Tensor, beta: Tensor | None = None, *, op: str = "deltaformer_attn",
              write: str = "k", kernel: str = "softmax", scale: float | None = None, chunk_size: int = 64,
              cu_seqlens: Tensor | None = None, initial_state: Tensor | None = None, output_final_state: bool = False,
              bug: str | None = None) -> Any:
    """The reference of ``op`` ("deltaformer_attn", "deltaformer_u" (q is w), "softmax_attn", "delta_rule") with
    the injected ``bug`` (None: correct; "float64": correct, computed in float64 whatever the input dtype)."""
    B, T, H, K = q.shape
    dtype = q.dtype
    cd = _compute(dtype, bug)
    C = chunk_size
    write_scale = (1.0 if kernel in ("linear", "round") else 1.0 / math.sqrt(K)) if scale is None else scale
    read_scale = 1.0 / math.sqrt(K) if scale is None else scale
    beta = torch.ones(B, T, H, dtype=dtype) if beta is None else beta
    x = {name: t.to(cd).transpose(1, 2) for name, t in (("q", q), ("k", k), ("v", v), ("beta", beta))}
    segments = _segments(cu_seqlens, T)
    if op == "delta_rule":
        return _delta_rule(x, read_scale, C, segments, initial_state, output_final_state, dtype, bug)
    pieces = []
    for start, end in segments:
        part = {name: t[:, :, start:end] for name, t in x.items()}
        v_s = _dv(part["v"], C, bug)
        if op == "softmax_attn" and bug == "varlen_keys" and start > 0:  # the leak: earlier sequences' keys
            values = torch.cat([x["v"][:, :, :start], v_s], dim=2)
            pieces.append(_readout(x["q"][:, :, :end], x["k"][:, :, :end], values, read_scale, C, None)[:, :, start:])
            continue
        if op == "softmax_attn":
            pieces.append(_readout(part["q"], part["k"], v_s, read_scale, C, bug))
            continue
        first = 0 if bug == "varlen_keys" else start  # the leak: earlier sequences' keys and values join the write
        w = x["k"] if op == "deltaformer_attn" and write == "k" else x["q"]
        u = _u(w[:, :, first:end], x["k"][:, :, first:end], torch.cat([x["v"][:, :, first:start], v_s], dim=2),
               x["beta"][:, :, first:end], kernel, write_scale, C, dtype, bug)[:, :, start - first:]
        if op == "deltaformer_u":
            pieces.append(u)
        elif bug == "varlen_readout" and start > 0:  # the leak: the read-out sees earlier sequences
            values = torch.cat([x["v"][:, :, :start], u], dim=2)
            pieces.append(_readout(x["q"][:, :, :end], x["k"][:, :, :end], values, read_scale, C, None)[:, :, start:])
        else:
            pieces.append(_readout(part["q"], part["k"], u, read_scale, C, bug))
    return torch.cat(pieces, dim=2).transpose(1, 2).to(dtype)


def _delta_rule(x: dict[str, Tensor], scale: float, C: int, segments: list[tuple[int, int]],
                initial_state: Tensor | None, output_final_state: bool, dtype: torch.dtype,
                bug: str | None) -> tuple[Tensor, Tensor | None]:
    """The chunked WY / UT form of the delta rule on [B, H, T, *], state [.., K, V] (the paper's S transposed)."""
    B, H, _, K = x["q"].shape
    V = x["v"].shape[-1]
    cd = x["q"].dtype
    outputs, finals = [], []
    for n, (start, end) in enumerate(segments):
        rows = slice(n, n + 1) if len(segments) > 1 else slice(None)
        if initial_state is not None:
            state = initial_state[rows].to(cd)
        elif bug == "varlen_state" and finals:
            state = finals[-1]
        else:
            state = torch.zeros(B, H, K, V, dtype=cd)
        q, k, beta = (x[name][:, :, start:end] for name in ("q", "k", "beta"))
        q = q * scale
        v = _dv(x["v"][:, :, start:end], C, bug)
        length = end - start
        rows_out: list[Tensor] = []
        stop = length - length % C if bug == "unwritten_tail" and length % C else length
        for s in range(0, stop, C):
            e = min(s + C, length)
            q_c, k_c, v_c, b_c = q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], beta[:, :, s:e, None]
            A = (b_c * (k_c @ _t(k_c))).tril(-1) + torch.eye(e - s, dtype=cd)
            ks = k_c @ state
            if bug == "residual_rounded":
                ks = _low(ks, dtype)
            U = torch.linalg.solve_triangular(A, b_c * (v_c - ks), upper=False, unitriangular=True)
            rows_out.append(q_c @ state + (q_c @ _t(k_c)).tril() @ U)
            state = state + _t(k_c) @ U
        o = torch.empty(B, H, length, V, dtype=cd)  # rows past ``stop`` stay unwritten under unwritten_tail
        if rows_out:
            o[:, :, :stop] = torch.cat(rows_out, dim=2)
        outputs.append(o)
        finals.append(state)
    final = torch.cat(finals).to(dtype) if output_final_state else None
    return torch.cat(outputs, dim=2).transpose(1, 2).to(dtype), final


def float64_inside(op: str) -> Any:
    """impl.<op> computed in float64 whatever the input dtype, returned in the input dtype (a correct kernel with a
    more accurate policy than the default: it must pass in every dtype)."""
    fn = getattr(impl, op)

    def kernel(*tensors: Tensor, **options: Any) -> Any:
        dtype = tensors[0].dtype
        state = options.get("initial_state")
        if state is not None:
            options["initial_state"] = state.to(torch.float64)
        result = fn(*(t.to(torch.float64) for t in tensors), **options)
        if isinstance(result, tuple):
            return tuple(None if r is None else r.to(dtype) for r in result)
        return result.to(dtype)

    return kernel


_OPS_BUGS = {
    "deltaformer_attn": ("varlen_keys", "varlen_readout", "future_max", "future_max_all", "unwritten_tail",
                         "unwritten_out", "dv_zero", "dv_unwritten", "residual_rounded", "acc_rounded"),
    "deltaformer_u": ("varlen_keys", "future_max", "future_max_all", "unwritten_tail", "dv_zero", "dv_unwritten",
                      "residual_rounded", "acc_rounded"),
    "softmax_attn": ("varlen_keys", "future_max", "unwritten_out", "dv_zero"),
    "delta_rule": ("varlen_state", "unwritten_tail", "dv_zero", "dv_unwritten", "residual_rounded"),
}
LOW_PRECISION_BUGS = ("residual_rounded", "acc_rounded")
"""Bugs that exist only with fp16/bf16 inputs (run with --dtypes float16,bfloat16)."""

MUTANTS: dict[str, Any] = {f"{op}__{bug}": partial(reference, op=op, bug=bug)
                           for op, bugs in _OPS_BUGS.items() for bug in bugs}
"""name -> mutant (``tests.mutants:MUTANTS`` is not a CLI target; use ``mutant(name)``)."""
CORRECT: dict[str, Any] = {
    **{f"{op}__reference": partial(reference, op=op) for op in _OPS_BUGS},
    **{f"{op}__float64": partial(reference, op=op, bug="float64") for op in _OPS_BUGS},
    **{f"{op}__impl_float64": float64_inside(op) for op in _OPS_BUGS},
}
"""name -> a correct kernel."""
POLICIES: dict[str, Any] = {f"deltaformer_attn__{policy}": partial(reference, op="deltaformer_attn", bug=policy)
                            for policy in ("compute_float32", "compute_bfloat16", "intermediates_input")}
"""Kernels with another precision policy: fp64 inputs computed in fp32 (correct under --compute-dtype float32), in
bf16 (wrong under any policy), u rounded to the input dtype per chunk (correct under --intermediates input)."""


def __getattr__(name: str) -> Any:
    """``tests.mutants:<op>__<bug>`` works as a CLI target."""
    if name in MUTANTS:
        return MUTANTS[name]
    if name in CORRECT:
        return CORRECT[name]
    if name in POLICIES:
        return POLICIES[name]
    raise AttributeError(name)
