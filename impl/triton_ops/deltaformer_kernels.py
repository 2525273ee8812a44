"""DeltaFormer Triton kernels (``@triton.jit`` only; host code in ``deltaformer.py``, derivations in README.md).

Forward, one launch per chunk [cs, ce) of C rows, chunks in order (u of a chunk depends on all earlier chunks):
  ``deltaformer_fwd_kernel_chunk``   program 0 per head: merge the partial statistics of keys j < cs - C, fold the
                                     previous chunk, then the chunk's row tiles in order: the diagonal tile's unit
                                     lower-triangular solve (I + diag(beta) P) u = v - beta * acc in fp32 by a blocked
                                     inverse; programs 1..: partial statistics of the NEXT chunk's rows over splits
                                     of the finished keys (running max m, sum l, acc = sum p_tj u_j)
  ``deltaformer_fwd_kernel_read``    causal flash-style softmax attention over (q, k, u); stores the log-sum-exp
Backward: ``deltaformer_bwd_kernel_dk`` / ``_dq`` (the read-out's, then the write similarity's, FlashAttention-2
style), ``deltaformer_bwd_kernel_inverse`` (the transposed inverses of every chunk's diagonal tiles, all at once) and
``deltaformer_bwd_kernel_chunk`` (X = M^-T du, one launch per chunk in reverse order: program 0 solves the chunk,
the others sum the next chunk's suffix partials over splits of the finished later rows).

Layout [B, T, H, D] (row-major); with ``cu_seqlens`` B == 1 and the rows of sequence n are [bos, eos).
KERNEL: "softmax" (normalised over j < t), "exp", "linear", "round" (half to even, as numpy.rint).
"""

import triton
import triton.language as tl

from impl.triton_ops.shared_kernels import inverse_unit_lower_blocked, seq_bounds


@triton.jit
def _tile(base, row0, STRIDE: tl.constexpr, o_r, o_c):
    """Pointers [len(o_r), len(o_c)] to rows row0 + o_r: int64 scalar row base, int32 in-tile offsets."""
    return base + tl.cast(row0, tl.int64) * STRIDE + o_r[:, None] * STRIDE + o_c[None, :]


@triton.jit
def _vec(base, row0, STRIDE: tl.constexpr, o_r):
    """Pointers [len(o_r)] to the per-row scalars of rows row0 + o_r."""
    return base + tl.cast(row0, tl.int64) * STRIDE + o_r * STRIDE


@triton.jit
def _round_half_even(b_s):
    b_f = tl.floor(b_s + 0.5)
    b_tie = (b_f - b_s) == 0.5
    b_odd = (b_f - 2.0 * tl.floor(b_f * 0.5)) == 1.0
    return tl.where(b_tie & b_odd, b_f - 1.0, b_f)


@triton.jit
def _kappa(b_s, KERNEL: tl.constexpr):
    if KERNEL == "exp":
        b_p = tl.exp(b_s)
    elif KERNEL == "linear":
        b_p = b_s
    else:
        b_p = _round_half_even(b_s)
    return b_p


@triton.jit
def _online_update(b_s, m_s, b_u, b_m, b_l, b_acc, KERNEL: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Fold one key tile into (m, l, acc): scores b_s [BT, BS] with admissible mask m_s, values b_u [BS, BV]."""
    if KERNEL == "softmax":
        b_s = tl.where(m_s, b_s, float("-inf"))
        b_mn = tl.maximum(b_m, tl.max(b_s, 1))
        # a row with no admissible key so far keeps m = -inf; shift by 0 instead so no inf - inf appears
        b_ms = tl.where(b_mn == float("-inf"), 0.0, b_mn)
        b_p = tl.exp(b_s - b_ms[:, None])
        b_alpha = tl.exp(b_m - b_ms)
        b_l = b_l * b_alpha + tl.sum(b_p, 1)
        b_acc = b_acc * b_alpha[:, None]
        b_m = b_mn
    else:
        b_p = tl.where(m_s, _kappa(b_s, KERNEL), 0.0)
    b_acc += tl.dot(b_p.to(b_u.dtype), b_u, input_precision=DOT_PRECISION)
    return b_m, b_l, b_acc


@triton.jit
def _merge_partial(b_m, b_l, b_acc, b_mp, b_lp, b_accp, KERNEL: tl.constexpr):
    """Combine running statistics with a partial over another key range (log-sum-exp merge for softmax)."""
    if KERNEL == "softmax":
        b_mn = tl.maximum(b_m, b_mp)
        b_ms = tl.where(b_mn == float("-inf"), 0.0, b_mn)
        b_a = tl.exp(b_m - b_ms)
        b_ap = tl.exp(b_mp - b_ms)
        b_l = b_l * b_a + b_lp * b_ap
        b_acc = b_acc * b_a[:, None] + b_accp * b_ap[:, None]
        b_m = b_mn
    else:
        b_acc = b_acc + b_accp
    return b_m, b_l, b_acc


@triton.jit
def _fold_keys(b_w, k, u, k0, k1, b_m, b_l, b_acc, scale, o_j, o_k, o_v, m_k, m_v,
               H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BS: tl.constexpr, KERNEL: tl.constexpr,
               ACC: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Fold keys [k0, k1) (their u final) into the statistics of the rows of b_w, in tiles of BS keys."""
    for s0 in range(k0, k1, BS):
        o_s = s0 + o_j
        m_s = o_s < k1
        # [BS, BK], [BS, BV]
        b_k = tl.load(_tile(k, s0, H * K, o_j, o_k), mask=m_s[:, None] & m_k[None, :], other=0.0)
        b_u = tl.load(_tile(u, s0, H * V, o_j, o_v), mask=m_s[:, None] & m_v[None, :], other=0.0)
        # [BT, BS]
        b_s = tl.dot(b_w, tl.trans(b_k), input_precision=DOT_PRECISION).to(ACC) * scale
        b_m, b_l, b_acc = _online_update(b_s, m_s[None, :], b_u, b_m, b_l, b_acc, KERNEL, DOT_PRECISION)
    return b_m, b_l, b_acc


@triton.jit(do_not_specialize=["T", "C", "i_c", "N", "NS_READ", "KS", "NSMAX"])
def deltaformer_fwd_kernel_chunk(
    w, k, v, beta, u, lse, r, part_acc, part_ml, cu_seqlens, scale, T, C, i_c, N, NS_READ, KS, NSMAX,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BTS: tl.constexpr, BS: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, CR: tl.constexpr,
    KERNEL: tl.constexpr, IS_VARLEN: tl.constexpr, ACC: tl.constexpr,
    DOT_PRECISION: tl.constexpr, SOLVE_PRECISION: tl.constexpr, STORE_R: tl.constexpr,
):
    """One launch per chunk i_c. Program 0 (per sequence and head) solves chunk i_c; programs 1.. compute, for the
    rows of chunk i_c + 1, partial statistics over a split of the finished keys [0, i_c C) (split (p - 1) // NTC,
    row tile (p - 1) % NTC of BT rows), which the next launch's solver merges. Partials of chunk c live in buffer
    c % 2. The solver walks its chunk in row tiles of BTS (<= BT: its inverse and residual keep more tiles live)."""
    i_p, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_h = i_nh // H, i_nh % H
    bos, eos = seq_bounds(cu_seqlens, i_n.to(tl.int64), T, IS_VARLEN)
    L = (eos - bos).to(tl.int32)
    NTC: tl.constexpr = (CR + BT - 1) // BT
    w += (bos * H + i_h) * K
    k += (bos * H + i_h) * K
    v += (bos * H + i_h) * V
    u += (bos * H + i_h) * V
    beta += bos * H + i_h
    lse += bos * H + i_h
    o_i = tl.arange(0, BT)
    o_j = tl.arange(0, BS)
    o_k = tl.arange(0, BK)
    o_v = tl.arange(0, BV)
    m_k = o_k < K
    m_v = o_v < V
    if i_p > 0:
        # partial statistics for rows of chunk i_c + 1 over keys [s KS, min((s + 1) KS, i_c C))
        i_t = (i_p - 1) % NTC
        i_s = (i_p - 1) // NTC
        cs = (i_c + 1) * C
        ce = tl.minimum(cs + C, L)
        r0 = cs + i_t * BT
        if r0 >= ce:
            return
        m_t = (r0 + o_i) < ce
        k0 = i_s * KS
        k1 = tl.minimum(k0 + KS, i_c * C)
        # [BT, BK]
        b_w = tl.load(_tile(w, r0, H * K, o_i, o_k), mask=m_t[:, None] & m_k[None, :], other=0.0)
        b_m = tl.full([BT], float("-inf"), dtype=ACC)
        b_l = tl.zeros([BT], dtype=ACC)
        b_acc = tl.zeros([BT, BV], dtype=ACC)
        b_m, b_l, b_acc = _fold_keys(b_w, k, u, k0, k1, b_m, b_l, b_acc, scale, o_j, o_k, o_v, m_k, m_v,
                                     H, K, V, BS, KERNEL, ACC, DOT_PRECISION)
        slot = (((i_c + 1) % 2) * NSMAX + i_s) * N + i_n
        p_acc = part_acc + tl.cast(slot, tl.int64) * (CR * H * V) + i_h * V
        tl.store(_tile(p_acc, r0 - cs, H * V, o_i, o_v), b_acc.to(part_acc.dtype.element_ty),
                 mask=m_t[:, None] & m_v[None, :])
        if KERNEL == "softmax":
            p_ml = part_ml + tl.cast(slot, tl.int64) * (CR * H * 2) + i_h * 2
            tl.store(_vec(p_ml, r0 - cs, H * 2, o_i), b_m.to(part_ml.dtype.element_ty), mask=m_t)
            tl.store(_vec(p_ml + 1, r0 - cs, H * 2, o_i), b_l.to(part_ml.dtype.element_ty), mask=m_t)
        return

    cs = i_c * C
    ce = tl.minimum(cs + C, L)
    if cs >= ce:
        return
    if STORE_R:
        r += (bos * H + i_h) * V
    o_i = tl.arange(0, BTS)
    for i_t in range(0, tl.cdiv(ce - cs, BTS)):
        r0 = cs + i_t * BTS
        o_t = r0 + o_i
        m_t = o_t < ce
        m_tv = m_t[:, None] & m_v[None, :]
        # [BTS, BK]
        b_w = tl.load(_tile(w, r0, H * K, o_i, o_k), mask=m_t[:, None] & m_k[None, :], other=0.0)
        b_m = tl.full([BTS], float("-inf"), dtype=ACC)
        b_l = tl.zeros([BTS], dtype=ACC)
        b_acc = tl.zeros([BTS, BV], dtype=ACC)
        # keys [0, cs - C): partials computed by the previous launch, one per key split
        for i_s in range(0, NS_READ):
            slot = ((i_c % 2) * NSMAX + i_s) * N + i_n
            p_acc = part_acc + tl.cast(slot, tl.int64) * (CR * H * V) + i_h * V
            b_accp = tl.load(_tile(p_acc, r0 - cs, H * V, o_i, o_v), mask=m_tv, other=0.0).to(ACC)
            b_mp = tl.full([BTS], float("-inf"), dtype=ACC)
            b_lp = tl.zeros([BTS], dtype=ACC)
            if KERNEL == "softmax":
                p_ml = part_ml + tl.cast(slot, tl.int64) * (CR * H * 2) + i_h * 2
                b_mp = tl.load(_vec(p_ml, r0 - cs, H * 2, o_i), mask=m_t, other=float("-inf")).to(ACC)
                b_lp = tl.load(_vec(p_ml + 1, r0 - cs, H * 2, o_i), mask=m_t, other=0.0).to(ACC)
            b_m, b_l, b_acc = _merge_partial(b_m, b_l, b_acc, b_mp, b_lp, b_accp, KERNEL)
        # keys [cs - C, r0): the previous chunk (solved by the previous launch) and this chunk's earlier row tiles
        # (solved by this program; the barrier at the end of each tile orders their store and this load)
        b_m, b_l, b_acc = _fold_keys(b_w, k, u, tl.maximum(cs - C, 0), r0, b_m, b_l, b_acc, scale, o_j, o_k, o_v,
                                     m_k, m_v, H, K, V, BS, KERNEL, ACC, DOT_PRECISION)

        # [BTS, BK]
        b_k = tl.load(_tile(k, r0, H * K, o_i, o_k), mask=m_t[:, None] & m_k[None, :], other=0.0)
        # [BTS, BTS] the diagonal tile, strictly lower part
        b_s = tl.dot(b_w, tl.trans(b_k), input_precision=DOT_PRECISION).to(ACC) * scale
        m_d = (o_i[:, None] > o_i[None, :]) & m_t[None, :]
        if KERNEL == "softmax":
            b_s = tl.where(m_d, b_s, float("-inf"))
            b_mn = tl.maximum(b_m, tl.max(b_s, 1))
            b_ms = tl.where(b_mn == float("-inf"), 0.0, b_mn)
            b_p = tl.exp(b_s - b_ms[:, None])
            b_alpha = tl.exp(b_m - b_ms)
            b_l = b_l * b_alpha + tl.sum(b_p, 1)
            # the first row of a sequence has no earlier key: l = 0, acc = 0, and nothing is subtracted
            b_rl = tl.where(b_l > 0, 1.0 / tl.where(b_l > 0, b_l, 1.0), 0.0)
            b_a = b_acc * (b_alpha * b_rl)[:, None]
            b_P = b_p * b_rl[:, None]
            b_lse = tl.where(b_l > 0, b_ms + tl.log(tl.where(b_l > 0, b_l, 1.0)), float("-inf"))
            tl.store(_vec(lse, r0, H, o_i), b_lse.to(lse.dtype.element_ty), mask=m_t)
        else:
            b_a = b_acc
            b_P = tl.where(m_d, _kappa(b_s, KERNEL), 0.0)
        # [BTS, BV]
        b_v = tl.load(_tile(v, r0, H * V, o_i, o_v), mask=m_tv, other=0.0).to(ACC)
        # [BTS]
        b_beta = tl.load(_vec(beta, r0, H, o_i), mask=m_t, other=0.0).to(ACC)
        # residual in the accumulation type, never rounded to the input type before the subtraction
        b_r = b_v - b_beta[:, None] * b_a
        b_Ai = inverse_unit_lower_blocked(b_beta[:, None] * b_P, BTS, SOLVE_PRECISION)
        b_u = tl.dot(b_Ai, b_r, input_precision=SOLVE_PRECISION)
        tl.store(_tile(u, r0, H * V, o_i, o_v), b_u.to(u.dtype.element_ty), mask=m_tv)
        if STORE_R:
            # the write-attention output r = P u (for the backward: dbeta_t = -X_t . r_t), in the accumulation type
            b_rr = b_a + tl.dot(b_P, b_u, input_precision=SOLVE_PRECISION)
            tl.store(_tile(r, r0, H * V, o_i, o_v), b_rr.to(r.dtype.element_ty), mask=m_tv)
        # later tiles of this chunk read these rows of u back from global memory
        tl.debug_barrier()


@triton.jit(do_not_specialize=["T"])
def deltaformer_fwd_kernel_read(
    q, k, u, o, lse, cu_seqlens, scale, T,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BS: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    IS_VARLEN: tl.constexpr, ACC: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    i_t, i_v, i_nh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_n, i_h = i_nh // H, i_nh % H
    bos, eos = seq_bounds(cu_seqlens, i_n.to(tl.int64), T, IS_VARLEN)
    L = (eos - bos).to(tl.int32)
    if i_t * BT >= L:
        return
    # int64 only in scalar bases (sequence, head, tile row); in-tile offsets stay int32
    q += (bos * H + i_h) * K
    k += (bos * H + i_h) * K
    u += (bos * H + i_h) * V + i_v * BV
    o += (bos * H + i_h) * V + i_v * BV
    lse += bos * H + i_h
    o_i = tl.arange(0, BT)
    o_j = tl.arange(0, BS)
    o_k = tl.arange(0, BK)
    o_v = tl.arange(0, BV)
    m_k = o_k < K
    m_v = o_v < V - i_v * BV
    r0 = i_t * BT
    o_t = r0 + o_i
    m_t = o_t < L
    # [BT, BK]
    b_q = tl.load(_tile(q, r0, H * K, o_i, o_k), mask=m_t[:, None] & m_k[None, :], other=0.0)
    b_m = tl.full([BT], float("-inf"), dtype=ACC)
    b_l = tl.zeros([BT], dtype=ACC)
    b_o = tl.zeros([BT, BV], dtype=ACC)
    # keys j <= t: up to the end of this row tile, clipped to the sequence
    for i_s in range(0, tl.cdiv(tl.minimum(i_t * BT + BT, L), BS)):
        s0 = i_s * BS
        o_s = s0 + o_j
        m_s = o_s < L
        # [BS, BK]
        b_k = tl.load(_tile(k, s0, H * K, o_j, o_k), mask=m_s[:, None] & m_k[None, :], other=0.0)
        # [BS, BV]
        b_u = tl.load(_tile(u, s0, H * V, o_j, o_v), mask=m_s[:, None] & m_v[None, :], other=0.0)
        # [BT, BS]
        b_s = tl.dot(b_q, tl.trans(b_k), input_precision=DOT_PRECISION).to(ACC) * scale
        m_ts = (o_t[:, None] >= o_s[None, :]) & m_s[None, :]
        b_m, b_l, b_o = _online_update(b_s, m_ts, b_u, b_m, b_l, b_o, "softmax", DOT_PRECISION)
    b_o = b_o / b_l[:, None]
    tl.store(_tile(o, r0, H * V, o_i, o_v), b_o.to(o.dtype.element_ty), mask=m_t[:, None] & m_v[None, :])
    if i_v == 0:
        tl.store(_vec(lse, r0, H, o_i), (b_m + tl.log(b_l)).to(lse.dtype.element_ty), mask=m_t)


# ----------------------------------------------------------------------------------------------------------------
# Backward. Notation per (sequence, head): forward M u = v with M = I + diag(beta) P (write scores, j < t), read-out
# o = A u with A the causal softmax (j <= t). With G = dL/du: X = M^-T G, dv = X, dbeta_t = -X_t . r_t (r = P u),
# and the write-score gradients are an attention backward with queries w, keys k, values u and output gradient
# dO_t = -beta_t X_t: dP_tj = dO_t . u_j, softmax dS = P (dP - D_t) with D_t = dO_t . r_t = beta_t dbeta_t.
# ----------------------------------------------------------------------------------------------------------------


@triton.jit
def _probs(b_s, b_lse, m_s, KERNEL: tl.constexpr):
    """P for a score tile b_s [R, S] under the admissible mask m_s; softmax uses the saved row log-sum-exp b_lse
    (already broadcast to b_s's shape; -inf, i.e. a row without keys, has no admissible entry and becomes 0)."""
    if KERNEL == "softmax":
        b_lse = tl.where(b_lse == float("-inf"), 0.0, b_lse)
        b_p = tl.exp(tl.where(m_s, b_s - b_lse, float("-inf")))
    else:
        b_p = tl.where(m_s, _kappa(b_s, KERNEL), 0.0)
    return b_p


@triton.jit
def _score_grad(b_p, b_dp, b_D, m_s, KERNEL: tl.constexpr):
    """dL/ds from dL/dP: softmax P (dP - D) (D = sum_j P dP per query row, broadcast), exp P dP, linear dP; zero
    outside the admissible mask m_s, selected rather than multiplied: dP = dO_t . u_j at a masked pair (j >= t) can
    overflow to inf when u grows (exp write, beta = 1), and P = 0 there would make 0 * inf = NaN."""
    if KERNEL == "softmax":
        b_ds = b_p * (b_dp - b_D)
    elif KERNEL == "exp":
        b_ds = b_p * b_dp
    else:
        b_ds = b_dp
    return tl.where(m_s, b_ds, 0.0)


@triton.jit
def deltaformer_bwd_kernel_rowdot(a, b, out, R, V: tl.constexpr, BR: tl.constexpr, BV: tl.constexpr,
                                  ACC: tl.constexpr):
    """out_r = sum_v a_rv b_rv over R contiguous rows of V: delta = rowsum(do * o) (read) and X . r (write)."""
    i_r = tl.program_id(0)
    o_r = tl.cast(i_r, tl.int64) * BR + tl.arange(0, BR)
    o_v = tl.arange(0, BV)
    m_r = o_r < R
    m = m_r[:, None] & (o_v < V)[None, :]
    b_a = tl.load(a + o_r[:, None] * V + o_v[None, :], mask=m, other=0.0).to(ACC)
    b_b = tl.load(b + o_r[:, None] * V + o_v[None, :], mask=m, other=0.0).to(ACC)
    tl.store(out + o_r, tl.sum(b_a * b_b, 1).to(out.dtype.element_ty), mask=m_r)


@triton.jit(do_not_specialize=["T"])
def deltaformer_bwd_kernel_dq(
    q, k, u, g, lse, D, dq_in, dq, cu_seqlens, scale, T,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BS: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    KERNEL: tl.constexpr, WRITE: tl.constexpr, ACCUMULATE: tl.constexpr, IS_VARLEN: tl.constexpr,
    ACC: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """Per query row tile: dq_t = scale sum_j dS_tj k_j (FlashAttention-2's dq pass), plus dq_in_t if ACCUMULATE
    (another pass's gradient of the same input; dq_in and dq may differ in dtype, never alias).

    WRITE False: the read-out (softmax over j <= t, g = do, D = delta). WRITE True: the write similarity (keys
    j < t, queries w, g = dO = -beta X, D = beta dbeta; KERNEL softmax, exp or linear), result dw. g is in the
    matmul operand dtype.
    """
    i_t, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_h = i_nh // H, i_nh % H
    bos, eos = seq_bounds(cu_seqlens, i_n.to(tl.int64), T, IS_VARLEN)
    L = (eos - bos).to(tl.int32)
    if i_t * BT >= L:
        return
    q += (bos * H + i_h) * K
    k += (bos * H + i_h) * K
    dq += (bos * H + i_h) * K
    dq_in += (bos * H + i_h) * K
    u += (bos * H + i_h) * V
    g += (bos * H + i_h) * V
    lse += bos * H + i_h
    D += bos * H + i_h
    o_i = tl.arange(0, BT)
    o_j = tl.arange(0, BS)
    o_k = tl.arange(0, BK)
    o_v = tl.arange(0, BV)
    m_k = o_k < K
    m_v = o_v < V
    r0 = i_t * BT
    o_t = r0 + o_i
    m_t = o_t < L
    # [BT, BK], [BT, BV]
    b_q = tl.load(_tile(q, r0, H * K, o_i, o_k), mask=m_t[:, None] & m_k[None, :], other=0.0)
    b_do = tl.load(_tile(g, r0, H * V, o_i, o_v), mask=m_t[:, None] & m_v[None, :], other=0.0)
    b_lse = tl.zeros([BT], dtype=ACC)
    b_D = tl.zeros([BT], dtype=ACC)
    if KERNEL == "softmax":
        b_lse = tl.load(_vec(lse, r0, H, o_i), mask=m_t, other=0.0).to(ACC)
        b_D = tl.load(_vec(D, r0, H, o_i), mask=m_t, other=0.0).to(ACC)
    b_dq = tl.zeros([BT, BK], dtype=ACC)
    for i_s in range(0, tl.cdiv(tl.minimum(r0 + BT, L), BS)):
        s0 = i_s * BS
        o_s = s0 + o_j
        m_s = o_s < L
        # [BS, BK], [BS, BV]
        b_k = tl.load(_tile(k, s0, H * K, o_j, o_k), mask=m_s[:, None] & m_k[None, :], other=0.0)
        b_u = tl.load(_tile(u, s0, H * V, o_j, o_v), mask=m_s[:, None] & m_v[None, :], other=0.0)
        # [BT, BS]
        b_s = tl.dot(b_q, tl.trans(b_k), input_precision=DOT_PRECISION).to(ACC) * scale
        if WRITE:
            m_ts = (o_t[:, None] > o_s[None, :]) & m_s[None, :] & m_t[:, None]
        else:
            m_ts = (o_t[:, None] >= o_s[None, :]) & m_s[None, :] & m_t[:, None]
        b_p = _probs(b_s, b_lse[:, None] + tl.zeros([BT, BS], dtype=ACC), m_ts, KERNEL)
        b_dp = tl.dot(b_do, tl.trans(b_u), input_precision=DOT_PRECISION).to(ACC)
        b_ds = _score_grad(b_p, b_dp, b_D[:, None], m_ts, KERNEL)
        b_dq += tl.dot(b_ds.to(b_k.dtype), b_k, input_precision=DOT_PRECISION)
    b_dq = b_dq * scale
    if ACCUMULATE:
        b_dq += tl.load(_tile(dq_in, r0, H * K, o_i, o_k), mask=m_t[:, None] & m_k[None, :], other=0.0).to(ACC)
    tl.store(_tile(dq, r0, H * K, o_i, o_k), b_dq.to(dq.dtype.element_ty), mask=m_t[:, None] & m_k[None, :])


@triton.jit(do_not_specialize=["T"])
def deltaformer_bwd_kernel_dk(
    q, k, u, g, lse, D, dk_in, dk, du, cu_seqlens, scale, T,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BS: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    KERNEL: tl.constexpr, WRITE: tl.constexpr, ACCUMULATE: tl.constexpr, IS_VARLEN: tl.constexpr,
    ACC: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """Per key tile: dk_j = scale sum_t dS_tj q_t (plus dk_in_j if ACCUMULATE), and (read-out only)
    du_j = sum_t P_tj do_t.

    One program owns a key tile and walks the query tiles after it, so dk is accumulated in registers and
    stored once: deterministic, no atomics. WRITE as in ``deltaformer_bwd_kernel_dq`` (q is then w, rows t > j).
    """
    i_t, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_h = i_nh // H, i_nh % H
    bos, eos = seq_bounds(cu_seqlens, i_n.to(tl.int64), T, IS_VARLEN)
    L = (eos - bos).to(tl.int32)
    if i_t * BT >= L:
        return
    q += (bos * H + i_h) * K
    k += (bos * H + i_h) * K
    dk += (bos * H + i_h) * K
    dk_in += (bos * H + i_h) * K
    u += (bos * H + i_h) * V
    if not WRITE:
        du += (bos * H + i_h) * V
    g += (bos * H + i_h) * V
    lse += bos * H + i_h
    D += bos * H + i_h
    o_i = tl.arange(0, BT)
    o_j = tl.arange(0, BS)
    o_k = tl.arange(0, BK)
    o_v = tl.arange(0, BV)
    m_k = o_k < K
    m_v = o_v < V
    j0 = i_t * BT
    o_s = j0 + o_i
    m_s = o_s < L
    # [BT, BK], [BT, BV]: this program's keys and values
    b_k = tl.load(_tile(k, j0, H * K, o_i, o_k), mask=m_s[:, None] & m_k[None, :], other=0.0)
    b_u = tl.load(_tile(u, j0, H * V, o_i, o_v), mask=m_s[:, None] & m_v[None, :], other=0.0)
    b_dk = tl.zeros([BT, BK], dtype=ACC)
    b_du = tl.zeros([BT, BV], dtype=ACC)
    # query tiles from the one holding row j0 to the end of the sequence
    for i_r in range(j0 // BS, tl.cdiv(L, BS)):
        t0 = i_r * BS
        o_t = t0 + o_j
        m_t = o_t < L
        # [BS, BK], [BS, BV]
        b_q = tl.load(_tile(q, t0, H * K, o_j, o_k), mask=m_t[:, None] & m_k[None, :], other=0.0)
        b_do = tl.load(_tile(g, t0, H * V, o_j, o_v), mask=m_t[:, None] & m_v[None, :], other=0.0)
        # [BT, BS]: transposed scores, rows = keys j, columns = queries t
        b_sT = tl.dot(b_k, tl.trans(b_q), input_precision=DOT_PRECISION).to(ACC) * scale
        if WRITE:
            m_st = (o_t[None, :] > o_s[:, None]) & m_t[None, :] & m_s[:, None]
        else:
            m_st = (o_t[None, :] >= o_s[:, None]) & m_t[None, :] & m_s[:, None]
        b_lse = tl.zeros([BS], dtype=ACC)
        b_D = tl.zeros([BS], dtype=ACC)
        if KERNEL == "softmax":
            b_lse = tl.load(_vec(lse, t0, H, o_j), mask=m_t, other=0.0).to(ACC)
            b_D = tl.load(_vec(D, t0, H, o_j), mask=m_t, other=0.0).to(ACC)
        b_pT = _probs(b_sT, b_lse[None, :] + tl.zeros([BT, BS], dtype=ACC), m_st, KERNEL)
        if not WRITE:
            b_du += tl.dot(b_pT.to(b_do.dtype), b_do, input_precision=DOT_PRECISION)
        b_dpT = tl.dot(b_u, tl.trans(b_do), input_precision=DOT_PRECISION).to(ACC)
        b_dsT = _score_grad(b_pT, b_dpT, b_D[None, :], m_st, KERNEL)
        b_dk += tl.dot(b_dsT.to(b_q.dtype), b_q, input_precision=DOT_PRECISION)
    b_dk = b_dk * scale
    if ACCUMULATE:
        b_dk += tl.load(_tile(dk_in, j0, H * K, o_i, o_k), mask=m_s[:, None] & m_k[None, :], other=0.0).to(ACC)
    tl.store(_tile(dk, j0, H * K, o_i, o_k), b_dk.to(dk.dtype.element_ty), mask=m_s[:, None] & m_k[None, :])
    if not WRITE:
        tl.store(_tile(du, j0, H * V, o_i, o_v), b_du.to(du.dtype.element_ty), mask=m_s[:, None] & m_v[None, :])


@triton.jit
def _fold_rows(b_k, m_s, w, do, lse, t0, t1, b_acc, scale, o_j, o_k, o_v, m_k, m_v,
               H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BS: tl.constexpr, KERNEL: tl.constexpr,
               ACC: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """acc_j += sum_{t in [t0, t1)} P_tj dO_t, dO_t = -beta_t X_t (stored final, in the operand dtype), for the key
    rows j of b_k (every t in the range is later than every j), in tiles of BS rows; P from the saved lse."""
    for s0 in range(t0, t1, BS):
        o_t = s0 + o_j
        m_t = o_t < t1
        # [BS, BK], [BS, BV]
        b_w = tl.load(_tile(w, s0, H * K, o_j, o_k), mask=m_t[:, None] & m_k[None, :], other=0.0)
        b_do = tl.load(_tile(do, s0, H * V, o_j, o_v), mask=m_t[:, None] & m_v[None, :], other=0.0)
        b_lse = tl.zeros([BS], dtype=ACC)
        if KERNEL == "softmax":
            b_lse = tl.load(_vec(lse, s0, H, o_j), mask=m_t, other=0.0).to(ACC)
        # [BT, BS] transposed scores (rows = keys j, columns = later rows t)
        b_sT = tl.dot(b_k, tl.trans(b_w), input_precision=DOT_PRECISION).to(ACC) * scale
        m_st = m_s[:, None] & m_t[None, :]
        b_pT = _probs(b_sT, b_lse[None, :] + tl.zeros_like(b_sT), m_st, KERNEL)
        b_acc += tl.dot(b_pT.to(b_do.dtype), b_do, input_precision=DOT_PRECISION)
    return b_acc


@triton.jit(do_not_specialize=["T", "C"])
def deltaformer_bwd_kernel_inverse(
    w, k, beta, lse, ainv, cu_seqlens, scale, T, C,
    H: tl.constexpr, K: tl.constexpr, BTS: tl.constexpr, BK: tl.constexpr, CR: tl.constexpr,
    KERNEL: tl.constexpr, IS_VARLEN: tl.constexpr, ACC: tl.constexpr,
    DOT_PRECISION: tl.constexpr, SOLVE_PRECISION: tl.constexpr,
):
    """Every diagonal tile at once (program (chunk, tile), tiles of BTS rows aligned at the chunk start, as the
    forward's): Ai = (I + diag(beta) P_ii)^-1 by the blocked inverse, stored TRANSPOSED in rows j0.. of ainv
    [B, T, H, BTS] (row j0 + a holds column a of Ai), so the walk's X_i = Ai^T rhs_i is a plain matmul. P_ii is
    the strictly lower in-tile part of the softmax normalised over all j < t (saved lse), as in the forward."""
    NTS: tl.constexpr = (CR + BTS - 1) // BTS
    i_p, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_h = i_nh // H, i_nh % H
    bos, eos = seq_bounds(cu_seqlens, i_n.to(tl.int64), T, IS_VARLEN)
    L = (eos - bos).to(tl.int32)
    i_c = i_p // NTS
    cs = i_c * C
    ce = tl.minimum(cs + C, L)
    j0 = cs + (i_p % NTS) * BTS
    if j0 >= ce:
        return
    w += (bos * H + i_h) * K
    k += (bos * H + i_h) * K
    beta += bos * H + i_h
    lse += bos * H + i_h
    ainv += (bos * H + i_h) * BTS
    o_i = tl.arange(0, BTS)
    o_k = tl.arange(0, BK)
    m_k = o_k < K
    m_s = (j0 + o_i) < ce
    # [BTS, BK]
    b_w = tl.load(_tile(w, j0, H * K, o_i, o_k), mask=m_s[:, None] & m_k[None, :], other=0.0)
    b_k = tl.load(_tile(k, j0, H * K, o_i, o_k), mask=m_s[:, None] & m_k[None, :], other=0.0)
    b_beta = tl.load(_vec(beta, j0, H, o_i), mask=m_s, other=0.0).to(ACC)
    b_lse = tl.zeros([BTS], dtype=ACC)
    if KERNEL == "softmax":
        b_lse = tl.load(_vec(lse, j0, H, o_i), mask=m_s, other=0.0).to(ACC)
    b_s = tl.dot(b_w, tl.trans(b_k), input_precision=DOT_PRECISION).to(ACC) * scale
    m_d = (o_i[:, None] > o_i[None, :]) & m_s[:, None] & m_s[None, :]
    b_P = _probs(b_s, b_lse[:, None] + tl.zeros_like(b_s), m_d, KERNEL)
    b_Ai = inverse_unit_lower_blocked(b_beta[:, None] * b_P, BTS, SOLVE_PRECISION)
    tl.store(_tile(ainv, j0, H * BTS, o_i, o_i), tl.trans(b_Ai).to(ainv.dtype.element_ty), mask=m_s[:, None])


@triton.jit(do_not_specialize=["T", "C", "i_c", "N", "NS_READ", "KS", "NSMAX"])
def deltaformer_bwd_kernel_chunk(
    w, k, g, beta, lse, ainv, r, do, dv, dbeta, D, part, cu_seqlens, scale, T, C, i_c, N, NS_READ, KS, NSMAX,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BTS: tl.constexpr, BS: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, CR: tl.constexpr,
    KERNEL: tl.constexpr, IS_VARLEN: tl.constexpr, ACC: tl.constexpr,
    DOT_PRECISION: tl.constexpr, SOLVE_PRECISION: tl.constexpr,
):
    """One launch per chunk i_c, last chunk first: X = M^-T G restricted to the chunk (the mirror of the forward).

    Program 0 (per sequence and head) solves chunk [cs, ce): its row tiles of BTS in REVERSE order, each
    rhs = G + the partials of rows t >= cs + 2C (computed by the previous launch) + P^T dO over rows
    [tile end, min(cs + 2C, L)) (the next chunk, finished by the previous launch, and this chunk's later tiles,
    stored by this program; a barrier orders store and reload), then X = Ai^T rhs with the precomputed transposed
    inverse; it stores dv = X, dO = -beta X (the operand of every later product, in the input dtype: the folds and
    the score-gradient passes use nothing else of X), dbeta = -X . r and D = -beta X . r.
    Programs 1 .. compute, for the rows of chunk i_c - 1, partial sums sum_t P_tj dO_t over a split of the finished
    rows [(i_c + 1) C, L) (split (p - 1) // NTC, row tile (p - 1) % NTC of BT rows; plain sums, no maximum: P is
    already normalised), into buffer (i_c - 1) % 2, which the next launch's solver adds."""
    i_p, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_h = i_nh // H, i_nh % H
    bos, eos = seq_bounds(cu_seqlens, i_n.to(tl.int64), T, IS_VARLEN)
    L = (eos - bos).to(tl.int32)
    NTC: tl.constexpr = (CR + BT - 1) // BT
    w += (bos * H + i_h) * K
    k += (bos * H + i_h) * K
    do += (bos * H + i_h) * V
    lse += bos * H + i_h
    o_j = tl.arange(0, BS)
    o_k = tl.arange(0, BK)
    o_v = tl.arange(0, BV)
    m_k = o_k < K
    m_v = o_v < V
    if i_p > 0:
        i_t = (i_p - 1) % NTC
        i_s = (i_p - 1) // NTC
        cs = (i_c - 1) * C
        ce = tl.minimum(cs + C, L)
        j0 = cs + i_t * BT
        if j0 >= ce:
            return
        o_i = tl.arange(0, BT)
        m_s = (j0 + o_i) < ce
        t0 = (i_c + 1) * C + i_s * KS
        # [BT, BK]
        b_k = tl.load(_tile(k, j0, H * K, o_i, o_k), mask=m_s[:, None] & m_k[None, :], other=0.0)
        b_acc = _fold_rows(b_k, m_s, w, do, lse, t0, tl.minimum(t0 + KS, L), tl.zeros([BT, BV], dtype=ACC),
                           scale, o_j, o_k, o_v, m_k, m_v, H, K, V, BS, KERNEL, ACC, DOT_PRECISION)
        slot = (((i_c - 1) % 2) * NSMAX + i_s) * N + i_n
        p_acc = part + tl.cast(slot, tl.int64) * (CR * H * V) + i_h * V
        tl.store(_tile(p_acc, j0 - cs, H * V, o_i, o_v), b_acc.to(part.dtype.element_ty),
                 mask=m_s[:, None] & m_v[None, :])
        return

    cs = i_c * C
    ce = tl.minimum(cs + C, L)
    if cs >= ce:
        return
    g += (bos * H + i_h) * V
    beta += bos * H + i_h
    r += (bos * H + i_h) * V
    dv += (bos * H + i_h) * V
    dbeta += bos * H + i_h
    D += bos * H + i_h
    ainv += (bos * H + i_h) * BTS
    o_i = tl.arange(0, BTS)
    t_end = tl.minimum(cs + 2 * C, L)
    NT = tl.cdiv(ce - cs, BTS)
    for i_rev in range(0, NT):
        j0 = cs + (NT - 1 - i_rev) * BTS
        m_s = (j0 + o_i) < ce
        m_sv = m_s[:, None] & m_v[None, :]
        # [BTS, BK], [BTS, BV]
        b_k = tl.load(_tile(k, j0, H * K, o_i, o_k), mask=m_s[:, None] & m_k[None, :], other=0.0)
        b_acc = tl.load(_tile(g, j0, H * V, o_i, o_v), mask=m_sv, other=0.0).to(ACC)
        # rows t >= cs + 2C: partials computed by the previous launch, one per split
        for i_s in range(0, NS_READ):
            slot = ((i_c % 2) * NSMAX + i_s) * N + i_n
            p_acc = part + tl.cast(slot, tl.int64) * (CR * H * V) + i_h * V
            b_acc += tl.load(_tile(p_acc, j0 - cs, H * V, o_i, o_v), mask=m_sv, other=0.0).to(ACC)
        # rows [tile end, cs + 2C): this chunk's later tiles and the next chunk
        b_acc = _fold_rows(b_k, m_s, w, do, lse, tl.minimum(j0 + BTS, ce), t_end, b_acc, scale, o_j, o_k, o_v,
                           m_k, m_v, H, K, V, BS, KERNEL, ACC, DOT_PRECISION)
        # [BTS, BTS] = Ai^T, then X = Ai^T rhs
        b_aT = tl.load(_tile(ainv, j0, H * BTS, o_i, o_i), mask=m_s[:, None], other=0.0)
        b_x = tl.dot(b_aT, b_acc, input_precision=SOLVE_PRECISION)
        b_beta = tl.load(_vec(beta, j0, H, o_i), mask=m_s, other=0.0).to(ACC)
        tl.store(_tile(dv, j0, H * V, o_i, o_v), b_x.to(dv.dtype.element_ty), mask=m_sv)
        tl.store(_tile(do, j0, H * V, o_i, o_v), (-b_beta[:, None] * b_x).to(do.dtype.element_ty), mask=m_sv)
        b_r = tl.load(_tile(r, j0, H * V, o_i, o_v), mask=m_sv, other=0.0).to(ACC)
        b_xr = tl.sum(b_x * b_r, 1)
        tl.store(_vec(dbeta, j0, H, o_i), (-b_xr).to(dbeta.dtype.element_ty), mask=m_s)
        tl.store(_vec(D, j0, H, o_i), (-b_beta * b_xr).to(D.dtype.element_ty), mask=m_s)
        # earlier tiles of this chunk read these rows of dO back from global memory
        tl.debug_barrier()
