"""pytest-benchmark: impl.deltaformer_attn vs causal SDPA (same shape, same run) and vs the float64 spec.

Every benchmark is gated on correctness first (impl vs the float64 spec on a slice of the same inputs), and the
ratio to its yardstick, measured in the same run, goes into ``extra_info``. Not collected by the normal ``pytest``
(testpaths is ``tests``); run with ``pytest benchmarks`` (see benchmarks/README.md).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pytest_benchmark.fixture import BenchmarkFixture
from torch.nn import functional

import impl
from benchmarks.ratios import BENCH_CHUNK, interleaved_min
from spec import deltaformer as spec_df


def _inputs(T: int, H: int, D: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, T, H, D, generator=gen).to(dtype) for _ in range(3))
    return q, k, v, torch.rand(1, T, H, generator=gen).to(dtype)


def _gate(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, chunk: int) -> None:
    """impl vs the float64 spec on the first 256 tokens of head 0; no timing from a red kernel."""
    n = min(256, q.shape[1])
    sl = [x[:, :n, :1].contiguous() for x in (q, k, v, beta)]
    o = impl.deltaformer_attn(*sl, chunk_size=chunk)[0, :, 0].double().numpy()
    ref = spec_df.deltaformer_attn(*(x[0, :, 0].double().numpy() for x in sl))
    error = float(np.linalg.norm(o - ref) / np.linalg.norm(ref))
    # fp32 budget of proofs_checks.differential.tolerances with kappa = 10: 6 sqrt(n + 2D) kappa 2^-24
    assert error < 6 * math.sqrt(n + 2 * q.shape[-1]) * 10 * 2.0**-24, error


@pytest.mark.parametrize("T", [1024, 4096])
def test_deltaformer_forward_vs_sdpa(benchmark: BenchmarkFixture, T: int) -> None:
    q, k, v, beta = _inputs(T, 4, 64)
    _gate(q, k, v, beta, BENCH_CHUNK)
    qs, ks, vs = (x.transpose(1, 2).contiguous() for x in (q, k, v))
    with torch.no_grad():
        sdpa = interleaved_min({"sdpa": lambda: functional.scaled_dot_product_attention(qs, ks, vs, is_causal=True)},
                               3)["sdpa"]
        benchmark(impl.deltaformer_attn, q, k, v, beta, chunk_size=BENCH_CHUNK)
    if benchmark.stats is not None:
        benchmark.extra_info["time_ratio_vs_sdpa"] = benchmark.stats.stats.min / sdpa


def test_deltaformer_forward_backward_vs_sdpa(benchmark: BenchmarkFixture) -> None:
    q, k, v, beta = _inputs(4096, 4, 64)
    _gate(q, k, v, beta, BENCH_CHUNK)
    leaves = [x.requires_grad_(True) for x in (q, k, v, beta)]
    cot = torch.randn(1, 4096, 4, 64)
    s_leaves = [x.detach().transpose(1, 2).contiguous().requires_grad_(True) for x in (q, k, v)]

    def sdpa_fb() -> object:
        return torch.autograd.grad(functional.scaled_dot_product_attention(*s_leaves, is_causal=True), s_leaves,
                                   cot.transpose(1, 2))

    def deltaformer_fb() -> object:
        return torch.autograd.grad(impl.deltaformer_attn(*leaves, chunk_size=BENCH_CHUNK), leaves, cot)

    sdpa = interleaved_min({"sdpa": sdpa_fb}, 3)["sdpa"]
    benchmark(deltaformer_fb)
    if benchmark.stats is not None:
        benchmark.extra_info["time_ratio_vs_sdpa"] = benchmark.stats.stats.min / sdpa


def test_deltaformer_vs_float64_spec(benchmark: BenchmarkFixture) -> None:
    q, k, v, beta = _inputs(1024, 2, 64)
    _gate(q, k, v, beta, BENCH_CHUNK)
    spec_s = interleaved_min({"spec": lambda: [spec_df.deltaformer_attn(
        *(x[0, :, h].double().numpy() for x in (q, k, v, beta))) for h in range(2)]}, 1)["spec"]
    with torch.no_grad():
        benchmark(impl.deltaformer_attn, q, k, v, beta, chunk_size=BENCH_CHUNK)
    if benchmark.stats is not None:
        benchmark.extra_info["speedup_vs_spec"] = spec_s / benchmark.stats.stats.min
