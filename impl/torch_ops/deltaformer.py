"""DeltaFormer on the torch backend: the chunked form DF.4 with a chunk-structured backward.

Write stage, chunk rows [s, e) of one (batch, head), all (batch, head) pairs batched (one ``_FlashChunk`` or
``_MatmulChunk`` per chunk, chosen once per call by ``_flash_path``):

1. one attention-like pass of the chunk's write vectors over the keys j < e gives the write scores
   P[t, j] = kappa_1(w_t, k_j) for j < t (softmax: normalised over *all* j < t, including in-chunk j) and
   acc_t = sum_{j<s} P[t, j] u_j;
2. the unit lower-triangular system (I + diag(beta_c) P_in) u_c = v_c - beta_c * acc is solved with
   ``torch.linalg.solve_triangular`` (P_in the strictly lower in-chunk block).

On CPU, for the softmax and exp kernels, the pass over the earlier chunks (j < s) runs in PyTorch's fused CPU flash
attention (``aten._scaled_dot_product_flash_attention_for_cpu``), which returns the prefix's log-sum-exp; the
in-chunk scores are a small [C, C] block, merged with it under one shift (``_softmax_with_prefix``). Elsewhere
(other devices, linear and round kernels, K != V, huge scores) the pass is an explicit [C, e] score block ("matmul
path", kappa_1 from ``impl._write_kernels``). Both are tested on CPU.

Backward (derivation in impl/README.md): with M = I + diag(beta) P and G = dL/dU, X = M^{-T} G is solved chunk by
chunk in *reverse* order (transposed unit-triangular solves), and the score gradients are exactly an attention
backward with queries w, keys k, values u, output r = P U and output gradient dO = -beta X, so the same two paths
serve (the flash path takes the earlier-chunk pairs by columns, ``_FlashColumns``). dL/dv = X and
dL/dbeta_t = -X_t . r_t. The chunk loops run on concurrent (batch, head) groups on CPU
(``_common.over_head_groups``). Memory: O(T (C + D)) per head beyond the inputs; nothing T x T. Under
create_graph=True the backward is ``_u_dense_backward`` instead (differentiable, O(T^2)).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import Tensor

from impl._nonfinite import split_nonfinite
from impl._write_kernels import get as get_write_kernel
from impl.torch_ops._common import compute_dtype, from_bhtd, over_head_groups, to_bhtd, varlen_map
from impl.torch_ops._readout import causal_softmax_attention

__all__ = ["deltaformer_attn", "deltaformer_decode_step", "deltaformer_u"]

CPU_CHUNK_SIZE = 384
"""The chunk used on CPU when ``chunk_size`` is None. Measured with ``python -m benchmarks.ratios --sweep`` (paired
ratios of the fp32 forward to causal SDPA, B = 1, H = 4, T in {1024, 4096, 8192} x D in {32, 64, 128} x chunk in
{128, 256, 384, 512}) on the shared 2-core VM: with torch's two threads (wall time, what a user sees) 384 was best
or within noise of the best in every cell (at T = 1024 it beat 256 by 25-50%, at T = 4096, D = 64 they tied);
single-threaded CPU time preferred 256 by 4-12% at T <= 4096 and 384 at T = 8192. The old default, 64, measured
2.6-3.2x against 2.3x for 384 (issue 12)."""

CHUNK_SIZE = 64
"""The chunk used on other devices when ``chunk_size`` is None (FLA's convention; not measured here)."""

USE_CPU_FLASH = True
"""Use the fused CPU flash-attention op for the prefix pass when it applies (tests switch it off to cover the
matmul path on CPU)."""

_NEG_INF = -math.inf


def default_chunk_size(device: torch.device) -> int:
    """The backend's choice when ``chunk_size`` is None: CPU_CHUNK_SIZE on CPU, CHUNK_SIZE elsewhere."""
    return CPU_CHUNK_SIZE if device.type == "cpu" else CHUNK_SIZE


def _flash_applies(w: Tensor, u: Tensor, kernel: str) -> bool:
    """The fused op computes this write's prefix: CPU tensors, the softmax or exp kernel, and one head size for
    queries, keys and values (K == V). ``_flash_path`` adds the bound on the scores."""
    return USE_CPU_FLASH and w.device.type == "cpu" and kernel in ("softmax", "exp") and w.shape[-1] == u.shape[-1]


def _flash_path(w: Tensor, k: Tensor, v: Tensor, kernel: str, scale: float) -> bool:
    """Whether a call runs the CPU flash path: ``_flash_applies`` and bounded scores.

    The bound: every score |scale w_t . k_j| <= |scale| max_t |w_t| max_j |k_j| = B (Cauchy-Schwarz). The flash path
    weighs the prefix by exp(lse_prefix - m), and the fused op's lse carries an absolute rounding error of about
    |lse| u (u the unit roundoff); it is used only while B u <= FLASH_LSE_ROUNDING. Beyond (huge logits, e.g.
    scale 1e39), lse = m + log(sum) can round log(sum) away entirely and the prefix weight would be off by up to a
    factor T; the matmul path normalises by dividing by the row sum and stays exact there.
    """
    if not _flash_applies(w, v, kernel):
        return False
    bound = abs(scale) * float(torch.linalg.vector_norm(w, dim=-1).amax()) * float(
        torch.linalg.vector_norm(k, dim=-1).amax())
    return bound * torch.finfo(w.dtype).eps / 2 <= FLASH_LSE_ROUNDING


def _flash(q: Tensor, k: Tensor, v: Tensor, scale: float, causal: bool = False) -> tuple[Tensor, Tensor]:
    """(out, row lse) of softmax attention by the fused CPU op; ``causal``: key j <= row i (impl.distributed's
    read-out uses it for its diagonal blocks, with a positive scale: ``_readout.positive_scale``)."""
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal, scale=scale)
    return out, lse


def _flash_backward(d_out: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                    scale: float, causal: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
        d_out, q, k, v, out, lse, 0.0, causal, scale=scale)
    return dq, dk, dv


def _strict_mask(rows: int, cols: int, offset: int, device: torch.device) -> Tensor:
    """mask[i, j] = True where key j is not strictly earlier than row s + i, i.e. j >= offset + i."""
    return torch.ones(rows, cols, dtype=torch.bool, device=device).triu_(offset)


# --- the in-chunk [c, c] block of the CPU flash path -------------------------------------------------------------
# Row i of the block is sequence row s + i; its in-chunk keys are j < i (strictly lower triangle). These helpers use
# tril_ (which writes zeros) instead of a boolean mask: on CPU, masked_fill_ with a broadcast [c, c] mask costs about
# 5x a tril_ of the same block, and the block is processed once per chunk.

SHIFT_SLACK = 20.0
"""How far (in natural-log units) the cheap softmax shift may sit above the prefix log-sum-exp before the exact
strictly-lower row max is computed instead; see ``_softmax_with_prefix``."""

FLASH_LSE_ROUNDING = 2.0**-11
"""The largest rounding error (score bound times unit roundoff) the flash path's log-sum-exp may carry (fp16's unit
roundoff: far below any change a user would see, far above the scores of ordinary inputs); see ``_flash_path``."""


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


class _MatmulChunk:
    """Chunk rows [s, e) against keys j < e as one explicit [c, e] score block: any device, any write kernel.

    kappa_1 and its score gradient come from the write-kernel record (``impl._write_kernels``); the softmax is
    normalised by dividing by the row sum, and the backward recomputes P exactly as the forward did (no lse).
    Except for rows whose softmax normaliser also covers keys before this sequence (``_u_forward``'s ``prefix``,
    impl.distributed): their saved whole-row lse gives P = exp(S - lse), and their row term dO . r."""

    def __init__(self, w: Tensor, k: Tensor, kernel: str, scale: float, s: int, e: int) -> None:
        self.w_c, self.k, self.scale, self.s, self.e = w[:, :, s:e], k, scale, s, e
        self.kernel = get_write_kernel(kernel)
        self.outside_keys = False
        self.mask = _strict_mask(e - s, e, s, w.device)
        self.scores = torch.matmul(self.w_c, k[:, :, :e].transpose(-1, -2)).mul_(scale)

    def forward(self, u: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """(P_in [.., c, c], acc [.., c, V] or None when s = 0, None: no lse on this path)."""
        s = self.s
        P = self.kernel.weights(self.scores, self.mask)
        acc = torch.matmul(P[..., :s], u[:, :, :s]) if s > 0 else None
        return P[..., s:], acc, None

    def row_lse(self) -> Tensor:
        """The row log-sum-exp of the admissible scores (-inf for a row with none): the softmax normaliser of this
        block's P, for merging it with keys before this sequence (``_merge_prefix``)."""
        return torch.logsumexp(self.scores.masked_fill(self.mask, _NEG_INF), dim=-1)

    def probs_for_backward(self, lse_c: Tensor | None) -> Tensor:
        """P [.., c, e], recomputed from the scores exactly as in the forward; given the whole-row ``lse_c``
        (softmax with keys before this sequence), exp(S - lse_c) instead."""
        if lse_c is None:
            return self.kernel.weights(self.scores, self.mask)
        self.outside_keys = True
        return torch.exp(self.scores - lse_c[..., None]).masked_fill_(self.mask, 0.0)

    def diagonal(self, P: Tensor) -> Tensor:
        """The in-chunk block P_in of ``probs_for_backward``'s P."""
        return P[..., self.s:]

    def backward(self, u: Tensor, r_c: Tensor, d_out: Tensor, dw: Tensor, dk: Tensor, g: Tensor, P: Tensor,
                 straight_through: bool = False) -> None:
        """Accumulate this chunk's score gradients into dw, dk and the earlier values' gradient into g[:, :, :s].
        ``straight_through`` (round kernel): the linear kernel's score gradient at the rounded forward."""
        s, e = self.s, self.e
        if s > 0:
            g[:, :, :s] += torch.matmul(P[..., :s].transpose(-1, -2), d_out)
        score_grad = _score_grad(self.kernel.name, straight_through)
        if score_grad is None:  # kappa_1' = 0 almost everywhere (round)
            return
        dP = torch.matmul(d_out, u[:, :, :e].transpose(-1, -2))
        if self.outside_keys:  # softmax over keys beyond this block: the row term is the whole row's dO . r
            dP.masked_fill_(self.mask, 0.0)  # dO_t . u_j for j >= t may overflow; P is 0 there: no 0 * inf
            dS = (P * (dP - (d_out * r_c).sum(-1, keepdim=True))).mul_(self.scale)
        else:
            dS = score_grad(P, dP, self.mask).mul_(self.scale)
        dw[:, :, s:e] += torch.matmul(dS, self.k[:, :, :e])
        dk[:, :, :e] += torch.matmul(dS.transpose(-1, -2), self.w_c)


class _FlashChunk:
    """Chunk rows [s, e) on the CPU flash path (softmax and exp, K == V): the keys j < s by the fused flash op, the
    in-chunk keys as a [c, c] block merged with it (``_softmax_with_prefix``); in the backward, the pairs (row of
    this chunk, earlier key) are done column by column by ``_FlashColumns``, only the in-chunk block here."""

    def __init__(self, w: Tensor, k: Tensor, kernel: str, scale: float, s: int, e: int) -> None:
        self.w_c, self.k, self.kernel, self.scale, self.s, self.e = w[:, :, s:e], k, kernel, scale, s, e
        self.scores = torch.matmul(self.w_c, k[:, :, s:e].transpose(-1, -2)).mul_(scale)

    def forward(self, u: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """(P_in [.., c, c], acc [.., c, V] or None when s = 0, row lse [.., c] for softmax). Consumes the scores."""
        s = self.s
        if s == 0:
            if self.kernel == "softmax":
                P_in, lse = _softmax_first_chunk(self.scores)
                return P_in, None, lse
            return self.scores.exp_().tril_(-1), None, None
        o_prefix, lse_prefix = _flash(self.w_c, self.k[:, :, :s], u[:, :, :s], self.scale)
        if self.kernel == "softmax":
            return _softmax_with_prefix(self.scores, o_prefix, lse_prefix)
        return self.scores.exp_().tril_(-1), o_prefix * torch.exp(lse_prefix)[..., None], None

    def probs_for_backward(self, lse_c: Tensor | None) -> Tensor:
        """The in-chunk P [.., c, c] from the saved lse: exp(S - lse) then tril_; a row with lse = -inf (row 0 of
        the first chunk) becomes +inf before tril_ zeroes it, as it has no strictly-lower entry. Consumes the
        scores."""
        if self.kernel == "softmax":
            assert lse_c is not None
            self.scores.sub_(lse_c[..., None])
        return self.scores.exp_().tril_(-1)

    def diagonal(self, P: Tensor) -> Tensor:
        return P

    def backward(self, u: Tensor, r_c: Tensor, d_out: Tensor, dw: Tensor, dk: Tensor, g: Tensor, P: Tensor,
                 straight_through: bool = False) -> None:
        """Accumulate the in-chunk block's score gradients into dw and dk. Softmax's normaliser term is the row's
        dO . r over *all* its earlier keys (r = P u is the whole row's write output), not over this block alone.
        (Only softmax and exp take this path, so ``straight_through``, a round-kernel option, never applies.)"""
        s, e = self.s, self.e
        # dO_t . u_j for j >= t (above P's support) may overflow although every exact gradient is finite: zero
        # those entries before multiplying by P, never form 0 * inf = NaN.
        dP = torch.matmul(d_out, u[:, :, s:e].transpose(-1, -2)).tril_(-1)
        dS = P * (dP - (d_out * r_c).sum(-1)[..., None]) if self.kernel == "softmax" else P * dP
        dS.mul_(self.scale)
        dw[:, :, s:e] += torch.matmul(dS, self.k[:, :, s:e])
        dk[:, :, s:e] += torch.matmul(dS.transpose(-1, -2), self.w_c)


_Chunk = _MatmulChunk | _FlashChunk
ScoreGrad = Callable[[Tensor, Tensor, Tensor | None], Tensor]


def _score_grad(kernel: str, straight_through: bool) -> ScoreGrad | None:
    """kappa_1's score gradient (None: zero almost everywhere); with ``straight_through`` (round) the linear
    kernel's, i.e. round' taken as 1: the straight-through estimator."""
    return get_write_kernel("linear" if straight_through else kernel).score_grad


def _chunk(flash: bool, w: Tensor, k: Tensor, kernel: str, scale: float, s: int, e: int) -> _Chunk:
    return _FlashChunk(w, k, kernel, scale, s, e) if flash else _MatmulChunk(w, k, kernel, scale, s, e)


def _solve_unit_lower(A: Tensor, rhs: Tensor, *, transpose: bool) -> Tensor:
    """X with (I + A) X = rhs, or (I + A)^T X = rhs when ``transpose``; A strictly lower (its diagonal is ignored).

    Solved as the equivalent right-sided system X^T (I + A)^T = rhs^T (resp. X^T (I + A) = rhs^T): MKL then returns
    X in row-major order, which is about 20% faster here and makes the copy into the [.., T, V] output contiguous.
    """
    lhs = A if transpose else A.transpose(-1, -2)
    x_t: Tensor = torch.linalg.solve_triangular(lhs, rhs.transpose(-1, -2), upper=not transpose, left=False,
                                                unitriangular=True)
    return x_t.transpose(-1, -2)


def _merge_prefix(P_in: Tensor, acc: Tensor | None, lse: Tensor | None, prefix_acc: Tensor,
                  prefix_lse: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
    """(P_in, acc, lse) of one chunk with an earlier segment's contribution to its rows merged in.

    ``prefix_acc`` [.., c, V] is that segment's sum_j kappa_1(w_t, k_j) u_j for the linear, round and exp kernels
    (added to acc); for softmax it is the segment's normalised output and ``prefix_lse`` [.., c] its row
    log-sum-exp (finite: the segment has keys), merged by the online-softmax rule: lse' = logaddexp(lse, lse_pre),
    P_in' = P_in exp(lse - lse'), acc' = acc exp(lse - lse') + prefix_acc exp(lse_pre - lse'). The scale factors are
    at most 1, so nothing the merged normaliser needs can underflow that did not already. ``P_in`` is overwritten.
    """
    if prefix_lse is None:
        return P_in, prefix_acc if acc is None else acc + prefix_acc, lse
    assert lse is not None
    merged = torch.logaddexp(lse, prefix_lse)
    own = torch.exp(lse - merged)[..., None]
    from_prefix = prefix_acc * torch.exp(prefix_lse - merged)[..., None]
    return P_in.mul_(own), from_prefix if acc is None else torch.addcmul(from_prefix, acc, own), merged


def _u_forward(w: Tensor, k: Tensor, v: Tensor, beta: Tensor, kernel: str, scale: float, chunk_size: int,
               for_backward: bool = True, flash: bool | None = None,
               prefix: tuple[Tensor, Tensor | None] | None = None) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """u, r = P u (the write-attention output) and the row lse (flash path, softmax) for [B, H, T, *] inputs.

    r and lse are what the backward needs; without ``for_backward`` they are not computed (None). ``flash``: which
    chunk algorithm; None: ``_flash_path`` of these inputs (the callers decide once per call and pass it, so the
    forward and the backward of one call agree). ``prefix``: the contribution of keys *before* this sequence
    (``_merge_prefix``'s (prefix_acc, prefix_lse) for all T rows), as impl.distributed passes for a later shard;
    r and lse (then saved on both paths for softmax) cover those keys too, which is all ``_u_backward`` needs to
    give this sequence's pairs their exact gradients.
    """
    flash = _flash_path(w, k, v, kernel, scale) if flash is None else flash
    T = w.shape[2]
    u = torch.empty_like(v)
    r = torch.empty_like(v) if for_backward else None
    saves_lse = kernel == "softmax" and for_backward and (flash or prefix is not None)
    lse = torch.empty_like(beta) if saves_lse else None
    for s in range(0, T, chunk_size):
        e = min(s + chunk_size, T)
        chunk = _chunk(flash, w, k, kernel, scale, s, e)
        P_in, acc, lse_c = chunk.forward(u)
        if prefix is not None:
            if isinstance(chunk, _MatmulChunk) and kernel == "softmax":
                lse_c = chunk.row_lse()
            P_in, acc, lse_c = _merge_prefix(P_in, acc, lse_c, prefix[0][:, :, s:e],
                                             None if prefix[1] is None else prefix[1][:, :, s:e])
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
                kernel: str, scale: float, chunk_size: int, flash: bool | None = None,
                straight_through: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(dw, dk, dv, dbeta) by the reverse chunk walk; ``flash`` as in ``_u_forward`` (it must be the forward's)."""
    flash = _flash_path(w, k, u, kernel, scale) if flash is None else flash
    T = w.shape[2]
    dw = torch.zeros_like(w)
    dk = torch.zeros_like(k)
    dv = torch.empty_like(u)
    dbeta = torch.empty_like(beta)
    g = grad_u.clone()
    columns = _FlashColumns(w, k, u, r, lse, kernel, scale) if flash else None
    for s in reversed(range(0, T, chunk_size)):
        e = min(s + chunk_size, T)
        if columns is not None:
            columns.backward(s, e, dw, dk, g)
        block = _chunk(flash, w, k, kernel, scale, s, e)
        P = block.probs_for_backward(None if lse is None else lse[:, :, s:e])
        beta_c = beta[:, :, s:e, None]
        X = _solve_unit_lower(beta_c * block.diagonal(P), g[:, :, s:e], transpose=True)
        dv[:, :, s:e] = X
        r_c = r[:, :, s:e]
        dbeta[:, :, s:e] = -(X * r_c).sum(-1)
        d_out = -beta_c * X
        if columns is not None:
            columns.d_out[:, :, s:e] = d_out
        block.backward(u, r_c, d_out, dw, dk, g, P, straight_through)
    return dw, dk, dv, dbeta


def _u_dense_backward(grad_u: Tensor, w: Tensor, k: Tensor, u: Tensor, beta: Tensor, kernel: str,
                      scale: float, straight_through: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(dw, dk, dv, dbeta) by differentiable [T, T] torch ops: the backward under create_graph=True.

    The same formulas as the chunked backward (impl/README.md) on the whole matrix: X = M^-T G with
    M = I + diag(beta) P, dv = X, dbeta_t = -X_t . (P u)_t, and the score gradient of dO = -diag(beta) X. Built from
    the saved output u, so autograd differentiates it through u's own graph (a second call of this Function's
    backward) and the double backward is exact."""
    T = w.shape[2]
    mask = _strict_mask(T, T, 0, w.device)
    kappa = get_write_kernel(kernel)
    P = kappa.weights(scale * torch.matmul(w, k.transpose(-1, -2)), mask)
    M = torch.eye(T, dtype=w.dtype, device=w.device) + beta[..., None] * P
    X = torch.linalg.solve_triangular(M.transpose(-1, -2), grad_u, upper=True, unitriangular=True)
    dbeta = -(X * torch.matmul(P, u)).sum(-1)
    score_grad = _score_grad(kernel, straight_through)
    if score_grad is None:
        return torch.zeros_like(w), torch.zeros_like(k), X, dbeta
    d_out = -beta[..., None] * X
    dS = score_grad(P, torch.matmul(d_out, u.transpose(-1, -2)), mask) * scale
    return torch.matmul(dS, k), torch.matmul(dS.transpose(-1, -2), w), X, dbeta


class DeltaFormerU(torch.autograd.Function):
    """u = DF.4(w, k, v, beta) on [B, H, T, *] tensors of one dtype (fp32 or fp64); backward by chunks, or by
    ``_u_dense_backward`` (differentiable) under create_graph=True."""

    @staticmethod
    def forward(ctx: Any, w: Tensor, k: Tensor, v: Tensor, beta: Tensor, kernel: str, scale: float,
                chunk_size: int, straight_through: bool = False) -> Tensor:
        flash = _flash_path(w, k, v, kernel, scale)
        u, r, lse = over_head_groups(partial(_u_forward, kernel=kernel, scale=scale, chunk_size=chunk_size,
                                             flash=flash), w, k, v, beta)
        assert u is not None
        ctx.save_for_backward(w, k, u, beta, r, lse)
        ctx.options = (kernel, scale, chunk_size, flash, straight_through)
        return u

    @staticmethod
    def backward(ctx: Any, grad_u: Tensor) -> tuple[Tensor | None, ...]:
        w, k, u, beta, r, lse = ctx.saved_tensors
        kernel, scale, chunk_size, flash, straight_through = ctx.options
        if torch.is_grad_enabled():
            return *_u_dense_backward(grad_u, w, k, u, beta, kernel, scale, straight_through), None, None, None, None
        grads = over_head_groups(partial(_u_backward, kernel=kernel, scale=scale, chunk_size=chunk_size, flash=flash,
                                         straight_through=straight_through),
                                 grad_u.contiguous(), w, k, u, beta, r, lse)
        return *grads, None, None, None, None


def _u_bhtd(w: Tensor, k: Tensor, v: Tensor, beta: Tensor, kernel: str, scale: float, chunk_size: int,
            straight_through: bool = False) -> Tensor:
    """DF.4 with autograd when a gradient can flow; otherwise the forward alone, without r and lse."""
    if torch.is_grad_enabled() and any(x.requires_grad for x in (w, k, v, beta)):
        out: Tensor = DeltaFormerU.apply(  # type: ignore[no-untyped-call]
            w, k, v, beta, kernel, scale, chunk_size, straight_through)
        return out
    flash = _flash_path(w, k, v, kernel, scale)
    u = over_head_groups(partial(_u_forward, kernel=kernel, scale=scale, chunk_size=chunk_size, flash=flash,
                                 for_backward=False), w, k, v, beta)[0]
    assert u is not None
    return u


def deltaformer_u(w: Tensor, k: Tensor, v: Tensor, beta: Tensor, *, kernel: str, scale: float,
                  chunk_size: int | None, cu_seqlens: Tensor | None, straight_through: bool = False) -> Tensor:
    """Torch backend of ``impl.deltaformer_u``: w, k [B, T, H, K], v [B, T, H, V], beta [B, T, H] -> u [B, T, H, V].

    Implements spec.deltaformer.deltaformer_u (DF.1) per (batch, head) by the chunked form DF.4. ``chunk_size``
    None: ``default_chunk_size``. ``straight_through`` (round kernel): the backward takes round' = 1.
    """
    chunk = default_chunk_size(w.device) if chunk_size is None else chunk_size
    dtype = compute_dtype(v.dtype)

    def run(w_: Tensor, k_: Tensor, v_: Tensor, beta_: Tensor) -> Tensor:
        u = _u_bhtd(to_bhtd(w_, dtype), to_bhtd(k_, dtype), to_bhtd(v_, dtype), to_bhtd(beta_, dtype), kernel,
                    scale, chunk, straight_through)
        return from_bhtd(u, v.dtype)

    return varlen_map(run, cu_seqlens, w, k, v, beta)


def deltaformer_attn(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, *, write: str, kernel: str,
                     write_scale: float, read_scale: float, chunk_size: int | None,
                     cu_seqlens: Tensor | None, straight_through: bool = False) -> Tensor:
    """Torch backend of ``impl.deltaformer_attn``: o = causal_softmax(read_scale Q K^T) U, U from DF.4 with
    ``write_scale`` in kappa_1.

    Implements spec.deltaformer.deltaformer_attn (DF.9). The read-out is ``_readout.causal_softmax_attention``
    (the fused CPU flash op, any real scale, differentiable twice). ``chunk_size`` None: ``default_chunk_size``.
    """
    chunk = default_chunk_size(q.device) if chunk_size is None else chunk_size
    dtype = compute_dtype(v.dtype)

    def run(q_: Tensor, k_: Tensor, v_: Tensor, beta_: Tensor) -> Tensor:
        qb, kb = to_bhtd(q_, dtype), to_bhtd(k_, dtype)
        u = _u_bhtd(qb if write == "q" else kb, kb, to_bhtd(v_, dtype), to_bhtd(beta_, dtype), kernel,
                    write_scale, chunk, straight_through)
        values, correction = split_nonfinite(u, dim=2)
        o = causal_softmax_attention(qb, kb, values, read_scale)
        return from_bhtd(o if correction is None else o + correction, v.dtype)

    return varlen_map(run, cu_seqlens, q, k, v, beta)


def deltaformer_decode_step(cache_k: Tensor, cache_u: Tensor, q_t: Tensor, k_t: Tensor, v_t: Tensor, beta_t: Tensor,
                            *, write: str, kernel: str, write_scale: float,
                            read_scale: float) -> tuple[Tensor, Tensor, Tensor]:
    """Torch backend of ``impl.deltaformer_decode_step`` (DF.10): (o_t [B, H, V], cache_k, cache_u grown by one).

    cache_k [B, t, H, K], cache_u [B, t, H, V] (t may be 0), q_t, k_t [B, H, K], v_t [B, H, V], beta_t [B, H].
    u_t = v_t - beta_t sum_{j<t} kappa_1(w_t, k_j) u_j is one attention of w_t over the cache, then
    o_t = sum_{j<=t} softmax_j(read_scale q_t . k_j) u_j. Computed in the compute dtype; the cache keeps the input
    dtype.
    """
    dtype = compute_dtype(q_t.dtype)
    q32, k32, v32 = q_t.to(dtype), k_t.to(dtype), v_t.to(dtype)
    keys_prev, u_prev = cache_k.to(dtype), cache_u.to(dtype)
    w32 = q32 if write == "q" else k32
    u32 = v32
    if cache_k.shape[1] > 0:
        scores = torch.einsum("bhk,bthk->bht", w32, keys_prev) * write_scale
        weights = get_write_kernel(kernel).weights(scores, None)
        u32 = v32 - beta_t.to(dtype)[..., None] * torch.einsum("bht,bthv->bhv", weights, u_prev)
    keys = torch.cat([keys_prev, k32[:, None]], dim=1)
    values = torch.cat([u_prev, u32[:, None]], dim=1)
    attn = torch.softmax(torch.einsum("bhk,bthk->bht", q32, keys) * read_scale, dim=-1)
    o = torch.einsum("bht,bthv->bhv", attn, values)
    return (o.to(q_t.dtype), torch.cat([cache_k, k_t[:, None]], dim=1),
            torch.cat([cache_u, u32.to(q_t.dtype)[:, None]], dim=1))
