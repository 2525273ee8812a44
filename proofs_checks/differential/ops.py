"""One record per op: everything the harness knows about an op, so adding an op touches this module only.

A record gives the op's public signature (tensor inputs in call order, keyword options, stateful or not), its
float64 spec on one head of one sequence, its float64 torch control (token by token, autograd through it) on one
sequence, and its input regimes (which beta and value regimes apply, unit keys, the scales drawn, the DeltaFormer
write system). The layout work around these per-head functions is generic: ``bridge`` (spec side), ``controls``
(torch side), ``strategies`` (inputs), ``conditioning`` (the write system's condition number).

Layouts: spec side one head, [T, D] arrays, beta [T], state [K, V] (the impl orientation, the paper's S
transposed); control side one sequence, [T, H, D] tensors, beta [T, H], state [H, K, V].
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from spec import deltaformer as spec_df
from spec import precision
from spec import updates as spec_updates
from spec._types import F64, Array

__all__ = ["KERNELS", "OPS", "WRITES", "Op", "ScoreBlock", "WriteHead", "record"]

KERNELS: tuple[str, ...] = spec_df.KERNELS
"""DeltaFormer write kernels kappa_1 (DF.2), as the spec names them."""
WRITES: tuple[str, ...] = ("k", "q")
"""DeltaFormer write vectors: the paper's k-k similarity, the public code's q-k."""

SpecHead = Callable[..., tuple[Array, Array | None]]
"""(inputs of one head {name: [T, D] or [T]}, state [K, V] or None, **options) -> (o [T, V], state or None), in
the number type of the inputs (float64, mpmath, or mpmath.iv intervals: the spec is precision-generic)."""
ControlSequence = Callable[..., tuple[Tensor, Tensor | None]]
"""(inputs of one sequence {name: [T, H, D] or [T, H]}, state [H, K, V] or None, **options) -> (o, state)."""


class WriteHead(NamedTuple):
    """The DeltaFormer write system of one head: (I + diag(beta) P) U = V with P = kappa_1(scale w k^T), strictly
    lower (DF.2, DF.3), and the read-out o = causal_softmax(read_scale q k^T) U (DF.8) when the op has one."""

    w: F64
    k: F64
    beta: F64
    kernel: str
    write_scale: float
    q: F64 | None
    read_scale: float

    def scores(self) -> F64:
        """P [T, T] by the spec (DF.2)."""
        return spec_df.write_scores(self.w, self.k, kernel=self.kernel, scale=self.write_scale)


class ScoreBlock(NamedTuple):
    """Scores scale * left right^T, exponentiated on the causal part: j < t (``strict``) or j <= t."""

    left: F64
    right: F64
    scale: float
    strict: bool


@dataclass(frozen=True)
class Op:
    """What the harness knows about one op; see the module docstring."""

    name: str
    inputs: tuple[str, ...]
    """Tensor arguments in call order (``initial_state`` excluded: it is a keyword of stateful ops)."""
    options: tuple[str, ...]
    """Keyword options drawn besides chunk_size and cu_seqlens, from ("kernel", "write", "scale")."""
    stateful: bool
    """Takes initial_state / output_final_state and returns (o, final_state)."""
    spec: SpecHead
    control: ControlSequence
    beta_regimes: Callable[[str], tuple[str, ...]]
    """kernel -> the beta regimes that keep the op well posed (empty: the op has no beta)."""
    value_regimes: Callable[[str], tuple[str, ...]]
    """kernel -> the value regimes of ``strategies`` that apply ("random", "gap", "cancel")."""
    keys: Callable[[str], str]
    """kernel -> how q, k (and w) are drawn: "normal", "unit" (normalised rows) or "integer" (the round kernel)."""
    scales: Callable[[str, int, int], tuple[float | None, ...]]
    """(kernel, K, p) -> the scale options drawn (None: the op's default); p >= 1 is a drawn integer."""
    write: Callable[..., WriteHead] | None = None
    """(inputs of one head, **options) -> its write system; None for ops without one."""
    exp_scores: Callable[..., list[ScoreBlock]] | None = None
    """(inputs of one head, **options) -> the score blocks the op exponentiates (softmax / exp weights); None when
    it exponentiates none (``conditioning.score_condition``)."""
    residual: Callable[..., F64] | None = None
    """(inputs of one head, state [K, V] or None, r [T, V], **options) -> v such that the op's residual
    (DeltaFormer's u_t = v_t - beta_t sum_j P_tj u_j, the delta rule's v_t - S_{t-1} k_t) equals r (the
    cancellation regime); None when the op has no residual."""


def round_scale(K: int, p: int) -> float:
    """The round kernel's scale p / (2K + 1): an odd denominator, so integer dot products never land on a
    half-integer (2 p n = (2m + 1)(2K + 1) is impossible: even = odd); every score is >= 1 / (2 (2K + 1)) from one.
    """
    return p / (2 * K + 1)


def _read_default(K: int, scale: float | None) -> float:
    return 1.0 / math.sqrt(K) if scale is None else scale


def _read_scale(scale: float | None, like: Array) -> Any:
    """The read-out (query) scale in the number type of ``like`` (spec side): the given one, or 1/sqrt(K) exactly
    (an mpmath value or an interval enclosure when ``like`` holds those)."""
    if scale is None:
        return spec_df.default_scale("softmax", like.shape[-1], like)
    return precision.scalar(scale, like)


def _write_default(kernel: str, K: int, scale: float | None) -> float:
    return (1.0 if kernel in ("linear", "round") else 1.0 / math.sqrt(K)) if scale is None else scale


# --- DeltaFormer: u (DF.1) and attention (DF.9) ---------------------------------------------------------------

def _df_u_write(x: dict[str, F64], *, kernel: str, scale: float | None) -> WriteHead:
    K = x["w"].shape[-1]
    return WriteHead(x["w"], x["k"], x["beta"], kernel, _write_default(kernel, K, scale), None, 1.0)


def _df_attn_write(x: dict[str, F64], *, write: str, kernel: str, scale: float | None) -> WriteHead:
    K = x["q"].shape[-1]
    w = x["k"] if write == "k" else x["q"]
    return WriteHead(w, x["k"], x["beta"], kernel, _write_default(kernel, K, scale), x["q"], _read_default(K, scale))


def _df_exp_scores(write: WriteHead) -> list[ScoreBlock]:
    blocks = [ScoreBlock(write.w, write.k, write.write_scale, True)] if write.kernel in ("softmax", "exp") else []
    if write.q is not None:
        blocks.append(ScoreBlock(write.q, write.k, write.read_scale, False))
    return blocks


def _df_u_spec(x: dict[str, Array], state: Array | None, *, kernel: str,
               scale: float | None) -> tuple[Array, None]:
    return spec_df.deltaformer_u(x["w"], x["k"], x["v"], x["beta"], kernel=kernel, scale=scale), None


def _df_attn_spec(x: dict[str, Array], state: Array | None, *, write: str, kernel: str,
                  scale: float | None) -> tuple[Array, None]:
    return spec_df.deltaformer_attn(x["q"], x["k"], x["v"], x["beta"], write=write, kernel=kernel, scale=scale), None


def _df_residual(write: WriteHead, r: F64) -> F64:
    """v = (I + diag(beta) P) r: then DF.3's solution is U = r exactly (in exact arithmetic)."""
    return r + write.beta[:, None] * (write.scores() @ r)


def _df_u_residual(x: dict[str, F64], state: F64 | None, r: F64, **options: Any) -> F64:
    return _df_residual(_df_u_write(x, **options), r)


def _df_attn_residual(x: dict[str, F64], state: F64 | None, r: F64, **options: Any) -> F64:
    return _df_residual(_df_attn_write(x, **options), r)


def _kappa_torch(scores: Tensor, kernel: str) -> Tensor:
    """kappa_1 on a row of write scores over j < t (last axis)."""
    if kernel == "softmax":
        return torch.softmax(scores, dim=-1)
    if kernel == "exp":
        return torch.exp(scores)
    if kernel == "linear":
        return scores
    return torch.round(scores)


def _u_sequence(w: Tensor, k: Tensor, v: Tensor, beta: Tensor, kernel: str, scale: float) -> Tensor:
    """w, k [T, H, K], v [T, H, V], beta [T, H] -> u [T, H, V], DF.1 token by token."""
    rows = [v[0]]
    for t in range(1, w.shape[0]):
        U = torch.stack(rows)
        weights = _kappa_torch(torch.einsum("hk,jhk->hj", w[t], k[:t]) * scale, kernel)
        rows.append(v[t] - beta[t, :, None] * torch.einsum("hj,jhv->hv", weights, U))
    return torch.stack(rows)


def _causal_softmax_torch(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """o_t = sum_{j<=t} softmax(scale q_t . k_j) v_j with an explicit masked [H, T, T] matrix."""
    T = q.shape[0]
    scores = torch.einsum("thk,jhk->htj", q, k) * scale
    mask = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
    return torch.einsum("htj,jhv->thv", torch.softmax(scores.masked_fill(mask, -math.inf), dim=-1), v)


def _df_u_control(x: dict[str, Tensor], state: Tensor | None, *, kernel: str,
                  scale: float | None) -> tuple[Tensor, None]:
    write_scale = _write_default(kernel, x["w"].shape[-1], scale)
    return _u_sequence(x["w"], x["k"], x["v"], x["beta"], kernel, write_scale), None


def _df_attn_control(x: dict[str, Tensor], state: Tensor | None, *, write: str, kernel: str,
                     scale: float | None) -> tuple[Tensor, None]:
    K = x["q"].shape[-1]
    w = x["q"] if write == "q" else x["k"]
    u = _u_sequence(w, x["k"], x["v"], x["beta"], kernel, _write_default(kernel, K, scale))
    return _causal_softmax_torch(x["q"], x["k"], u, _read_default(K, scale)), None


def _df_betas(kernel: str) -> tuple[str, ...]:
    # unconstrained beta only with the softmax write (bounded weights); exp/linear/round writes diverge with it
    base = ("unit", "two", "one", "near_two")
    return (*base, "free") if kernel == "softmax" else base


def _df_values(kernel: str) -> tuple[str, ...]:
    # large score gaps only where a normalised softmax absorbs them (an exp/linear/round write would overflow)
    return ("random", "gap", "cancel") if kernel == "softmax" else ("random", "cancel")


def _df_keys(kernel: str) -> str:
    # unit keys keep linear/exp writes bounded; the round kernel needs integer dot products (see round_scale)
    return {"linear": "unit", "exp": "unit", "round": "integer"}.get(kernel, "normal")


def _df_scales(kernel: str, K: int, p: int) -> tuple[float | None, ...]:
    if kernel == "round":
        return (round_scale(K, p),)
    # defaults twice as often; tiny (near-uniform softmax) and large (near-argmax) scales
    return (None, None, 0.01, 2.0) if kernel == "softmax" else (None,)


# --- causal softmax attention (DF.8) --------------------------------------------------------------------------

def _softmax_spec(x: dict[str, Array], state: Array | None, *, scale: float | None) -> tuple[Array, None]:
    return spec_df.causal_softmax_readout(x["q"], x["k"], x["v"], _read_scale(scale, x["q"])), None


def _softmax_exp_scores(x: dict[str, F64], *, scale: float | None) -> list[ScoreBlock]:
    return [ScoreBlock(x["q"], x["k"], _read_default(x["q"].shape[-1], scale), False)]


def _softmax_control(x: dict[str, Tensor], state: Tensor | None, *, scale: float | None) -> tuple[Tensor, None]:
    return _causal_softmax_torch(x["q"], x["k"], x["v"], _read_default(x["q"].shape[-1], scale)), None


# --- stateful ops: the delta rule (UPD.3a) and linear attention (UPD.1a) ----------------------------------------

def _initial(state: Array | None, K: int, V: int, like: Array) -> Array:
    """The paper's S_0 [V, K] from the impl state [K, V] (zeros when None)."""
    return precision.zeros((V, K), like) if state is None else state.T


def _delta_spec(x: dict[str, Array], state: Array | None, *, scale: float | None) -> tuple[Array, Array]:
    q, k, v = x["q"], x["k"], x["v"]
    # the spec reads o_t = S_t q_t; the impl's scale multiplies q
    o, S = spec_updates.deltanet_recurrent(_read_scale(scale, q) * q, k, v, x["beta"],
                                           _initial(state, k.shape[-1], v.shape[-1], v))
    return o, S.T


def _linear_spec(x: dict[str, Array], state: Array | None, *, scale: float | None) -> tuple[Array, Array]:
    q, k, v = x["q"], x["k"], x["v"]
    o, S = spec_updates.linear_attention_recurrent(_read_scale(scale, q) * q, k, v,
                                                   _initial(state, k.shape[-1], v.shape[-1], v))
    return o, S.T


def _delta_residual(x: dict[str, F64], state: F64 | None, r: F64, *, scale: float | None) -> F64:
    """v_t = S_{t-1} k_t + r_t, so the delta rule's residual v_t - S_{t-1} k_t is r_t (UPD.3 step by step)."""
    k, beta = x["k"], x["beta"]
    S = _initial(state, k.shape[-1], r.shape[-1], r)
    v = np.empty_like(r)
    for t in range(len(r)):
        v[t] = S @ k[t] + r[t]
        S = S + beta[t] * np.outer(r[t], k[t])
    return v


def _stateful_control(delta: bool) -> ControlSequence:
    def control(x: dict[str, Tensor], state: Tensor | None, *, scale: float | None) -> tuple[Tensor, Tensor]:
        q, k, v = x["q"], x["k"], x["v"]
        T, H, K = q.shape
        S = torch.zeros(H, K, v.shape[-1], dtype=q.dtype, device=q.device) if state is None else state
        rows = []
        for t in range(T):
            k_t, v_t = k[t], v[t]
            if delta:
                # state [K, V] = S_paper^T: S^T <- (I - beta k k^T) S^T + beta k v^T
                beta_t = x["beta"][t][:, None, None]
                S = S - beta_t * k_t[:, :, None] * torch.einsum("hk,hkv->hv", k_t, S)[:, None, :] \
                    + beta_t * k_t[:, :, None] * v_t[:, None, :]
            else:
                S = S + k_t[:, :, None] * v_t[:, None, :]
            rows.append(torch.einsum("hk,hkv->hv", q[t] * _read_default(K, scale), S))
        return torch.stack(rows), S

    return control


def _no_scales(kernel: str, K: int, p: int) -> tuple[float | None, ...]:
    return (None,)


def _softmax_scales(kernel: str, K: int, p: int) -> tuple[float | None, ...]:
    return (None, None, 0.01, 2.0)


OPS: dict[str, Op] = {op.name: op for op in (
    Op("deltaformer_u", ("w", "k", "v", "beta"), ("kernel", "scale"), False, _df_u_spec, _df_u_control,
       beta_regimes=_df_betas, value_regimes=_df_values, keys=_df_keys, scales=_df_scales,
       write=_df_u_write, residual=_df_u_residual),
    Op("deltaformer_attn", ("q", "k", "v", "beta"), ("write", "kernel", "scale"), False, _df_attn_spec,
       _df_attn_control, beta_regimes=_df_betas, value_regimes=_df_values,
       keys=_df_keys, scales=_df_scales, write=_df_attn_write,
       exp_scores=lambda x, **options: _df_exp_scores(_df_attn_write(x, **options)), residual=_df_attn_residual),
    Op("delta_rule", ("q", "k", "v", "beta"), ("scale",), True, _delta_spec, _stateful_control(delta=True),
       # unit keys: I - beta k k^T is then a contraction for beta in (0, 2); outside it the recurrence diverges
       beta_regimes=lambda kernel: ("unit", "two", "one", "near_two"),
       value_regimes=lambda kernel: ("random", "cancel"), keys=lambda kernel: "unit", scales=_no_scales,
       residual=_delta_residual),
    Op("linear_attn", ("q", "k", "v"), ("scale",), True, _linear_spec, _stateful_control(delta=False),
       beta_regimes=lambda kernel: (), value_regimes=lambda kernel: ("random",), keys=lambda kernel: "normal",
       scales=_no_scales),
    Op("softmax_attn", ("q", "k", "v"), ("scale",), False, _softmax_spec, _softmax_control,
       beta_regimes=lambda kernel: (), value_regimes=lambda kernel: ("random", "gap"),
       keys=lambda kernel: "normal", scales=_softmax_scales, exp_scores=_softmax_exp_scores),
)}
"""op name -> its record."""


def record(op: str) -> Op:
    """The record of ``op``; ValueError naming the known ops otherwise."""
    if op not in OPS:
        raise ValueError(f"op must be one of {', '.join(OPS)}, got {op!r}")
    return OPS[op]
