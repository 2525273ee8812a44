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


def test_roofline_matches_the_readme_examples() -> None:
    """impl/triton_ops/README.md, B = 1, H = 16, T = 8192, D = 128, bf16: forward 8.2e11 FLOPs, 0.83 ms at the
    989 TFLOP/s peak; backward 2.2e12 FLOPs, 2.2 ms. The README rounds to two digits."""
    fwd = gpu_ratios.roofline_seconds(8192, 16, 128, torch.bfloat16, backward=False)
    both = gpu_ratios.roofline_seconds(8192, 16, 128, torch.bfloat16, backward=True)
    assert fwd == pytest.approx(0.83e-3, rel=0.01)
    assert both - fwd == pytest.approx(2.2e-3, rel=0.02)
    # D <= 64 is one value block: forward 4 T^2 D, backward 15 T^2 D (README "Totals per head")
    assert gpu_ratios.roofline_seconds(1000, 1, 64, torch.bfloat16, backward=False) == 4 * 1000**2 * 64 / 989e12
    assert gpu_ratios.value_blocks(64) == 1 and gpu_ratios.value_blocks(128) == 2 and gpu_ratios.value_blocks(20) == 1


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
