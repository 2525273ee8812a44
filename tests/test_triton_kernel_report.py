"""Ahead-of-time compilation of the Triton kernels for sm_80 and sm_90a (no GPU needed).

The test compiles the representative subset of ``python -m impl.kernel_report --quick`` (head dims 64 and 256,
bf16, every forward and backward kernel and each of its launch configurations, softmax write); the CLI without
``--quick`` compiles all variants (every head dim 16..256, fp16 and bf16, all four write kernels). Catches: a launch
configuration that spills registers, fails to compile, or whose matmuls do not reach the tensor cores (the row-dot
preprocessing kernel has no matmul and is exempt from the last).
"""

from __future__ import annotations

import os

import pytest

from impl import kernel_report

PTXAS_PRESENT = os.path.exists(kernel_report._ptxas())


@pytest.mark.slow
@pytest.mark.skipif(not PTXAS_PRESENT, reason="the triton wheel ships no ptxas here")
def test_every_kernel_compiles_for_sm80_and_sm90a_without_spills_on_tensor_cores() -> None:
    results = kernel_report.run(quick=True, jobs=2)
    assert results, "no variants compiled"
    assert {r.arch for r in results} == set(kernel_report.ARCHS)
    assert {r.kernel for r in results} >= {"deltaformer_fwd_kernel_prefix", "deltaformer_fwd_kernel_intra",
                                           "deltaformer_fwd_kernel_read", "deltaformer_bwd_kernel_rowdot",
                                           "deltaformer_bwd_kernel_dq", "deltaformer_bwd_kernel_dk",
                                           "deltaformer_bwd_kernel_suffix", "deltaformer_bwd_kernel_intra"}
    bad = [r for r in results if not r.ok]
    assert not bad, "\n" + kernel_report.format_table(bad)
