"""The swap experiment's pipeline: data, baselines, a learning smoke test, and the CLI's outputs (JSON schema)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from proofs_checks.swap import data as swap_data
from proofs_checks.swap.__main__ import main
from proofs_checks.swap.models import MODEL_NAMES, ModelConfig, SwapModel
from proofs_checks.swap.train import TrainConfig, evaluate, train
from spec.swap_tracking import swap_permutations


def test_targets_are_the_object_in_the_queried_box_after_each_swap() -> None:
    data = swap_data.make_data(5, 4, 7, seed=3, split="train")
    for i in range(4):
        swaps = np.stack([data.a[i], data.b[i]], axis=1)
        permutations = swap_permutations(5, swaps)  # independent recomputation from the stored swaps
        for t in range(7):
            assert data.target[i, t] == permutations[t + 1, data.query[i, t]]


def test_train_and_eval_splits_are_disjoint_streams_and_deterministic() -> None:
    train_a = swap_data.make_data(8, 16, 10, seed=0, split="train")
    train_b = swap_data.make_data(8, 16, 10, seed=0, split="train")
    held_out = swap_data.make_data(8, 16, 10, seed=0, split="eval")
    assert np.array_equal(train_a.a, train_b.a) and np.array_equal(train_a.query, train_b.query)
    train_rows = {tuple(row) for row in np.concatenate([train_a.a, train_a.b], axis=1)}
    eval_rows = {tuple(row) for row in np.concatenate([held_out.a, held_out.b], axis=1)}
    assert not train_rows & eval_rows


def test_one_hop_shortcut_answers_the_partner_of_the_latest_swap_touching_the_box() -> None:
    # swaps (0 1), (1 2) on n = 4; boxes after them: [1, 2, 0, 3].
    data = swap_data.SwapData(n=4, a=np.array([[0, 1]]), b=np.array([[1, 2]]), query=np.array([[0, 0]]),
                              target=np.array([[1, 1]]))
    assert swap_data.one_hop_predictions(data).tolist() == [[1, 1]]
    data = swap_data.SwapData(n=4, a=np.array([[0, 1]]), b=np.array([[1, 2]]), query=np.array([[3, 1]]),
                              target=np.array([[3, 2]]))
    # box 1's latest swap is with box 2, which still held object 2: right; box 3 untouched: its own object.
    assert swap_data.one_hop_predictions(data).tolist() == [[3, 2]]
    data = swap_data.SwapData(n=4, a=np.array([[0, 1]]), b=np.array([[1, 2]]), query=np.array([[3, 2]]),
                              target=np.array([[3, 0]]))
    # box 2's latest swap is with box 1, which held object 0 (moved there by the first swap): the shortcut says 1.
    assert swap_data.one_hop_predictions(data).tolist() == [[3, 1]]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_maps_a_batch_to_logits_over_the_n_objects_and_is_causal(name: str) -> None:
    torch.manual_seed(0)
    model = SwapModel(name, 5, ModelConfig(width=32, layers=1))
    a = torch.randint(0, 5, (2, 6))
    b = (a + 1) % 5
    query = torch.randint(0, 5, (2, 6))
    logits = model(a, b, query)
    assert logits.shape == (2, 6, 5)
    changed = query.clone()
    changed[:, 4] = (changed[:, 4] + 2) % 5
    # A change at position 4 must not reach positions 0..3 (a causality leak would).
    assert torch.allclose(model(a, b, changed)[:, :4], logits[:, :4], atol=1e-5)


# Smoke test: a tiny DeltaFormer must learn n = 3 far above chance within a few seconds.
# Chance: a uniform guess is right with probability 1/3; the best input-independent guess is no better (targets
# are uniform over objects by symmetry). The one-hop shortcut is printed for information.
# Margin: the accuracy is an average of E = EVAL_SEQS * LENGTH / 2 scored queries; a model at chance has standard
# error sqrt(p (1 - p) / E) <= 0.5 / sqrt(E) ~ 0.016 (E = 1024, treating queries as independent, which only
# overstates E by the within-sequence correlation). Requiring chance + 0.25 is > 15 such errors: a model that
# learned nothing cannot pass by luck, and a pipeline that rots (labels shifted, causal leak removed, optimiser
# not stepping) drops back to chance.
SMOKE_N, SMOKE_LENGTH, SMOKE_STEPS, SMOKE_BATCH, EVAL_SEQS = 3, 8, 150, 32, 256
SMOKE_MARGIN = 0.25


def test_a_tiny_deltaformer_learns_three_object_swaps_well_above_chance() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    start = time.perf_counter()
    train_data = swap_data.make_data(SMOKE_N, SMOKE_STEPS * SMOKE_BATCH, SMOKE_LENGTH, seed=0, split="train")
    held_out = swap_data.make_data(SMOKE_N, EVAL_SEQS, SMOKE_LENGTH, seed=0, split="eval")
    model = SwapModel("deltaformer-softmax", SMOKE_N, ModelConfig(width=32, layers=1))
    record = train(model, train_data, TrainConfig(steps=SMOKE_STEPS, batch=SMOKE_BATCH, lr=1e-2), seed=0)
    accuracy = evaluate(model, held_out)
    positions = swap_data.scored_positions(SMOKE_LENGTH)
    one_hop = float(np.mean(swap_data.one_hop_predictions(held_out)[:, positions] == held_out.target[:, positions]))
    seconds = time.perf_counter() - start
    chance = 1 / SMOKE_N
    assert record.diverged_at is None
    assert accuracy >= chance + SMOKE_MARGIN, (
        f"accuracy {accuracy:.3f} vs chance {chance:.3f} (one-hop shortcut {one_hop:.3f}), {seconds:.1f} s")


def test_the_cli_writes_the_table_the_plot_and_json_with_the_documented_schema(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    json_path = tmp_path / "results.json"
    models = ["transformer", "deltaformer-round"]
    code = main(["--n", "3", "4", "--models", *models, "--steps", "2", "--batch", "4", "--train-len", "4",
                 "--eval-lens", "4", "8", "--eval-count", "4", "--width", "32", "--layers", "1",
                 "--out", str(tmp_path / "out"), "--json", str(json_path)])
    assert code == 0
    assert "seq_len = 8 (longer than trained)" in capsys.readouterr().out
    assert (tmp_path / "out" / "swap_accuracy_vs_n.png").stat().st_size > 0
    assert "| deltaformer-round |" in (tmp_path / "out" / "swap_results.md").read_text()
    results = json.loads(json_path.read_text())["results"]
    assert isinstance(results, list)
    assert len(results) == len(models) * 2 * 2  # models x ns x eval lengths
    for entry in results:
        assert set(entry) == {"model", "n", "seq_len", "accuracy"}
        assert entry["model"] in MODEL_NAMES
        assert isinstance(entry["n"], int) and isinstance(entry["seq_len"], int)
        assert isinstance(entry["accuracy"], float) and 0 <= entry["accuracy"] <= 1
        assert not math.isnan(entry["accuracy"])
    assert {(e["model"], e["n"], e["seq_len"]) for e in results} == {
        (m, n, length) for m in models for n in (3, 4) for length in (4, 8)}


def test_the_cli_rejects_an_unknown_model_name() -> None:
    with pytest.raises(SystemExit):
        main(["--models", "rnn"])
