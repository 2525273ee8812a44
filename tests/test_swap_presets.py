"""The swap experiment's presets, seeds and confidence intervals, curves, and the resumable cells file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from proofs_checks.swap import __main__ as cli
from proofs_checks.swap import data as swap_data
from proofs_checks.swap import presets
from proofs_checks.swap.models import ModelConfig
from proofs_checks.swap.stats import mean_ci, student_t_quantile, t_two_sided_mass
from proofs_checks.swap.sweep import SweepConfig, error_curve, load_cells
from proofs_checks.swap.train import SPIKE_WINDOW, TrainConfig, _count_spikes

# --- confidence intervals -------------------------------------------------------------------------------------------

# Two-sided 97.5% quantiles of Student's t from the standard printed tables (e.g. NIST/SEMATECH e-Handbook 1.3.6.7.2,
# given there to 3 decimals; more digits from the same tables' sources). Independent of the code under test.
T_975 = {1: 12.706205, 2: 4.302653, 3: 3.182446, 4: 2.776445, 5: 2.570582, 9: 2.262157, 10: 2.228139,
         29: 2.045230, 30: 2.042272}


@pytest.mark.parametrize(("nu", "want"), sorted(T_975.items()))
def test_the_t_quantile_matches_the_printed_table(nu: int, want: float) -> None:
    # The table's 6 decimals are its precision: agreement to 1e-6 absolute.
    assert student_t_quantile(0.975, nu) == pytest.approx(want, abs=1e-6)


def test_the_t_distribution_mass_at_known_points() -> None:
    # nu = 1 is the Cauchy distribution: P(|T| < 1) = 1/2 exactly; nu = 2 has P(|T| < t) = t / sqrt(t^2 + 2).
    assert t_two_sided_mass(1.0, 1) == pytest.approx(0.5, abs=1e-15)
    for t in (0.3, 1.0, 4.302653):
        assert t_two_sided_mass(t, 2) == pytest.approx(t / math.sqrt(t * t + 2), abs=1e-15)
    # Large nu approaches the normal: P(|Z| < 1.959964) = 0.95; at nu = 2000 the t value differs by < 1e-3.
    assert t_two_sided_mass(1.959964, 2000) == pytest.approx(0.95, abs=2e-4)


def test_mean_ci_by_hand() -> None:
    # Three seeds 0.2, 0.4, 0.9: mean 0.5; deviations -0.3, -0.1, 0.4, squares sum 0.26, sd = sqrt(0.26 / 2) =
    # sqrt(0.13); half width t_{0.975, 2} sd / sqrt(3) = 4.302653 * 0.3605551 / 1.7320508 = 0.895669.
    mean, low, high = mean_ci([0.2, 0.4, 0.9])
    assert mean == pytest.approx(0.5, abs=1e-15)
    assert low == pytest.approx(0.5 - 0.895669, abs=2e-6) and high == pytest.approx(0.5 + 0.895669, abs=2e-6)
    assert mean_ci([0.7]) == (0.7, None, None)
    assert mean_ci([0.3, 0.3, 0.3]) == (pytest.approx(0.3), pytest.approx(0.3), pytest.approx(0.3))


# --- presets --------------------------------------------------------------------------------------------------------


def test_fig4_is_the_kernel_ablation_with_a_curriculum() -> None:
    for config in (presets.preset("fig4"), presets.preset("fig4", quick=True)):
        assert config.train_lens == (32, 64, 128, 256)
        assert {"deltaformer-linear", "deltaformer-round", "deltaformer-exp"} <= set(config.models)
        assert config.seeds >= 3 and config.log_every > 0
        assert min(config.eval_lens) >= config.train_len and max(config.eval_lens) > config.train_len
        tokens = {length * batch for length, _, batch in config.stages()}
        assert tokens == {32 * config.train.batch}  # the same tokens per step in every stage
        assert sum(steps for _, steps, _ in config.stages()) == config.train.steps


def test_beyond_dk_puts_n_past_a_small_key_dimension() -> None:
    for config in (presets.preset("beyond-dk"), presets.preset("beyond-dk", quick=True)):
        d_k = config.model.d_k
        assert d_k <= 16 and config.seeds >= 3
        assert any(n > d_k for n in config.ns) and any(n <= d_k for n in config.ns)
        assert {"transformer", "deltanet", "deltaformer-linear", "deltaformer-round",
                "deltaformer-exp"} <= set(config.models)
        assert config.model.deltanet_beta == "sigmoid2"  # DeltaNet with beta in (0, 2)
    assert presets.preset("beyond-dk").ns == (4, 8, 16, 32)  # d_k / 2, d_k, 2 d_k, 4 d_k at d_k = 8


def test_the_paper_preset_is_sized_for_the_headline_and_refused_on_cpu(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    config = presets.preset("paper")
    assert config.ns == (5, 16, 32, 64, 128) and config.device == "cuda" and config.seeds >= 3
    monkeypatch.setattr(cli, "paper_cpu_estimate", lambda config: (7200.0 * 24, [0.5] * len(config.stages())))
    assert cli.main(["--preset", "paper", "--device", "cpu"]) == 2
    message = capsys.readouterr().err
    assert "would take about 48 CPU-hours (2.0 days)" in message and "--device cuda" in message


def test_the_paper_cpu_estimate_multiplies_measured_step_times() -> None:
    tiny = SweepConfig(ns=(3, 5), models=("transformer", "deltanet"), train_lens=(4, 8),
                       model=ModelConfig(width=8), train=TrainConfig(steps=10, batch=2), seeds=3)
    total, per_step = presets.paper_cpu_estimate(tiny, timed_steps=1)
    assert len(per_step) == 2 and all(s > 0 for s in per_step)
    assert total == pytest.approx(2 * 2 * 3 * (5 * per_step[0] + 5 * per_step[1]))


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a CUDA device")
def test_device_cuda_without_a_gpu_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--quick", "--device", "cuda", "--n", "3"]) == 2
    assert "--device cuda but torch sees no CUDA device" in capsys.readouterr().err


def test_explicit_options_override_the_preset() -> None:
    config = cli.config_from_args(cli.parse_args(["--preset", "beyond-dk", "--seeds", "5", "--n", "4", "64"]))
    assert config.seeds == 5 and config.ns == (4, 64) and config.model.d_k == 8 and config.preset == "beyond-dk"


# --- curves, data blocks --------------------------------------------------------------------------------------------


def test_error_curve_bins_and_cumulates_by_hand() -> None:
    correct = np.array([1.0, 1.0, 0.5, 0.0, 0.0, 0.5])
    curve = error_curve(correct, points=3)  # bins of 2 positions
    assert curve["swaps"] == [2, 4, 6]
    assert curve["error"] == pytest.approx([0.0, 0.75, 0.75])
    assert curve["cumulative_error"] == pytest.approx([0.0, 1.5 / 4, 3.0 / 6])


def test_spikes_count_jumps_but_not_curriculum_stage_changes() -> None:
    flat = [1.0] * (2 * SPIKE_WINDOW)
    spiked = [*flat, 3.0, *flat]
    assert _count_spikes(spiked, [32] * len(spiked)) == 1
    assert _count_spikes(flat + flat, [32] * (4 * SPIKE_WINDOW)) == 0
    staged = [*flat, 3.0, *flat]  # the same jump right after the sequence length changes is not a spike
    assert _count_spikes(staged, [32] * len(flat) + [64] * (len(flat) + 1)) == 0


def test_training_batches_of_one_block_are_the_single_draw_of_the_default_sweep() -> None:
    whole = swap_data.make_data(5, 6 * 4, 8, seed=2, split="train")
    for step, (a, _, query, target) in enumerate(swap_data.train_batches(5, 8, 4, 6, seed=2)):
        rows = slice(step * 4, (step + 1) * 4)
        assert np.array_equal(a.numpy(), whole.a[rows]) and np.array_equal(query.numpy(), whole.query[rows])
        assert np.array_equal(target.numpy(), whole.target[rows])


def test_blocks_are_fresh_sequences(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(swap_data, "BLOCK_TOKENS", 2 * 8 * 4)  # two batches of 4 sequences of 8 per block
    batches = list(swap_data.train_batches(6, 8, 4, 5, seed=1))
    assert len(batches) == 5
    rows = {tuple(row) for a, b, _, _ in batches for row in np.concatenate([a.numpy(), b.numpy()], axis=1)}
    assert len(rows) == 20  # 20 distinct sequences: no block repeats another's draw


# --- smoke runs of the presets, resume ------------------------------------------------------------------------------

TINY = ["--steps", "4", "--eval-count", "2", "--seeds", "1", "--width", "16", "--log-every", "2"]


@pytest.mark.parametrize("name", ["fig4", "beyond-dk"])
def test_each_preset_runs_end_to_end_at_tiny_size(name: str, tmp_path: Path) -> None:
    json_path = tmp_path / "r.json"
    assert cli.main(["--preset", name, "--quick", *TINY, "--out", str(tmp_path / "out"), "--json",
                     str(json_path)]) == 0
    document = json.loads(json_path.read_text())
    config = presets.preset(name, quick=True)
    assert {r["model"] for r in document["results"]} == set(config.models)
    assert {r["eval_len"] for r in document["results"]} == set(config.eval_lens)
    assert document["curves"]["loss"]  # fig4 and beyond-dk log training curves
    assert (tmp_path / "out" / "swap_loss_curves.png").stat().st_size > 0


def test_a_rerun_resumes_from_the_cells_file_and_ignores_a_cut_line(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--n", "3", "--models", "deltanet", "deltaformer-linear", "--steps", "2", "--batch", "2", "--train-len",
            "4", "--eval-lens", "4", "--eval-count", "2", "--width", "8", "--seeds", "2", "--json",
            str(tmp_path / "r.json"), "--out", str(tmp_path / "out")]
    assert cli.main(args) == 0
    cells = tmp_path / "r.cells.jsonl"
    first = json.loads((tmp_path / "r.json").read_text())
    lines = cells.read_text().splitlines()
    assert len(lines) == 4
    cells.write_text("\n".join(lines[:3]) + "\n" + lines[3][: len(lines[3]) // 2])  # killed mid-write
    capsys.readouterr()
    assert cli.main(args) == 0
    log = capsys.readouterr().err
    assert log.count("stored, skipped") == 3 and "1 other line(s) ignored" in log
    second = json.loads((tmp_path / "r.json").read_text())
    assert [r["accuracy"] for r in second["results"]] == [r["accuracy"] for r in first["results"]]
    stored, _ = load_cells(cells, cli.config_from_args(cli.parse_args(args)).fingerprint())
    assert len(stored) == 4
    # A different configuration does not reuse these cells.
    assert cli.main([*args, "--lr", "0.02"]) == 0
    assert "stored, skipped" not in capsys.readouterr().err
