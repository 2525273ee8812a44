"""benchmarks/gpu_ratios.py on CPU: every part that does not need a GPU (the roofline model, the table, the
correctness gate and the timing loop through Triton's interpreter, the JSON file, the refusal without CUDA)."""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import dataclasses
import json
from pathlib import Path

import pytest
import torch

import impl
from benchmarks import gpu_ratios
from impl.triton_ops._runtime import interpreting

needs_triton = pytest.mark.skipif(not interpreting() and not torch.cuda.is_available(),
                                  reason="needs TRITON_INTERPRET=1 or a CUDA device")


def test_roofline_matches_the_readme_totals() -> None:
    """impl/triton_ops/README.md ("Performance model", totals per head): forward 4 T^2 D at D <= 128 (no value
    split), backward 15 T^2 D; at B = 1, H = 16, T = 8192, D = 128, bf16: 5.5e11 FLOPs, 0.56 ms at the 989 TFLOP/s
    peak, and 2.06e12, 2.08 ms. Above D = 128 the read-out splits V in blocks of 64."""
    fwd = gpu_ratios.roofline_seconds(8192, 16, 128, torch.bfloat16, backward=False)
    both = gpu_ratios.roofline_seconds(8192, 16, 128, torch.bfloat16, backward=True)
    assert fwd == pytest.approx(0.556e-3, rel=0.01)
    assert both - fwd == pytest.approx(2.08e-3, rel=0.01)
    assert gpu_ratios.roofline_seconds(1000, 1, 64, torch.bfloat16, backward=False) == 4 * 1000**2 * 64 / 989e12
    assert [gpu_ratios.read_value_blocks(D) for D in (20, 64, 128, 256)] == [1, 1, 1, 4]


def test_model_columns_are_the_cost_model_prediction() -> None:
    """The model columns are ``cost_model.predict`` for the call the benchmark times (B = 1, default chunk): the
    inference forward and the autograd forward plus backward."""
    from impl.triton_ops import cost_model

    for backward in (False, True):
        got = gpu_ratios.model_seconds(8192, 16, 128, torch.bfloat16, backward=backward)
        assert got == cost_model.predict(1, 8192, 16, 128, dtype=torch.bfloat16, backward=backward)
        assert 0 < got < 0.1


def test_without_cuda_the_benchmark_refuses_clearly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match=r"needs a CUDA GPU: torch.cuda.is_available\(\) is False.*Nothing was timed"):
        gpu_ratios.main(str(tmp_path / "out.json"), repeats=1)
    assert not (tmp_path / "out.json").exists()


def test_the_table_has_one_column_per_row_field() -> None:
    row = gpu_ratios.Row(*(1 for _ in dataclasses.fields(gpu_ratios.Row)))
    header, _, line = gpu_ratios.table([row]).splitlines()
    assert header.count("|") - 1 == len(dataclasses.fields(gpu_ratios.Row)) == line.count("|") - 1


@needs_triton
def test_gate_then_timing_run_end_to_end_in_the_interpreter(tmp_path: Path) -> None:
    """The whole run() on CPU (fp32, tiny shapes, wall-clock timer): a green gate, one timed row, the JSON file."""
    out = tmp_path / "gpu.json"
    gate = gpu_ratios.gate_problems(("float32",), (16,), T=24)[:1]
    rows = gpu_ratios.run(torch.device("cpu"), ((20, 16),), 2, torch.float32, 1, gpu_ratios.wall_seconds, gate,
                          str(out))
    record = json.loads(out.read_text())
    assert record["gate"] == {"cases": 1, "failures": []}
    assert record["rows"] == [dataclasses.asdict(r) for r in rows]
    row = rows[0]
    assert (row.T, row.H, row.D, row.dtype) == (20, 2, 16, "float32")
    assert row.fwd_ratio > 0 and row.fwdbwd_ratio > 0 and row.fwd_roofline_fraction > 0
    assert 0 < row.model_fwd_s < row.model_fwdbwd_s and row.fwd_measured_over_model == row.fwd_s / row.model_fwd_s


@needs_triton
def test_a_red_gate_times_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrong kernel (returns v) fails the gate: SystemExit, the failure in the JSON, no rows."""
    monkeypatch.setattr(impl, "deltaformer_attn", lambda q, k, v, beta, **kwargs: v * 1.0)
    out = tmp_path / "gpu.json"
    gate = gpu_ratios.gate_problems(("float32",), (16,), T=20)[:1]
    with pytest.raises(SystemExit, match="correctness gate failed"):
        gpu_ratios.run(torch.device("cpu"), ((40, 16),), 2, torch.float32, 1, gpu_ratios.wall_seconds, gate,
                       str(out))
    record = json.loads(out.read_text())
    assert len(record["gate"]["failures"]) == 1 and "rows" not in record
