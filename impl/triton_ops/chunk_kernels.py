"""Chunked linear attention and delta rule Triton kernels (``@triton.jit`` only; host code in ``linear_attn.py`` and
``delta_rule.py``, derivations in README.md, section "Linear attention and the delta rule").

State h = S^T, [K, V] per (sequence, head); o_t = scale * h_t^T q_t. Each sequence is cut into *blocks*: the user's
chunks [i_c C, (i_c + 1) C) cut again into tiles of BT rows aligned at the chunk start, so block b of a sequence is
rows [bs, be) with i_c = b // NB, j = b % NB, NB = cdiv(C, BT), bs = i_c C + j BT, be = min(bs + BT, (i_c + 1) C, L).
(The last tile of a chunk is partial when C is not a multiple of BT; every kernel masks rows >= be.) ``boffs`` [N + 1]
holds the cumulative block counts, so block b of sequence n is stored at index boffs[n] + b of ``h`` / ``dh``.

Per block with start state h (DELTA: delta rule; otherwise linear attention, v_new = v):
  ``delta_rule_fwd_kernel_wy``  A = (I + tril(diag(beta) K K^T, -1))^-1 diag(beta) in registers (blocked inverse);
                                W = A K, U = A V
  ``chunk_fwd_kernel_h``        blocks in order: store h_b; v_new = U - W h (fp32); h += K^T v_new; final state
  ``chunk_fwd_kernel_o``        o = scale (Q h_b + tril(Q K^T) v_new)
  ``chunk_bwd_kernel_dh``       blocks in reverse: store dH_b (gradient of the state at the block's END);
                                dv_new = scale tril(Q K^T)^T dO + K dH; dH += scale Q^T dO - W^T dv_new;
                                last: the gradient of the initial state
  ``chunk_bwd_kernel_dqk``      dq, dk from o and the state; for DELTA dW = -dv_new h^T
  ``delta_rule_bwd_kernel_wy``  A recomputed; dv = A^T dv_new, dbeta, dk += the WY part (from dA, dW)

Layout [B, T, H, D] (row-major); with ``cu_seqlens`` B == 1 and the rows of sequence n are [bos, eos).
"""

import triton
import triton.language as tl

from impl.triton_ops.shared_kernels import inverse_unit_lower_blocked, seq_bounds


@triton.jit
def _block_rows(i_b, C, NB, L, BT: tl.constexpr):
    """Rows [bs, be) of block i_b, relative to the sequence start (see the module docstring)."""
    i_c = i_b // NB
    bs = i_c * C + (i_b - i_c * NB) * BT
    be = tl.minimum(tl.minimum(bs + BT, i_c * C + C), L)
    return bs, be


@triton.jit
def _tile(base, row0, STRIDE: tl.constexpr, o_r, o_c):
    """Pointers [len(o_r), len(o_c)] to rows row0 + o_r: int64 scalar row base, int32 in-tile offsets."""
    return base + tl.cast(row0, tl.int64) * STRIDE + o_r[:, None] * STRIDE + o_c[None, :]


@triton.jit
def _state(base, i_s, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, o_k, o_v):
    """Pointers [len(o_k), len(o_v)] into state slot i_s ([slots, H, K, V]; base already offset by head and column)."""
    return base + tl.cast(i_s, tl.int64) * (H * K * V) + o_k[:, None] * V + o_v[None, :]


@triton.jit
def _wy_inverse(b_k, b_beta, BT: tl.constexpr, ACC: tl.constexpr, DOT_PRECISION: tl.constexpr,
                SOLVE_PRECISION: tl.constexpr):
    """X = (I + tril(diag(beta) K K^T, -1))^-1 [BT, BT] in ACC by the blocked inverse (16 x 16 diagonal
    substitutions merged by matmuls in SOLVE_PRECISION); b_k [BT, BK] is zero on padded rows (identity rows of X)."""
    o_i = tl.arange(0, BT)
    b_kk = tl.dot(b_k, tl.trans(b_k), input_precision=DOT_PRECISION).to(ACC)
    b_L = tl.where(o_i[:, None] > o_i[None, :], b_kk * b_beta[:, None], 0.0)
    return inverse_unit_lower_blocked(b_L, BT, SOLVE_PRECISION), b_kk


@triton.jit(do_not_specialize=["T", "C", "NB"])
def delta_rule_fwd_kernel_wy(
    k, v, beta, w, u, cu_seqlens, boffs, T, C, NB,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    IS_VARLEN: tl.constexpr, ACC: tl.constexpr, DOT_PRECISION: tl.constexpr, SOLVE_PRECISION: tl.constexpr,
):
    i_b, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_h = i_nh // H, i_nh % H
    bos, eos = seq_bounds(cu_seqlens, i_n.to(tl.int64), T, IS_VARLEN)
    if i_b >= tl.load(boffs + i_n + 1) - tl.load(boffs + i_n):
        return
    bs, be = _block_rows(i_b, C, NB, (eos - bos).to(tl.int32), BT)
    k += (bos * H + i_h) * K
    w += (bos * H + i_h) * K
    v += (bos * H + i_h) * V
    u += (bos * H + i_h) * V
    beta += bos * H + i_h
    o_i = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    o_v = tl.arange(0, BV)
    m_t = bs + o_i < be
    m_k = o_k < K

    # [BT, BK]
    b_k = tl.load(_tile(k, bs, H * K, o_i, o_k), mask=m_t[:, None] & m_k[None, :], other=0.0)
    # [BT]
    b_beta = tl.load(beta + tl.cast(bs, tl.int64) * H + o_i * H, mask=m_t, other=0.0).to(ACC)
    b_X, _ = _wy_inverse(b_k, b_beta, BT, ACC, DOT_PRECISION, SOLVE_PRECISION)
    # A = X diag(beta) [BT, BT]
    b_A = b_X * b_beta[None, :]
    b_w = tl.dot(b_A, b_k.to(ACC), input_precision=SOLVE_PRECISION)
    tl.store(_tile(w, bs, H * K, o_i, o_k), b_w.to(w.dtype.element_ty), mask=m_t[:, None] & m_k[None, :])
    for i_v in range(0, tl.cdiv(V, BV)):
        m_v = o_v < V - i_v * BV
        # [BT, BV]
        b_v = tl.load(_tile(v + i_v * BV, bs, H * V, o_i, o_v), mask=m_t[:, None] & m_v[None, :], other=0.0)
        b_u = tl.dot(b_A, b_v.to(ACC), input_precision=SOLVE_PRECISION)
        tl.store(_tile(u + i_v * BV, bs, H * V, o_i, o_v), b_u.to(u.dtype.element_ty),
                 mask=m_t[:, None] & m_v[None, :])


@triton.jit(do_not_specialize=["T", "C", "NB"])
def chunk_fwd_kernel_h(
    k, v, w, u, h, vn, h0, ht, cu_seqlens, boffs, T, C, NB,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    DELTA: tl.constexpr, USE_H0: tl.constexpr, STORE_HT: tl.constexpr,
    IS_VARLEN: tl.constexpr, ACC: tl.constexpr, DOT_PRECISION: tl.constexpr, SOLVE_PRECISION: tl.constexpr,
):
    i_v, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_h = i_nh // H, i_nh % H
    bos, eos = seq_bounds(cu_seqlens, i_n.to(tl.int64), T, IS_VARLEN)
    L = (eos - bos).to(tl.int32)
    n0 = tl.load(boffs + i_n)
    nblk = tl.load(boffs + i_n + 1) - n0
    k += (bos * H + i_h) * K
    w += (bos * H + i_h) * K
    v += (bos * H + i_h) * V + i_v * BV
    u += (bos * H + i_h) * V + i_v * BV
    vn += (bos * H + i_h) * V + i_v * BV
    h += i_h * K * V + i_v * BV
    o_i = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    o_v = tl.arange(0, BV)
    m_k = o_k < K
    m_v = o_v < V - i_v * BV
    m_h = m_k[:, None] & m_v[None, :]

    # [BK, BV] in ACC: the recurrence never rounds the state to the input type
    b_h = tl.zeros([BK, BV], dtype=ACC)
    if USE_H0:
        b_h += tl.load(_state(h0 + i_h * K * V + i_v * BV, i_n, H, K, V, o_k, o_v), mask=m_h, other=0.0).to(ACC)
    for i_b in range(0, nblk):
        bs, be = _block_rows(i_b, C, NB, L, BT)
        m_t = bs + o_i < be
        tl.store(_state(h, n0 + i_b, H, K, V, o_k, o_v), b_h.to(h.dtype.element_ty), mask=m_h)
        # [BT, BK]
        b_k = tl.load(_tile(k, bs, H * K, o_i, o_k), mask=m_t[:, None] & m_k[None, :], other=0.0)
        if DELTA:
            b_w = tl.load(_tile(w, bs, H * K, o_i, o_k), mask=m_t[:, None] & m_k[None, :], other=0.0)
            b_u = tl.load(_tile(u, bs, H * V, o_i, o_v), mask=m_t[:, None] & m_v[None, :], other=0.0).to(ACC)
            # the residual U - W h is formed in ACC, never in the input type; the product's operands are the input
            # type (W is stored in it; h is rounded to it), as the other state products
            b_vn = b_u - tl.dot(b_w, b_h.to(b_w.dtype), input_precision=DOT_PRECISION).to(ACC)
            tl.store(_tile(vn, bs, H * V, o_i, o_v), b_vn.to(vn.dtype.element_ty), mask=m_t[:, None] & m_v[None, :])
        else:
            b_vn = tl.load(_tile(v, bs, H * V, o_i, o_v), mask=m_t[:, None] & m_v[None, :], other=0.0)
        b_h += tl.dot(tl.trans(b_k), b_vn.to(b_k.dtype), input_precision=DOT_PRECISION).to(ACC)
    if STORE_HT:
        tl.store(_state(ht + i_h * K * V + i_v * BV, i_n, H, K, V, o_k, o_v), b_h.to(ht.dtype.element_ty),
                 mask=m_h)


@triton.jit(do_not_specialize=["T", "C", "NB"])
def chunk_fwd_kernel_o(
    q, k, vn, h, o, cu_seqlens, boffs, scale, T, C, NB,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    IS_VARLEN: tl.constexpr, ACC: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    i_b, i_v, i_nh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_n, i_h = i_nh // H, i_nh % H
    bos, eos = seq_bounds(cu_seqlens, i_n.to(tl.int64), T, IS_VARLEN)
    n0 = tl.load(boffs + i_n)
    if i_b >= tl.load(boffs + i_n + 1) - n0:
        return
    bs, be = _block_rows(i_b, C, NB, (eos - bos).to(tl.int32), BT)
    q += (bos * H + i_h) * K
    k += (bos * H + i_h) * K
    vn += (bos * H + i_h) * V + i_v * BV
    o += (bos * H + i_h) * V + i_v * BV
    h += i_h * K * V + i_v * BV
    o_i = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    o_v = tl.arange(0, BV)
    m_t = bs + o_i < be
    m_k = o_k < K
    m_v = o_v < V - i_v * BV

    # [BT, BK]
    b_q = tl.load(_tile(q, bs, H * K, o_i, o_k), mask=m_t[:, None] & m_k[None, :], other=0.0)
    b_k = tl.load(_tile(k, bs, H * K, o_i, o_k), mask=m_t[:, None] & m_k[None, :], other=0.0)
    # [BK, BV]
    b_h = tl.load(_state(h, n0 + i_b, H, K, V, o_k, o_v), mask=m_k[:, None] & m_v[None, :], other=0.0)
    # [BT, BV]
    b_vn = tl.load(_tile(vn, bs, H * V, o_i, o_v), mask=m_t[:, None] & m_v[None, :], other=0.0)
    b_o = tl.dot(b_q, b_h.to(b_q.dtype), input_precision=DOT_PRECISION).to(ACC)
    # [BT, BT] causal, diagonal included
    b_s = tl.dot(b_q, tl.trans(b_k), input_precision=DOT_PRECISION).to(ACC)
    b_s = tl.where(o_i[:, None] >= o_i[None, :], b_s, 0.0)
    b_o += tl.dot(b_s.to(b_q.dtype), b_vn.to(b_q.dtype), input_precision=DOT_PRECISION).to(ACC)
    tl.store(_tile(o, bs, H * V, o_i, o_v), (b_o * scale).to(o.dtype.element_ty), mask=m_t[:, None] & m_v[None, :])


@triton.jit(do_not_specialize=["T", "C", "NB"])
def chunk_bwd_kernel_dh(
    q, k, w, do, dh, dvn, dht, dh0, cu_seqlens, boffs, scale, T, C, NB,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    DELTA: tl.constexpr, USE_DHT: tl.constexpr,
    IS_VARLEN: tl.constexpr, ACC: tl.constexpr, DOT_PRECISION: tl.constexpr, SOLVE_PRECISION: tl.constexpr,
):
    i_v, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_h = i_nh // H, i_nh % H
    bos, eos = seq_bounds(cu_seqlens, i_n.to(tl.int64), T, IS_VARLEN)
    L = (eos - bos).to(tl.int32)
    n0 = tl.load(boffs + i_n)
    nblk = tl.load(boffs + i_n + 1) - n0
    q += (bos * H + i_h) * K
    k += (bos * H + i_h) * K
    w += (bos * H + i_h) * K
    do += (bos * H + i_h) * V + i_v * BV
    dvn += (bos * H + i_h) * V + i_v * BV
    dh += i_h * K * V + i_v * BV
    o_i = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    o_v = tl.arange(0, BV)
    m_k = o_k < K
    m_v = o_v < V - i_v * BV
    m_h = m_k[:, None] & m_v[None, :]

    # [BK, BV]: gradient of the state at the end of the current block
    b_dh = tl.zeros([BK, BV], dtype=ACC)
    if USE_DHT:
        b_dh += tl.load(_state(dht + i_h * K * V + i_v * BV, i_n, H, K, V, o_k, o_v), mask=m_h, other=0.0).to(ACC)
    # blocks from the last one actually present down to 0
    for i_r in range(0, nblk):
        i_b = nblk - 1 - i_r
        bs, be = _block_rows(i_b, C, NB, L, BT)
        m_t = bs + o_i < be
        tl.store(_state(dh, n0 + i_b, H, K, V, o_k, o_v), b_dh.to(dh.dtype.element_ty), mask=m_h)
        # [BT, BK]
        b_q = tl.load(_tile(q, bs, H * K, o_i, o_k), mask=m_t[:, None] & m_k[None, :], other=0.0)
        b_k = tl.load(_tile(k, bs, H * K, o_i, o_k), mask=m_t[:, None] & m_k[None, :], other=0.0)
        # [BT, BV]
        b_do = tl.load(_tile(do, bs, H * V, o_i, o_v), mask=m_t[:, None] & m_v[None, :], other=0.0)
        # [BT, BT]: s^T[j, t] = k_j . q_t for t >= j
        b_st = tl.dot(b_k, tl.trans(b_q), input_precision=DOT_PRECISION).to(ACC) * scale
        b_st = tl.where(o_i[:, None] <= o_i[None, :], b_st, 0.0)
        b_dvn = tl.dot(b_st.to(b_do.dtype), b_do, input_precision=DOT_PRECISION).to(ACC)
        b_dvn += tl.dot(b_k, b_dh.to(b_k.dtype), input_precision=DOT_PRECISION).to(ACC)
        tl.store(_tile(dvn, bs, H * V, o_i, o_v), b_dvn.to(dvn.dtype.element_ty), mask=m_t[:, None] & m_v[None, :])
        b_dh += tl.dot(tl.trans(b_q), b_do, input_precision=DOT_PRECISION).to(ACC) * scale
        if DELTA:
            b_w = tl.load(_tile(w, bs, H * K, o_i, o_k), mask=m_t[:, None] & m_k[None, :], other=0.0).to(ACC)
            b_dh -= tl.dot(tl.trans(b_w), b_dvn, input_precision=SOLVE_PRECISION)
    tl.store(_state(dh0 + i_h * K * V + i_v * BV, i_n, H, K, V, o_k, o_v), b_dh.to(dh0.dtype.element_ty), mask=m_h)


@triton.jit(do_not_specialize=["T", "C", "NB"])
def chunk_bwd_kernel_dqk(
    q, k, vn, do, h, dh, dvn, dq, dk, dw, cu_seqlens, boffs, scale, T, C, NB,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    DELTA: tl.constexpr,
    IS_VARLEN: tl.constexpr, ACC: tl.constexpr, DOT_PRECISION: tl.constexpr, SOLVE_PRECISION: tl.constexpr,
):
    i_b, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_h = i_nh // H, i_nh % H
    bos, eos = seq_bounds(cu_seqlens, i_n.to(tl.int64), T, IS_VARLEN)
    n0 = tl.load(boffs + i_n)
    if i_b >= tl.load(boffs + i_n + 1) - n0:
        return
    bs, be = _block_rows(i_b, C, NB, (eos - bos).to(tl.int32), BT)
    q += (bos * H + i_h) * K
    k += (bos * H + i_h) * K
    dq += (bos * H + i_h) * K
    dk += (bos * H + i_h) * K
    dw += (bos * H + i_h) * K
    vn += (bos * H + i_h) * V
    do += (bos * H + i_h) * V
    dvn += (bos * H + i_h) * V
    h += i_h * K * V
    dh += i_h * K * V
    o_i = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    o_v = tl.arange(0, BV)
    m_t = bs + o_i < be
    m_k = o_k < K
    m_tk = m_t[:, None] & m_k[None, :]

    # [BT, BK]
    b_q = tl.load(_tile(q, bs, H * K, o_i, o_k), mask=m_tk, other=0.0)
    b_k = tl.load(_tile(k, bs, H * K, o_i, o_k), mask=m_tk, other=0.0)
    b_dq = tl.zeros([BT, BK], dtype=ACC)
    b_dk = tl.zeros([BT, BK], dtype=ACC)
    b_dw = tl.zeros([BT, BK], dtype=ACC)
    # [BT, BT]
    b_ds = tl.zeros([BT, BT], dtype=ACC)
    for i_v in range(0, tl.cdiv(V, BV)):
        m_v = o_v < V - i_v * BV
        m_tv = m_t[:, None] & m_v[None, :]
        m_h = m_k[:, None] & m_v[None, :]
        # [BT, BV]
        b_vn = tl.load(_tile(vn + i_v * BV, bs, H * V, o_i, o_v), mask=m_tv, other=0.0).to(b_q.dtype)
        b_do = tl.load(_tile(do + i_v * BV, bs, H * V, o_i, o_v), mask=m_tv, other=0.0)
        # [BK, BV]: state at the block start, gradient of the state at the block end
        b_h = tl.load(_state(h + i_v * BV, n0 + i_b, H, K, V, o_k, o_v), mask=m_h, other=0.0).to(b_q.dtype)
        b_dh = tl.load(_state(dh + i_v * BV, n0 + i_b, H, K, V, o_k, o_v), mask=m_h, other=0.0).to(b_q.dtype)
        b_ds += tl.dot(b_do, tl.trans(b_vn), input_precision=DOT_PRECISION).to(ACC)
        b_dq += tl.dot(b_do, tl.trans(b_h), input_precision=DOT_PRECISION).to(ACC)
        b_dk += tl.dot(b_vn, tl.trans(b_dh), input_precision=DOT_PRECISION).to(ACC)
        if DELTA:
            # v_new = U - W h: dW = -dv_new h^T
            b_dvn = tl.load(_tile(dvn + i_v * BV, bs, H * V, o_i, o_v), mask=m_tv, other=0.0).to(ACC)
            b_dw -= tl.dot(b_dvn, tl.trans(b_h.to(ACC)), input_precision=SOLVE_PRECISION)
    # o = scale (Q h + tril(Q K^T) v_new)
    b_ds = tl.where(o_i[:, None] >= o_i[None, :], b_ds, 0.0) * scale
    b_dq = b_dq * scale + tl.dot(b_ds.to(b_k.dtype), b_k, input_precision=DOT_PRECISION).to(ACC)
    b_dk += tl.dot(tl.trans(b_ds.to(b_q.dtype)), b_q, input_precision=DOT_PRECISION).to(ACC)
    tl.store(_tile(dq, bs, H * K, o_i, o_k), b_dq.to(dq.dtype.element_ty), mask=m_tk)
    tl.store(_tile(dk, bs, H * K, o_i, o_k), b_dk.to(dk.dtype.element_ty), mask=m_tk)
    if DELTA:
        tl.store(_tile(dw, bs, H * K, o_i, o_k), b_dw.to(dw.dtype.element_ty), mask=m_tk)


@triton.jit(do_not_specialize=["T", "C", "NB"])
def delta_rule_bwd_kernel_wy(
    k, v, beta, dw, dvn, dk, dv, dbeta, cu_seqlens, boffs, T, C, NB,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    IS_VARLEN: tl.constexpr, ACC: tl.constexpr, DOT_PRECISION: tl.constexpr, SOLVE_PRECISION: tl.constexpr,
):
    """W = A K, U = A V (dU = dv_new), A = X diag(beta), X = (I + L)^-1: dv, dbeta, and dk += the WY part."""
    i_b, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_h = i_nh // H, i_nh % H
    bos, eos = seq_bounds(cu_seqlens, i_n.to(tl.int64), T, IS_VARLEN)
    if i_b >= tl.load(boffs + i_n + 1) - tl.load(boffs + i_n):
        return
    bs, be = _block_rows(i_b, C, NB, (eos - bos).to(tl.int32), BT)
    k += (bos * H + i_h) * K
    dk += (bos * H + i_h) * K
    dw += (bos * H + i_h) * K
    v += (bos * H + i_h) * V
    dvn += (bos * H + i_h) * V
    dv += (bos * H + i_h) * V
    beta += bos * H + i_h
    dbeta += bos * H + i_h
    o_i = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    o_v = tl.arange(0, BV)
    m_t = bs + o_i < be
    m_k = o_k < K
    m_tk = m_t[:, None] & m_k[None, :]

    # [BT, BK]
    b_k = tl.load(_tile(k, bs, H * K, o_i, o_k), mask=m_tk, other=0.0)
    b_beta = tl.load(beta + tl.cast(bs, tl.int64) * H + o_i * H, mask=m_t, other=0.0).to(ACC)
    # [BT, BT]
    b_X, b_kk = _wy_inverse(b_k, b_beta, BT, ACC, DOT_PRECISION, SOLVE_PRECISION)
    b_A = b_X * b_beta[None, :]
    b_dA = tl.zeros([BT, BT], dtype=ACC)
    for i_v in range(0, tl.cdiv(V, BV)):
        m_tv = m_t[:, None] & (o_v < V - i_v * BV)[None, :]
        # [BT, BV]
        b_dvn = tl.load(_tile(dvn + i_v * BV, bs, H * V, o_i, o_v), mask=m_tv, other=0.0).to(ACC)
        b_v = tl.load(_tile(v + i_v * BV, bs, H * V, o_i, o_v), mask=m_tv, other=0.0).to(ACC)
        # U = A V: dA += dU V^T, dV = A^T dU
        b_dA += tl.dot(b_dvn, tl.trans(b_v), input_precision=SOLVE_PRECISION)
        b_dv = tl.dot(tl.trans(b_A), b_dvn, input_precision=SOLVE_PRECISION)
        tl.store(_tile(dv + i_v * BV, bs, H * V, o_i, o_v), b_dv.to(dv.dtype.element_ty), mask=m_tv)
    # W = A K: dA += dW K^T, dK += A^T dW
    b_dw = tl.load(_tile(dw, bs, H * K, o_i, o_k), mask=m_tk, other=0.0).to(ACC)
    b_dA += tl.dot(b_dw, tl.trans(b_k.to(ACC)), input_precision=SOLVE_PRECISION)
    b_dk = tl.dot(tl.trans(b_A), b_dw, input_precision=SOLVE_PRECISION)
    # A = X diag(beta): dbeta_j = sum_i dA_ij X_ij, dX = dA diag(beta)
    b_dbeta = tl.sum(b_dA * b_X, 0)
    b_dX = b_dA * b_beta[None, :]
    # X = (I + L)^-1: dL = -X^T dX X^T on the strict lower triangle
    b_dL = tl.dot(b_dX, tl.trans(b_X), input_precision=SOLVE_PRECISION)
    b_dL = -tl.dot(tl.trans(b_X), b_dL, input_precision=SOLVE_PRECISION)
    b_dL = tl.where(o_i[:, None] > o_i[None, :], b_dL, 0.0)
    # L_ij = beta_i k_i . k_j (i > j): dk += (dG + dG^T) K with dG = diag(beta) dL
    b_dbeta += tl.sum(b_dL * b_kk, 1)
    b_dG = b_dL * b_beta[:, None]
    b_dk += tl.dot(b_dG + tl.trans(b_dG), b_k.to(ACC), input_precision=SOLVE_PRECISION)
    b_dk += tl.load(_tile(dk, bs, H * K, o_i, o_k), mask=m_tk, other=0.0).to(ACC)
    tl.store(dbeta + tl.cast(bs, tl.int64) * H + o_i * H, b_dbeta.to(dbeta.dtype.element_ty), mask=m_t)
    tl.store(_tile(dk, bs, H * K, o_i, o_k), b_dk.to(dk.dtype.element_ty), mask=m_tk)
