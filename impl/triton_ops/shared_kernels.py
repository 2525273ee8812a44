"""``@triton.jit`` helpers shared unchanged by the kernel files: a sequence's row range and the in-register inverse
of a unit lower-triangular block (16 x 16 diagonal solves merged by matmuls)."""

import triton
import triton.language as tl


@triton.jit
def seq_bounds(cu_seqlens, i_n, T, IS_VARLEN: tl.constexpr):
    """Rows [bos, eos) of sequence i_n: from ``cu_seqlens`` when packed, else [i_n T, (i_n + 1) T)."""
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        eos = tl.load(cu_seqlens + i_n + 1).to(tl.int64)
    else:
        bos = i_n * T
        eos = bos + T
    return bos, eos


@triton.jit
def inverse_unit_lower_blocked(b_A, BT: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """(I + A)^-1 for A [BT, BT] strictly lower triangular (BT a power of two >= 16), with a dependent chain of
    15 substitution steps and 2 log2(BT / 16) matmuls instead of BT - 1 steps.

    1. The 16 x 16 diagonal blocks, all at once: row r of every block in one step (r = 1..15). The rows of different
       blocks use disjoint columns, so their sum is one vector holding each row in its own block's columns, and
       one vector-matrix product updates all of them.
    2. Recursive doubling: with X the inverse of the block diagonal of blocks of size s, and A_s the lower-left s x s
       block of every 2s x 2s diagonal block of A, the inverse of the 2s-blocks is X - X A_s X
       ([X1, 0; A21, X2]^-1 = [X1, 0; -X2 A21 X1, X2]); two matmuls per level, on the tensor cores.
    """
    o_i = tl.arange(0, BT)
    same16 = (o_i[:, None] // 16) == (o_i[None, :] // 16)
    b_X = tl.where(same16, -b_A, 0.0)
    for r in range(1, 16):
        m_r = (o_i % 16) == r
        # rows r of every block (each holds -A_i restricted to its block), summed into one vector
        b_a = tl.sum(tl.where(m_r[:, None], b_X, 0.0), 0)
        b_a = b_a + tl.sum(b_a[:, None] * b_X, 0)
        b_X = tl.where(m_r[:, None] & same16, b_a[None, :], b_X)
    b_X = b_X + (o_i[:, None] == o_i[None, :]).to(b_X.dtype)
    for lev in tl.static_range(0, 4):
        if (16 << lev) < BT:
            lower = ((o_i[:, None] // (32 << lev)) == (o_i[None, :] // (32 << lev))) & \
                ((o_i[:, None] // (16 << lev)) == (o_i[None, :] // (16 << lev)) + 1)
            b_T = tl.dot(tl.where(lower, b_A, 0.0), b_X, input_precision=DOT_PRECISION)
            b_X = b_X - tl.dot(b_X, b_T, input_precision=DOT_PRECISION)
    return b_X
