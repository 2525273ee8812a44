"""DeltaFormer Triton kernels (``@triton.jit`` only; host code in ``deltaformer.py``, derivations in README.md).

Forward, per chunk [cs, ce) of C rows, chunks in order (u of a chunk depends on all earlier chunks):
  ``deltaformer_fwd_kernel_prefix``  rows of the chunk x keys j < cs: running max m, sum l, acc = sum p_tj u_j
  ``deltaformer_fwd_kernel_intra``   row tiles of the chunk in order: earlier in-chunk tiles, then the diagonal tile's
                                     unit lower-triangular solve (I + diag(beta) P) u = v - beta * acc, in fp32
  ``deltaformer_fwd_kernel_read``    causal flash-style softmax attention over (q, k, u); stores the log-sum-exp
Backward: ``deltaformer_bwd_kernel_read_dkdu`` / ``_read_dq`` (read-out), ``deltaformer_bwd_kernel_suffix`` /
``_intra`` (dv = M^-T du, chunks in reverse order), ``deltaformer_bwd_kernel_dw`` / ``_dk`` (write similarity).

Layout [B, T, H, D] (row-major); with ``cu_seqlens`` B == 1 and the rows of sequence n are [bos, eos).
KERNEL: "softmax" (normalised over j < t), "exp", "linear", "round" (half to even, as numpy.rint).
"""

import triton
import triton.language as tl


@triton.jit
def _seq_bounds(cu_seqlens, i_n, T, IS_VARLEN: tl.constexpr):
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        eos = tl.load(cu_seqlens + i_n + 1).to(tl.int64)
    else:
        bos = i_n * T
        eos = bos + T
    return bos, eos


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
def _inverse_unit_lower(b_A, n, BT: tl.constexpr):
    """(I + A)^-1 for A [BT, BT] strictly lower triangular and zero beyond row n, by forward substitution by rows."""
    o_i = tl.arange(0, BT)
    b_X = -b_A
    # a runtime trip count (rows actually present) also keeps the compiler from unrolling the loop
    for i in range(1, n):
        # row i of X still holds -A_i; X_i = -A_i - sum_j A_ij X_j, i.e. -A_i + sum_j (-A_ij) X_j
        b_a = tl.sum(tl.where(o_i[:, None] == i, b_X, 0.0), 0)
        b_a = b_a + tl.sum(b_a[:, None] * b_X, 0)
        b_X = tl.where(o_i[:, None] == i, b_a[None, :], b_X)
    return b_X + (o_i[:, None] == o_i[None, :]).to(b_X.dtype)


@triton.jit(do_not_specialize=["T", "C", "i_c"])
def deltaformer_fwd_kernel_prefix(
    w, k, u, m, lsum, acc, cu_seqlens, scale, T, C, i_c,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BS: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    KERNEL: tl.constexpr, IS_VARLEN: tl.constexpr, ACC: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    i_t, i_v, i_nh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_n, i_h = i_nh // H, i_nh % H
    bos, eos = _seq_bounds(cu_seqlens, i_n.to(tl.int64), T, IS_VARLEN)
    L = (eos - bos).to(tl.int32)
    # chunk [cs, ce) in positions relative to the sequence start
    cs = i_c * C
    ce = tl.minimum(cs + C, L)
    if cs + i_t * BT >= ce:
        return
    # int64 only in scalar bases (sequence, head, tile row); in-tile offsets stay int32
    w += (bos * H + i_h) * K
    k += (bos * H + i_h) * K
    u += (bos * H + i_h) * V + i_v * BV
    acc += (bos * H + i_h) * V + i_v * BV
    m += bos * H + i_h
    lsum += bos * H + i_h
    o_i = tl.arange(0, BT)
    o_j = tl.arange(0, BS)
    o_k = tl.arange(0, BK)
    o_v = tl.arange(0, BV)
    m_k = o_k < K
    m_v = o_v < V - i_v * BV
    r0 = cs + i_t * BT
    o_t = r0 + o_i
    m_t = o_t < ce

    # [BT, BK]
    b_w = tl.load(_tile(w, r0, H * K, o_i, o_k), mask=m_t[:, None] & m_k[None, :], other=0.0)
    b_m = tl.full([BT], float("-inf"), dtype=ACC)
    b_l = tl.zeros([BT], dtype=ACC)
    b_acc = tl.zeros([BT, BV], dtype=ACC)
    for i_s in range(0, tl.cdiv(cs, BS)):
        s0 = i_s * BS
        o_s = s0 + o_j
        # the last key tile may straddle the chunk start: keys j >= cs have no u yet
        m_s = o_s < cs
        # [BS, BK]
        b_k = tl.load(_tile(k, s0, H * K, o_j, o_k), mask=m_s[:, None] & m_k[None, :], other=0.0)
        # [BS, BV]
        b_u = tl.load(_tile(u, s0, H * V, o_j, o_v), mask=m_s[:, None] & m_v[None, :], other=0.0)
        # [BT, BS]
        b_s = tl.dot(b_w, tl.trans(b_k), input_precision=DOT_PRECISION).to(ACC) * scale
        b_m, b_l, b_acc = _online_update(b_s, m_s[None, :], b_u, b_m, b_l, b_acc, KERNEL, DOT_PRECISION)

    tl.store(_tile(acc, r0, H * V, o_i, o_v), b_acc.to(acc.dtype.element_ty),
             mask=m_t[:, None] & m_v[None, :])
    if KERNEL == "softmax":
        tl.store(_vec(m, r0, H, o_i), b_m.to(m.dtype.element_ty), mask=m_t)
        tl.store(_vec(lsum, r0, H, o_i), b_l.to(lsum.dtype.element_ty), mask=m_t)


@triton.jit(do_not_specialize=["T", "C", "i_c"])
def deltaformer_fwd_kernel_intra(
    w, k, v, beta, u, m, lsum, acc, lse, cu_seqlens, scale, T, C, i_c,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    KERNEL: tl.constexpr, IS_VARLEN: tl.constexpr, ACC: tl.constexpr,
    DOT_PRECISION: tl.constexpr, SOLVE_PRECISION: tl.constexpr,
):
    i_v, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_h = i_nh // H, i_nh % H
    bos, eos = _seq_bounds(cu_seqlens, i_n.to(tl.int64), T, IS_VARLEN)
    L = (eos - bos).to(tl.int32)
    cs = i_c * C
    ce = tl.minimum(cs + C, L)
    w += (bos * H + i_h) * K
    k += (bos * H + i_h) * K
    v += (bos * H + i_h) * V + i_v * BV
    u += (bos * H + i_h) * V + i_v * BV
    acc += (bos * H + i_h) * V + i_v * BV
    beta += bos * H + i_h
    m += bos * H + i_h
    lsum += bos * H + i_h
    lse += bos * H + i_h
    o_i = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    o_v = tl.arange(0, BV)
    m_k = o_k < K
    m_v = o_v < V - i_v * BV
    for i_t in range(0, tl.cdiv(ce - cs, BT)):
        r0 = cs + i_t * BT
        o_t = r0 + o_i
        m_t = o_t < ce
        m_tv = m_t[:, None] & m_v[None, :]
        # [BT, BK]
        b_w = tl.load(_tile(w, r0, H * K, o_i, o_k), mask=m_t[:, None] & m_k[None, :], other=0.0)
        # [BT, BV]
        b_acc = tl.load(_tile(acc, r0, H * V, o_i, o_v), mask=m_tv, other=0.0).to(ACC)
        if KERNEL == "softmax":
            b_m = tl.load(_vec(m, r0, H, o_i), mask=m_t, other=float("-inf")).to(ACC)
            b_l = tl.load(_vec(lsum, r0, H, o_i), mask=m_t, other=0.0).to(ACC)
        else:
            b_m = tl.zeros([BT], dtype=ACC)
            b_l = tl.zeros([BT], dtype=ACC)
        for i_s in range(0, i_t):
            s0 = cs + i_s * BT
            o_s = s0 + o_i
            # [BT, BK]
            b_k = tl.load(_tile(k, s0, H * K, o_i, o_k), mask=m_k[None, :], other=0.0)
            # [BT, BV], written by this program in an earlier iteration
            b_u = tl.load(_tile(u, s0, H * V, o_i, o_v), mask=m_v[None, :], other=0.0)
            # [BT, BT]
            b_s = tl.dot(b_w, tl.trans(b_k), input_precision=DOT_PRECISION).to(ACC) * scale
            b_m, b_l, b_acc = _online_update(b_s, (o_s < ce)[None, :], b_u, b_m, b_l, b_acc, KERNEL, DOT_PRECISION)

        # [BT, BK]
        b_k = tl.load(_tile(k, r0, H * K, o_i, o_k), mask=m_t[:, None] & m_k[None, :], other=0.0)
        # [BT, BT] the diagonal tile, strictly lower part
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
            if i_v == 0:
                b_lse = tl.where(b_l > 0, b_ms + tl.log(tl.where(b_l > 0, b_l, 1.0)), float("-inf"))
                tl.store(_vec(lse, r0, H, o_i), b_lse.to(lse.dtype.element_ty), mask=m_t)
        else:
            b_a = b_acc
            b_P = tl.where(m_d, _kappa(b_s, KERNEL), 0.0)
        # [BT, BV]
        b_v = tl.load(_tile(v, r0, H * V, o_i, o_v), mask=m_tv, other=0.0).to(ACC)
        # [BT]
        b_beta = tl.load(_vec(beta, r0, H, o_i), mask=m_t, other=0.0).to(ACC)
        # residual in the accumulation type, never rounded to the input type before the subtraction
        b_r = b_v - b_beta[:, None] * b_a
        b_Ai = _inverse_unit_lower(b_beta[:, None] * b_P, tl.minimum(ce - cs - i_t * BT, BT), BT)
        b_u = tl.dot(b_Ai, b_r, input_precision=SOLVE_PRECISION)
        tl.store(_tile(u, r0, H * V, o_i, o_v), b_u.to(u.dtype.element_ty), mask=m_tv)
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
    bos, eos = _seq_bounds(cu_seqlens, i_n.to(tl.int64), T, IS_VARLEN)
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
