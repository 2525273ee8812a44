"""Straightforward torch recurrences (token by token, autograd through them): the gradient reference.

The spec is NumPy (no autograd), so the harness takes reference gradients from these float64 torch recurrences and
ties them to the spec on every drawn case: their outputs must match the spec, and their directional derivatives
must match central differences of the float64 spec (``check.py``). They share no code with ``impl``.
Layout as impl: [B, T, H, D] in, [B, T, H, V] out, state [N, H, K, V] (the transpose of the paper's S).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from proofs_checks.differential.bridge import sequence_ranges

__all__ = ["CONTROL_OPS", "run_control"]


def _kappa(scores: Tensor, kernel: str) -> Tensor:
    """kappa_1 on a row of write scores over j < t (last axis)."""
    if kernel == "softmax":
        return torch.softmax(scores, dim=-1)
    if kernel == "exp":
        return torch.exp(scores)
    if kernel == "linear":
        return scores
    return torch.round(scores)


def _u_sequence(w: Tensor, k: Tensor, v: Tensor, beta: Tensor, kernel: str, scale: float) -> Tensor:
    """One sequence, all heads: w, k [T, H, K], v [T, H, V], beta [T, H] -> u [T, H, V], DF.1 token by token."""
    rows = [v[0]]
    for t in range(1, w.shape[0]):
        U = torch.stack(rows)
        weights = _kappa(torch.einsum("hk,jhk->hj", w[t], k[:t]) * scale, kernel)
        rows.append(v[t] - beta[t, :, None] * torch.einsum("hj,jhv->hv", weights, U))
    return torch.stack(rows)


def _causal_softmax(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """One sequence: o_t = sum_{j<=t} softmax(scale q_t . k_j) v_j with an explicit masked [H, T, T] matrix."""
    T = q.shape[0]
    scores = torch.einsum("thk,jhk->htj", q, k) * scale
    mask = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
    return torch.einsum("htj,jhv->thv", torch.softmax(scores.masked_fill(mask, -math.inf), dim=-1), v)


def _write_default(kernel: str, d_k: int) -> float:
    return 1.0 if kernel in ("linear", "round") else 1.0 / math.sqrt(d_k)


def run_control(op: str, tensors: dict[str, Tensor], cu_seqlens: Sequence[int] | None,
                **options: object) -> dict[str, Tensor]:
    """The control's outputs for ``op`` ({"o": ..., ["final_state": ...]}) in the tensors' dtype, with autograd."""
    first = tensors["w"] if op == "deltaformer_u" else tensors["q"]
    B, T, H, K = first.shape
    scale = options.get("scale")
    outputs: list[tuple[int, int, int, Tensor]] = []
    states: list[Tensor] = []
    for n, b, start, end in sequence_ranges(T, B, cu_seqlens):
        part = {name: x[b, start:end] for name, x in tensors.items() if name != "initial_state"}
        if op in ("deltaformer_u", "deltaformer_attn"):
            kernel = str(options["kernel"])
            write_scale = _write_default(kernel, K) if scale is None else float(str(scale))
            if op == "deltaformer_u":
                o = _u_sequence(part["w"], part["k"], part["v"], part["beta"], kernel, write_scale)
            else:
                w = part["q"] if options["write"] == "q" else part["k"]
                u = _u_sequence(w, part["k"], part["v"], part["beta"], kernel, write_scale)
                read_scale = 1.0 / math.sqrt(K) if scale is None else float(str(scale))
                o = _causal_softmax(part["q"], part["k"], u, read_scale)
        elif op == "softmax_attn":
            o = _causal_softmax(part["q"], part["k"], part["v"], 1.0 / math.sqrt(K) if scale is None
                                else float(str(scale)))
        else:
            resolved = 1.0 / math.sqrt(K) if scale is None else float(str(scale))
            V = part["v"].shape[-1]
            initial = tensors.get("initial_state")
            S = (torch.zeros(H, K, V, dtype=first.dtype, device=first.device) if initial is None
                 else initial[n])
            rows = []
            for t in range(end - start):
                k_t, v_t = part["k"][t], part["v"][t]
                if op == "delta_rule":
                    # state [K, V] = S_paper^T: S^T <- (I - beta k k^T) S^T + beta k v^T
                    beta_t = part["beta"][t][:, None, None]
                    S = S - beta_t * k_t[:, :, None] * torch.einsum("hk,hkv->hv", k_t, S)[:, None, :] \
                        + beta_t * k_t[:, :, None] * v_t[:, None, :]
                else:
                    S = S + k_t[:, :, None] * v_t[:, None, :]
                rows.append(torch.einsum("hk,hkv->hv", part["q"][t] * resolved, S))
            o = torch.stack(rows)
            states.append(S)
        outputs.append((n, b, start, o))
    per_batch: list[list[Tensor]] = [[] for _ in range(B)]
    for _, b, _, o in outputs:
        per_batch[b].append(o)
    result = {"o": torch.stack([torch.cat(parts, dim=0) for parts in per_batch])}
    if states:
        result["final_state"] = torch.stack(states)
    return result


CONTROL_OPS: tuple[str, ...] = ("deltaformer_u", "deltaformer_attn", "softmax_attn", "delta_rule", "linear_attn")
