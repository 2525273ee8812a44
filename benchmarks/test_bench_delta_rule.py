"""pytest-benchmark: impl.delta_rule and impl.linear_attn (torch backend) vs their float64 recurrences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytest_benchmark.fixture import BenchmarkFixture

import impl
from benchmarks.ratios import interleaved_min
from proofs_checks.differential.bridge import run_spec


@pytest.mark.parametrize("op", ["delta_rule", "linear_attn"])
def test_recurrent_op_vs_float64_recurrence(benchmark: BenchmarkFixture, op: str) -> None:
    gen = torch.Generator().manual_seed(0)
    T, H, D = 2048, 4, 64
    q = torch.randn(1, T, H, D, generator=gen)
    k = torch.nn.functional.normalize(torch.randn(1, T, H, D, generator=gen), dim=-1)
    v = torch.randn(1, T, H, D, generator=gen)
    beta = torch.rand(1, T, H, generator=gen)
    args = (q, k, v, beta) if op == "delta_rule" else (q, k, v)
    fn = impl.delta_rule if op == "delta_rule" else impl.linear_attn
    arrays = {name: x.double().numpy() for name, x in zip(("q", "k", "v", "beta"), args, strict=False)}
    ref_s = interleaved_min({"ref": lambda: run_spec(op, arrays, None, scale=None)}, 1)["ref"]
    ref = run_spec(op, arrays, None, scale=None)["o"]
    o = fn(*args, chunk_size=64).o.double().numpy()
    assert np.linalg.norm(o - ref) / np.linalg.norm(ref) < 1e-4
    with torch.no_grad():
        benchmark(fn, *args, chunk_size=64)
    if benchmark.stats is not None:
        benchmark.extra_info["speedup_vs_float64_recurrence"] = ref_s / benchmark.stats.stats.min
