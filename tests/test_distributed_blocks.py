"""One pair block of impl.distributed (``blocks``), in process: the explicit path's edge cases."""

from __future__ import annotations

import torch

from impl import _normaliser
from impl.distributed.blocks import Blocks, block_backward, block_forward


def test_a_diagonal_block_backward_never_forms_zero_times_inf_above_the_diagonal() -> None:
    """A causal (diagonal) read-out block on the explicit path (K != V) with a huge last value row: dO_t . u_j
    overflows to inf for the masked pairs t < j, where P = 0. Every exact gradient is finite (the last row's dO is
    0, so no admissible pair overflows); forming P * dP there gave NaN in dq and dk of every earlier row (the class
    of bug the harness found in impl's u backward, main 89881fc)."""
    gen = torch.Generator().manual_seed(0)
    q, k = (torch.randn(1, 1, 6, 3, generator=gen) for _ in range(2))
    v = torch.randn(1, 1, 6, 2, generator=gen)
    v[0, 0, -1] = 3.0e38
    d_out = torch.full((1, 1, 6, 2), 10.0)
    d_out[0, 0, -1] = 0.0
    how = Blocks("softmax", 0.5, flash=False)
    out, norm = block_forward(q, k, v, how, causal=True)
    assert norm is not None
    dq, dk, dv = block_backward(d_out, q, k, v, out, norm, how, causal=True)
    assert bool(torch.isfinite(dq).all() and torch.isfinite(dk).all() and torch.isfinite(dv).all())
    # the rows before the huge value agree with the same block on their own (no key j >= 5 reaches them)
    head = slice(0, 5)
    out5, norm5 = block_forward(q[:, :, head], k[:, :, head], v[:, :, head], how, causal=True)
    assert norm5 is not None and torch.equal(_normaliser.to_lse(norm5), _normaliser.to_lse(norm[:, :, head]))
    dq5 = block_backward(d_out[:, :, head], q[:, :, head], k[:, :, head], v[:, :, head], out5, norm5, how,
                         causal=True)[0]
    # error model: the same fp32 products summed over 5 or 6 keys (the 6th weighs exactly 0): a few roundings
    torch.testing.assert_close(dq[:, :, head], dq5, rtol=16 * 2.0**-24, atol=0)
