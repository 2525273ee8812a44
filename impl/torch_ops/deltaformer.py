"""DeltaFormer on the torch backend: the chunked form DF.4 with a chunk-structured backward.

Write stage, chunk rows [s, e) of one (batch, head), all (batch, head) pairs batched:

1. one attention-like pass of the chunk's write vectors over the keys j < e gives the write scores
   P[t, j] = kappa_1(w_t, k_j) for j < t (softmax: normalised over *all* j < t, including in-chunk j) and
   acc_t = sum_{j<s} P[t, j] u_j;
2. the unit lower-triangular system (I + diag(beta_c) P_in) u_c = v_c - beta_c * acc is solved with
   ``torch.linalg.solve_triangular`` (P_in the strictly lower in-chunk block).

On CPU, for the softmax and exp kernels, the pass over the earlier chunks (j < s) runs in PyTorch's fused CPU flash
attention (``aten._scaled_dot_product_flash_attention_for_cpu``), which returns the prefix's log-sum-exp; the
in-chunk scores are a small [C, C] block, merged with it under one shift (``_softmax_with_prefix``). Elsewhere
(other devices, linear and round kernels) the pass is an explicit [C, e] score block ("matmul path"). Both are
tested on CPU.

Backward (derivation in impl/README.md): with M = I + diag(beta) P and G = dL/dU, X = M^{-T} G is solved chunk by
chunk in *reverse* order (transposed unit-triangular solves), and the score gradients are exactly an attention
backward with queries w, keys k, values u, output r = P U and output gradient dO = -beta X, so the same two paths
serve (the flash path takes the earlier-chunk pairs by columns, ``_FlashColumns``). dL/dv = X and
dL/dbeta_t = -X_t . r_t. The chunk loops run on concurrent (batch, head) groups on CPU
(``_common.over_head_groups``). Memory: O(T (C + D)) per head beyond the inputs; nothing T x T.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional

from impl.torch_ops._common import compute_dtype, from_bhtd, over_head_groups, to_bhtd, varlen_map

__all__ = ["deltaformer_attn", "deltaformer_u"]

USE_CPU_FLASH = True
"""Use the fused CPU flash-attention op for the prefix pass when it applies (tests switch it off to cover the
matmul path on CPU)."""

_NEG_INF = -math.inf


def _flash_applies(w: Tensor, u: Tensor, kernel: str) -> bool:
    """The fused op needs CPU tensors and one head size for queries, keys and values (K == V)."""
    return USE_CPU_FLASH and w.device.type == "cpu" and kernel in ("softmax", "exp") and w.shape[-1] == u.shape[-1]


def _flash(q: Tensor, k: Tensor, v: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, scale=scale)
    return out, lse


def _flash_backward(d_out: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                    scale: float) -> tuple[Tensor, Tensor, Tensor]:
    dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
        d_out, q, k, v, out, lse, 0.0, False, scale=scale)
    return dq, dk, dv


def _strict_mask(rows: int, cols: int, offset: int, device: torch.device) -> Tensor:
    """mask[i, j] = True where key j is not strictly earlier than row s + i, i.e. j >= offset + i."""
    return torch.ones(rows, cols, dtype=torch.bool, device=device).triu_(offset)


def _finite_or_zero(x: Tensor) -> Tensor:
    return torch.where(torch.isfinite(x), x, torch.zeros_like(x))


def _masked_lse(scores: Tensor, mask: Tensor) -> Tensor:
    """The row log-sum-exp over the unmasked entries (-inf for a row with none).

    Equal to ``logsumexp(scores.masked_fill(mask, -inf))``, but exp only sees finite arguments and the masked
    entries are zeroed afterwards: on CPU, exp(-inf) runs about 6x slower than exp of a finite number.
    """
    shift = _finite_or_zero(scores.masked_fill(mask, _NEG_INF).amax(-1))
    e = torch.exp(scores - shift[..., None]).masked_fill_(mask, 0.0)
    return shift + torch.log(e.sum(-1))


def _masked_exp_minus(scores: Tensor, mask: Tensor, lse: Tensor) -> Tensor:
    """exp(scores - lse) per row on the unmasked entries, exactly 0 on masked ones (all of an empty row)."""
    return torch.exp(scores - _finite_or_zero(lse)[..., None]).masked_fill_(mask, 0.0)


# --- the in-chunk [c, c] block of the CPU flash path -------------------------------------------------------------
# Row i of the block is sequence row s + i; its in-chunk keys are j < i (strictly lower triangle). These helpers use
# tril_ (which writes zeros) instead of a boolean mask: on CPU, masked_fill_ with a broadcast [c, c] mask costs about
# 5x a tril_ of the same block, and the block is processed once per chunk.

SHIFT_SLACK = 20.0
"""How far (in natural-log units) the cheap softmax shift may sit above the prefix log-sum-exp before the exact
strictly-lower row max is computed instead; see ``_softmax_with_prefix``."""


def _strict_lower_rowmax(scores: Tensor) -> Tensor:
    """max_{j < i} scores[.., i, j] per row i of a square block; -inf for row 0 (it has no earlier key)."""
    c = scores.shape[-1]
    upper = torch.full((c, c), _NEG_INF, dtype=scores.dtype, device=scores.device).triu_()
    return (scores + upper).amax(-1)


def _softmax_first_chunk(scores: Tensor) -> tuple[Tensor, Tensor]:
    """(P_in, lse) for the first chunk (no prefix): row-normalised exp over j < i; row 0 is all zero, lse -inf."""
    shift = _strict_lower_rowmax(scores)
    shift[..., 0] = 0.0
    e = scores.sub_(shift[..., None]).exp_().tril_(-1)
    total = e.sum(-1)
    lse = shift + torch.log(total)
    total[..., 0] = 1.0
    return e.div_(total[..., None]), lse


def _softmax_with_prefix(scores: Tensor, o_prefix: Tensor, lse_prefix: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(P_in, acc, lse) for a chunk with s > 0 earlier keys, merging the in-chunk scores with the prefix pass.

    The prefix pass returned o_prefix = sum_{j<s} softmax_{j<s}(...) u_j and its row log-sum-exp lse_prefix (finite:
    every row has s > 0 earlier keys). With any shift m >= every in-chunk score of the row and m >= lse_prefix,

        Z = exp(lse_prefix - m) + sum_{j<i} exp(S_ij - m),   lse = m + log Z,
        P_in = exp(S - m) / Z (strictly lower),             acc = o_prefix exp(lse_prefix - m) / Z.

    The cheap shift is m = max(lse_prefix, max_j S_ij over the *whole* row) (one amax, no mask). It is an upper bound
    on the in-chunk scores, so nothing overflows, and Z >= exp(lse_prefix - m). When m - lse_prefix <= SHIFT_SLACK
    for every row, Z >= e^-20, so a term that underflows (below e^-87 in fp32) weighs less than e^-67 of the total:
    far below the dtype's epsilon. Otherwise (an entry on or above the diagonal dominates) the exact strictly-lower
    max is used, as in the textbook online softmax. ``scores`` is overwritten.
    """
    shift = torch.maximum(scores.amax(-1), lse_prefix)
    if bool((shift - lse_prefix).amax() > SHIFT_SLACK):
        shift = torch.maximum(_strict_lower_rowmax(scores), lse_prefix)
    e = scores.sub_(shift[..., None]).exp_().tril_(-1)
    prefix_weight = torch.exp(lse_prefix - shift)
    total = e.sum(-1).add_(prefix_weight)
    inv_total = total.reciprocal()
    acc = o_prefix * (prefix_weight * inv_total)[..., None]
    return e.mul_(inv_total[..., None]), acc, shift + torch.log(total)


def _block_probs(scores: Tensor, mask: Tensor, kernel: str, lse: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """kappa_1 applied to a score block with the strictly-causal ``mask``; masked entries are exactly 0.

    softmax: normalised over the unmasked entries of each row; returns the row log-sum-exp (-inf for an empty
    row, whose probabilities are all 0). Given ``lse`` (backward), uses it instead of recomputing the normaliser.
    """
    if kernel == "softmax":
        if lse is None:
            lse = _masked_lse(scores, mask)
        return _masked_exp_minus(scores, mask, lse), lse
    if kernel == "exp":
        return torch.exp(scores).masked_fill_(mask, 0.0), None
    if kernel == "linear":
        return scores.masked_fill(mask, 0.0), None
    return torch.round(scores).masked_fill_(mask, 0.0), None


def _block_score_grad(P: Tensor, dP: Tensor, mask: Tensor | None, kernel: str, row_dot: Tensor | None) -> Tensor:
    """dL/dscores from dL/dP for one block; ``row_dot`` = dO . r per row (softmax's normaliser term). ``mask`` is
    needed only by the linear and round kernels (softmax and exp multiply by P, which is already 0 where masked)."""
    if kernel == "softmax":
        assert row_dot is not None
        return P * (dP - row_dot[..., None])
    if kernel == "exp":
        return P * dP
    assert mask is not None
    return dP.masked_fill(mask, 0.0)


class _ChunkedU:
    """The write-score block of one chunk, shared by the forward pass and the backward recomputation."""

    def __init__(self, w: Tensor, k: Tensor, u: Tensor, kernel: str, scale: float, s: int, e: int) -> None:
        self.w, self.k, self.kernel, self.scale, self.s, self.e = w, k, kernel, scale, s, e
        self.flash = _flash_applies(w, u, kernel)
        self.w_c = w[:, :, s:e]
        self.mask: Tensor | None = None  # the flash path's in-chunk block uses tril_ instead of a mask
        if self.flash:
            self.scores = torch.matmul(self.w_c, k[:, :, s:e].transpose(-1, -2)).mul_(scale)
        else:
            self.mask = _strict_mask(e - s, e, s, w.device)
            self.scores = torch.matmul(self.w_c, k[:, :, :e].transpose(-1, -2)).mul_(scale)

    def forward(self, u: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """(P_in [.., c, c], acc [.., c, V] or None when s = 0, row lse [.., c] for softmax). Consumes the scores."""
        s = self.s
        if not self.flash:
            assert self.mask is not None
            P, lse = _block_probs(self.scores, self.mask, self.kernel, None)
            acc = torch.matmul(P[..., :s], u[:, :, :s]) if s > 0 else None
            return P[..., s:], acc, lse
        if s == 0:
            if self.kernel == "softmax":
                P_in, lse = _softmax_first_chunk(self.scores)
                return P_in, None, lse
            return self.scores.exp_().tril_(-1), None, None
        o_prefix, lse_prefix = _flash(self.w_c, self.k[:, :, :s], u[:, :, :s], self.scale)
        if self.kernel == "softmax":
            return _softmax_with_prefix(self.scores, o_prefix, lse_prefix)
        return self.scores.exp_().tril_(-1), o_prefix * torch.exp(lse_prefix)[..., None], None

    def backward(self, u: Tensor, r_c: Tensor, d_out: Tensor, dw: Tensor, dk: Tensor, g: Tensor,
                 P_full: Tensor) -> None:
        """Accumulate this chunk's score gradients into dw, dk and (matmul path) the prefix values' gradient into
        g[:, :, :s]. ``P_full`` is ``probs_for_backward``'s block. On the flash path only the in-chunk block is done
        here; the pairs (row of this chunk, earlier key) are done column by column by ``_FlashColumns``."""
        s, e, kernel, scale = self.s, self.e, self.kernel, self.scale
        row_dot = (d_out * r_c).sum(-1) if kernel == "softmax" else None
        if not self.flash:
            assert self.mask is not None
            if s > 0:
                g[:, :, :s] += torch.matmul(P_full[..., :s].transpose(-1, -2), d_out)
            if kernel == "round":
                return
            dP = torch.matmul(d_out, u[:, :, :e].transpose(-1, -2))
            dS = _block_score_grad(P_full, dP, self.mask, kernel, row_dot).mul_(scale)
            dw[:, :, s:e] += torch.matmul(dS, self.k[:, :, :e])
            dk[:, :, :e] += torch.matmul(dS.transpose(-1, -2), self.w_c)
            return
        dP_in = torch.matmul(d_out, u[:, :, s:e].transpose(-1, -2))
        dS_in = _block_score_grad(P_full, dP_in, None, kernel, row_dot).mul_(scale)
        dw[:, :, s:e] += torch.matmul(dS_in, self.k[:, :, s:e])
        dk[:, :, s:e] += torch.matmul(dS_in.transpose(-1, -2), self.w_c)

    def probs_for_backward(self, lse_c: Tensor | None) -> Tensor:
        """P for the block (matmul path: [.., c, e]; flash path: the in-chunk [.., c, c]) from the saved lse.

        Flash path: exp(S - lse) then tril_; a row with lse = -inf (row 0 of the first chunk) becomes +inf before
        tril_ zeroes it, as it has no strictly-lower entry. Consumes the scores.
        """
        if not self.flash:
            assert self.mask is not None
            P, _ = _block_probs(self.scores, self.mask, self.kernel, lse_c)
            return P
        if self.kernel == "softmax":
            assert lse_c is not None
            self.scores.sub_(lse_c[..., None])
        return self.scores.exp_().tril_(-1)


def _solve_unit_lower(A: Tensor, rhs: Tensor, *, transpose: bool) -> Tensor:
    """X with (I + A) X = rhs, or (I + A)^T X = rhs when ``transpose``; A strictly lower (its diagonal is ignored).

    Solved as the equivalent right-sided system X^T (I + A)^T = rhs^T (resp. X^T (I + A) = rhs^T): MKL then returns
    X in row-major order, which is about 20% faster here and makes the copy into the [.., T, V] output contiguous.
    """
    lhs = A if transpose else A.transpose(-1, -2)
    x_t: Tensor = torch.linalg.solve_triangular(lhs, rhs.transpose(-1, -2), upper=not transpose, left=False,
                                                unitriangular=True)
    return x_t.transpose(-1, -2)


def _u_forward(w: Tensor, k: Tensor, v: Tensor, beta: Tensor, kernel: str, scale: float, chunk_size: int,
               for_backward: bool = True) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """u, r = P u (the write-attention output) and the row lse (softmax) for [B, H, T, *] inputs.

    r and lse are what the backward needs; without ``for_backward`` they are not computed (None).
    """
    T = w.shape[2]
    u = torch.empty_like(v)
    r = torch.empty_like(v) if for_backward else None
    lse = torch.empty_like(beta) if kernel == "softmax" and for_backward else None
    for s in range(0, T, chunk_size):
        e = min(s + chunk_size, T)
        block = _ChunkedU(w, k, u, kernel, scale, s, e)
        P_in, acc, lse_c = block.forward(u)
        beta_c = beta[:, :, s:e, None]
        rhs = v[:, :, s:e] if acc is None else torch.addcmul(v[:, :, s:e], beta_c, acc, value=-1.0)
        u_c = _solve_unit_lower(beta_c * P_in if for_backward else P_in.mul_(beta_c), rhs, transpose=False)
        u[:, :, s:e] = u_c
        if r is not None:
            in_chunk = torch.matmul(P_in, u_c)
            r[:, :, s:e] = in_chunk if acc is None else acc + in_chunk
        if lse is not None:
            assert lse_c is not None
            lse[:, :, s:e] = lse_c
    return u, r, lse


class _FlashColumns:
    """The CPU flash path's backward for the pairs (row t, key j) with j in an earlier chunk than t, by columns.

    When the reverse chunk walk reaches chunk [s, e), every later row's output gradient dO = -beta X is known, so
    one fused attention backward with queries w[e:], keys k[s:e], values u[s:e] and the saved full-row statistics
    (r, lse: softmax's normaliser term uses dO . r over *all* earlier keys) gives this chunk's keys and values
    their whole gradient from later rows (dk[s:e], and g[s:e] += dv before X[s:e] is solved) and the later rows'
    dw contribution from these keys. The same pairs as a row-by-row walk, but the large outputs of each call are
    one [T - e, K] block instead of two [s, *] blocks (dk and dv of the whole prefix): about half the memory
    traffic. The exp kernel is unnormalised: lse = 0 and no normaliser term (r replaced by 0).
    """

    def __init__(self, w: Tensor, k: Tensor, u: Tensor, r: Tensor, lse: Tensor | None, kernel: str,
                 scale: float) -> None:
        self.w, self.k, self.u, self.scale = w, k, u, scale
        if kernel == "softmax":
            assert lse is not None
            self.r, self.lse = r, lse
        else:
            self.r, self.lse = torch.zeros_like(r), torch.zeros_like(r[..., 0])
        self.d_out = torch.empty_like(u)
        """dO of the rows done so far (filled in by the chunk walk, from the last chunk backwards)."""

    def backward(self, s: int, e: int, dw: Tensor, dk: Tensor, g: Tensor) -> None:
        if e == self.w.shape[2]:
            return
        dq_p, dk_p, dv_p = _flash_backward(self.d_out[:, :, e:], self.w[:, :, e:], self.k[:, :, s:e],
                                           self.u[:, :, s:e], self.r[:, :, e:], self.lse[:, :, e:], self.scale)
        dw[:, :, e:] += dq_p
        dk[:, :, s:e] += dk_p
        g[:, :, s:e] += dv_p


def _u_backward(grad_u: Tensor, w: Tensor, k: Tensor, u: Tensor, beta: Tensor, r: Tensor, lse: Tensor | None,
                kernel: str, scale: float, chunk_size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    T = w.shape[2]
    dw = torch.zeros_like(w)
    dk = torch.zeros_like(k)
    dv = torch.empty_like(u)
    dbeta = torch.empty_like(beta)
    g = grad_u.clone()
    columns = _FlashColumns(w, k, u, r, lse, kernel, scale) if _flash_applies(w, u, kernel) else None
    for s in reversed(range(0, T, chunk_size)):
        e = min(s + chunk_size, T)
        if columns is not None:
            columns.backward(s, e, dw, dk, g)
        block = _ChunkedU(w, k, u, kernel, scale, s, e)
        lse_c = None if lse is None else lse[:, :, s:e]
        P = block.probs_for_backward(lse_c)
        P_in = P[..., s:] if not block.flash else P
        beta_c = beta[:, :, s:e, None]
        X = _solve_unit_lower(beta_c * P_in, g[:, :, s:e], transpose=True)
        dv[:, :, s:e] = X
        r_c = r[:, :, s:e]
        dbeta[:, :, s:e] = -(X * r_c).sum(-1)
        d_out = -beta_c * X
        if columns is not None:
            columns.d_out[:, :, s:e] = d_out
        block.backward(u, r_c, d_out, dw, dk, g, P)
    return dw, dk, dv, dbeta


class DeltaFormerU(torch.autograd.Function):
    """u = DF.4(w, k, v, beta) on [B, H, T, *] tensors of one dtype (fp32 or fp64); backward by chunks."""

    @staticmethod
    def forward(ctx: Any, w: Tensor, k: Tensor, v: Tensor, beta: Tensor, kernel: str, scale: float,
                chunk_size: int) -> Tensor:
        u, r, lse = over_head_groups(partial(_u_forward, kernel=kernel, scale=scale, chunk_size=chunk_size),
                                     w, k, v, beta)
        assert u is not None
        ctx.save_for_backward(w, k, u, beta, r, lse)
        ctx.options = (kernel, scale, chunk_size)
        return u

    @staticmethod
    def backward(ctx: Any, grad_u: Tensor) -> tuple[Tensor | None, ...]:
        w, k, u, beta, r, lse = ctx.saved_tensors
        kernel, scale, chunk_size = ctx.options
        dw, dk, dv, dbeta = over_head_groups(
            partial(_u_backward, kernel=kernel, scale=scale, chunk_size=chunk_size),
            grad_u.contiguous(), w, k, u, beta, r, lse)
        return dw, dk, dv, dbeta, None, None, None


def _u_bhtd(w: Tensor, k: Tensor, v: Tensor, beta: Tensor, kernel: str, scale: float, chunk_size: int) -> Tensor:
    """DF.4 with autograd when a gradient can flow; otherwise the forward alone, without r and lse."""
    if torch.is_grad_enabled() and any(x.requires_grad for x in (w, k, v, beta)):
        out: Tensor = DeltaFormerU.apply(  # type: ignore[no-untyped-call]
            w, k, v, beta, kernel, scale, chunk_size)
        return out
    u = over_head_groups(partial(_u_forward, kernel=kernel, scale=scale, chunk_size=chunk_size, for_backward=False),
                         w, k, v, beta)[0]
    assert u is not None
    return u


def deltaformer_u(w: Tensor, k: Tensor, v: Tensor, beta: Tensor, *, kernel: str, scale: float, chunk_size: int,
                  cu_seqlens: Tensor | None) -> Tensor:
    """Torch backend of ``impl.deltaformer_u``: w, k [B, T, H, K], v [B, T, H, V], beta [B, T, H] -> u [B, T, H, V].

    Implements spec.deltaformer.deltaformer_u (DF.1) per (batch, head) by the chunked form DF.4.
    """
    dtype = compute_dtype(v.dtype)

    def run(w_: Tensor, k_: Tensor, v_: Tensor, beta_: Tensor) -> Tensor:
        u = _u_bhtd(to_bhtd(w_, dtype), to_bhtd(k_, dtype), to_bhtd(v_, dtype), to_bhtd(beta_, dtype), kernel,
                    scale, chunk_size)
        return from_bhtd(u, v.dtype)

    return varlen_map(run, cu_seqlens, w, k, v, beta)


def deltaformer_attn(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, *, write: str, kernel: str,
                     write_scale: float, read_scale: float, chunk_size: int, cu_seqlens: Tensor | None) -> Tensor:
    """Torch backend of ``impl.deltaformer_attn``: o = causal_softmax(read_scale Q K^T) U, U from DF.4 with
    ``write_scale`` in kappa_1.

    Implements spec.deltaformer.deltaformer_attn (DF.9). The read-out is
    ``functional.scaled_dot_product_attention(is_causal=True)`` (its own fused kernel and backward).
    """
    dtype = compute_dtype(v.dtype)

    def run(q_: Tensor, k_: Tensor, v_: Tensor, beta_: Tensor) -> Tensor:
        qb, kb = to_bhtd(q_, dtype), to_bhtd(k_, dtype)
        u = _u_bhtd(qb if write == "q" else kb, kb, to_bhtd(v_, dtype), to_bhtd(beta_, dtype), kernel,
                    write_scale, chunk_size)
        o = functional.scaled_dot_product_attention(qb, kb, u, is_causal=True, scale=read_scale)
        return from_bhtd(o, v.dtype)

    return varlen_map(run, cu_seqlens, q, k, v, beta)
