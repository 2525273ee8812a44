"""``@triton.jit`` helpers shared unchanged by every kernel file: the row range of one (possibly packed) sequence."""

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
