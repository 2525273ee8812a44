"""Ahead-of-time compilation of the Triton kernels for sm_80 and sm_90a (no GPU needed).

The test compiles the representative subset of ``python -m impl.kernel_report --quick`` (head dims 64 and 128,
bf16, every forward and backward kernel and each of its launch configurations, softmax write); the CLI without
``--quick`` compiles all variants (every head dim 16..256, fp16 and bf16, all four write kernels). Catches: a launch
configuration that spills registers, fails to compile, or whose matmuls do not reach the tensor cores, or reach
only mma.sync on sm_90a instead of wgmma (the row-dot preprocessing kernel has no matmul and is exempt).

It runs the CLI in a fresh process without TRITON_INTERPRET: once the interpreter tests have imported the kernel
module in interpreter mode, the kernels in this process are interpreted functions and cannot be compiled.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from impl import kernel_report

PTXAS_PRESENT = os.path.exists(kernel_report._ptxas())
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(not PTXAS_PRESENT, reason="the triton wheel ships no ptxas here")
def test_every_kernel_compiles_for_sm80_and_sm90a_without_spills_on_tensor_cores() -> None:
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-m", "impl.kernel_report", "--quick", "--jobs", "2"], cwd=ROOT, env=env,
                            capture_output=True, text=True, check=False)
    report = result.stdout + result.stderr
    # exit status 0 means every variant compiled, with no spills and tensor-core ops in its PTX
    assert result.returncode == 0, report
    arch_names = {"sm_90a" if arch == 90 else f"sm_{arch}" for arch in kernel_report.ARCHS}
    lines = map(str.split, result.stdout.splitlines())
    rows = [fields for fields in lines if len(fields) > 3 and fields[1] in arch_names]
    assert rows, "no variants compiled\n" + report
    assert {row[1] for row in rows} == arch_names, report
    assert {row[0] for row in rows} >= {"deltaformer_fwd_kernel_chunk", "deltaformer_fwd_kernel_read",
                                        "deltaformer_bwd_kernel_rowdot", "deltaformer_bwd_kernel_dq",
                                        "deltaformer_bwd_kernel_dk",
                                        "deltaformer_bwd_kernel_inverse", "deltaformer_bwd_kernel_chunk"}, report
    recurrent = {"delta_rule_fwd_kernel_wy", "chunk_fwd_kernel_h", "chunk_fwd_kernel_o", "chunk_bwd_kernel_dh",
                 "chunk_bwd_kernel_dqk", "delta_rule_bwd_kernel_wy"}
    assert {row[0] for row in rows} >= recurrent, report
    assert all(row[3] == "0" for row in rows), report  # the spill column
    # on sm_90a every kernel that does a matmul reaches wgmma (the tensor-core column starts with it)
    no_wgmma = [row[0] for row in rows if row[1] == "sm_90a" and row[0] not in kernel_report.NO_MATMUL
                and row[5] != "wgmma"]
    assert not no_wgmma, f"mma.sync only on sm_90a: {no_wgmma}\n{report}"
    # every kernel that takes a head dim is compiled at D = 128 (the issue-15 shape), with the run-time hints
    with_k = {row[0] for row in rows if any(f.startswith("K=") for f in row)}
    at_128 = {row[0] for row in rows if any(f.startswith("K=128,") for f in row)}
    assert with_k and with_k == at_128, report
