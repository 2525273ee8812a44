"""``@triton.jit`` helpers shared unchanged by the kernel files: a sequence's row range and the in-register inverse of
a unit lower-triangular block."""

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
def inverse_unit_lower(b_A, n, BT: tl.constexpr):
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
