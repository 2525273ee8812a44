"""The worked example of docs/differential_harness.md: flash-linear-attention 0.6.0 through the harness on CPU.

Skipped (per test, with the reason) without the ``fla`` extra. What they pin down: the adapters work, FLA's reference
DeltaFormer passes once its capabilities and precision policy are declared, and the harness reports the two
findings of the docs in FLA's Triton DeltaFormer (run in Triton's interpreter): the backward is wrong when the chunk
size does not divide T, and with fp16 inputs u = v - acc is formed after rounding acc to fp16.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import importlib.util

import pytest
import torch

from impl.triton_ops._runtime import interpreting
from proofs_checks.differential import Capabilities, Precision, Problem, check_case, run

HAS_FLA = importlib.util.find_spec("fla") is not None
needs_fla = pytest.mark.skipif(not HAS_FLA, reason="needs the fla extra: pip install -e '.[fla]'")
needs_triton = pytest.mark.skipif(not interpreting() and not torch.cuda.is_available(),
                                  reason="needs TRITON_INTERPRET=1 or a CUDA device")
FLA_DELTAFORMER = Capabilities(kernels=("softmax",), writes=("q",), same_head_size=True)


@needs_fla
def test_fla_reference_deltaformer_passes_with_its_declared_policy() -> None:
    """Its reference computes fp64 inputs in fp32 (declared) and supports write="q", softmax, K == V only."""
    from examples.fla_adapters import naive_deltaformer_attn

    summary = run(naive_deltaformer_attn, "deltaformer_attn", examples=6, capabilities=FLA_DELTAFORMER,
                  precision=Precision(compute="float32"))
    assert summary.passed, summary.report()
    undeclared = run(naive_deltaformer_attn, "deltaformer_attn", examples=0, dtypes=("float64",),
                     capabilities=FLA_DELTAFORMER, shrink=False, fail_fast=True)
    assert not undeclared.passed  # the same kernel under the default policy: fp64 computed in fp32


@needs_fla
@needs_triton
def test_fla_triton_deltaformer_backward_is_wrong_when_the_chunk_does_not_divide_t() -> None:
    """Upstream bug: the backward walks chunks from T - C down (forward: from 0), leaving rows unwritten."""
    from examples.fla_adapters import parallel_deltaformer_u

    aligned = Problem("deltaformer_u", B=1, T=32, H=1, K=4, V=4, dtype="float32", chunk_size=16, seed=1)
    assert check_case(parallel_deltaformer_u, aligned).passed
    ragged = Problem("deltaformer_u", B=1, T=17, H=1, K=1, V=1, dtype="float32", chunk_size=16, seed=1)
    result = check_case(parallel_deltaformer_u, ragged)
    assert result.errors["o"] <= result.budgets["o"]
    assert result.failure_kind() == "gradients (NaN/Inf)", result.report()


@needs_fla
@needs_triton
def test_fla_triton_deltaformer_rounds_the_residual_in_fp16() -> None:
    """Upstream: ``u = v - acc.to(v.dtype)``; the low-precision consistency check sees it, the normwise one does not."""
    from examples.fla_adapters import parallel_deltaformer_u

    problem = Problem("deltaformer_u", B=1, T=3, H=2, K=16, V=16, dtype="float16", chunk_size=16, seed=1)
    result = check_case(parallel_deltaformer_u, problem, grads=False)
    assert result.errors["o"] <= result.budgets["o"]
    assert result.failure_kind() == "consistency_o", result.report()
