"""The public differential harness (proofs_checks.differential) run on backend="triton" under the interpreter.

Same harness, strategies and tolerance model as the torch backend, outputs and gradients (the backward kernels of
impl/triton_ops/README.md); few cases, because the interpreter is slow (the bug-shaped gradient cases are fixed
problems in tests/test_triton_deltaformer_backward.py).
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import functools

import pytest
import torch

import impl
from impl.triton_ops._runtime import interpreting
from proofs_checks.differential import run


@pytest.mark.skipif(not interpreting() and not torch.cuda.is_available(),
                    reason="needs TRITON_INTERPRET=1 or a CUDA device")
@pytest.mark.parametrize("op", ["deltaformer_u", "deltaformer_attn", "softmax_attn"])
def test_triton_backend_passes_the_public_differential_harness(op: str) -> None:
    fn = functools.partial(getattr(impl, op), backend="triton")
    summary = run(fn, op, examples=3, seed=0, dtypes=("float64", "float32"), grads=True, max_t=40, long_t=60,
                  shrink=False)
    assert summary.passed, summary.report()
