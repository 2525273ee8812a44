"""The sweep: every (model, n, seed) cell trained on a (curriculum of) length(s), evaluated on held-out sequences
at each evaluation length; cells are appended to a JSON-lines file as they finish, and a re-run with the same
configuration skips the cells already there (resume).

Seeds: seed index i runs with s_i = seed + i; it fixes the model's initialisation (``_model_seed``) and its
training batches (``make_data``'s key). The held-out sequences depend on (seed, n, length) only, so every seed
and model of a cell is scored on the same sequences.

Curriculum: ``train_lens`` = (L_1, ..., L_S) splits the ``train.steps`` steps into S stages of equal length (the
remainder goes to the last); stage i uses sequences of L_i swaps in batches of max(1, round(batch L_1 / L_i)), so
every step sees about the same number of tokens.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt
import torch

from proofs_checks.swap.data import Batch, SwapData, make_data, one_hop_predictions, scored_positions, train_batches
from proofs_checks.swap.models import DEFAULT_MODELS, MODEL_NAMES, ModelConfig, SwapModel, model_kernel
from proofs_checks.swap.train import TrainConfig, position_accuracy, train

__all__ = ["Baseline", "Cell", "SweepConfig", "SweepResult", "error_curve", "load_cells", "run_sweep"]

DEVICES = ("cpu", "cuda")
CURVE_POINTS = 64
"""Error-vs-swaps curves are stored as at most this many bins of the longest evaluation length."""


@dataclass(frozen=True)
class SweepConfig:
    """What the sweep runs: models x ns x seeds, trained on ``train_lens`` (one length, or a curriculum), evaluated
    on ``eval_count`` held-out sequences of each length in ``eval_lens``. ``log_every`` > 0 logs training curves;
    ``target`` is the accuracy for ``steps_to_target``; ``preset`` only labels the outputs."""

    ns: tuple[int, ...] = (3, 5, 8, 16, 32)
    models: tuple[str, ...] = DEFAULT_MODELS
    train_lens: tuple[int, ...] = (16,)
    eval_lens: tuple[int, ...] = (16, 32, 64)
    eval_count: int = 256
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    seeds: int = 1
    log_every: int = 0
    target: float = 0.9
    device: str = "cpu"
    preset: str | None = None

    def __post_init__(self) -> None:
        unknown = [m for m in self.models if m not in MODEL_NAMES]
        if unknown:
            raise ValueError(f"models must be among {MODEL_NAMES}, got {unknown}")
        if not self.ns or any(n < 2 for n in self.ns):
            raise ValueError(f"every n must be >= 2, got {self.ns}")
        if not self.train_lens or any(length < 2 for length in (*self.train_lens, *self.eval_lens)):
            raise ValueError("sequence lengths must be >= 2 (accuracy is scored on positions (L/2, L])")
        if self.seeds < 1 or self.eval_count < 1 or self.log_every < 0:
            raise ValueError(f"seeds and eval_count must be >= 1 and log_every >= 0, got seeds = {self.seeds}, "
                             f"eval_count = {self.eval_count}, log_every = {self.log_every}")
        if len(self.train_lens) > self.train.steps:
            raise ValueError(f"{len(self.train_lens)} curriculum stages need at least as many steps, got "
                             f"{self.train.steps}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")

    @property
    def train_len(self) -> int:
        """The longest training length (the last curriculum stage)."""
        return max(self.train_lens)

    def stages(self) -> list[tuple[int, int, int]]:
        """(length, steps, batch) of each curriculum stage."""
        count = len(self.train_lens)
        base = self.train.steps // count
        first = self.train_lens[0]
        return [(length, base + (self.train.steps - base * count if i == count - 1 else 0),
                 max(1, round(self.train.batch * first / length))) for i, length in enumerate(self.train_lens)]

    def fingerprint(self) -> str:
        """A hash of everything that changes a cell's result (not the lists of models, ns and seeds, nor the
        preset label): cells stored under the same fingerprint can be reused by a larger run."""
        fields = {k: v for k, v in as_json(self).items() if k not in ("ns", "models", "seeds", "preset")}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def as_json(config: SweepConfig) -> dict[str, Any]:
    """The configuration as a JSON-able dict."""
    out = asdict(config)
    out["train_lens"] = list(config.train_lens)
    return out


@dataclass(frozen=True)
class Cell:
    """One trained model (model, n, seed): its training record and its held-out results.

    ``accuracy`` maps each evaluation length (as a string, JSON keys) to the accuracy on its scored positions;
    ``error_vs_swaps`` holds the longest evaluation length's per-bin error rate (``error_curve``); ``curve`` the
    training log (``train.Curve`` as a dict)."""

    model: str
    kernel: str | None
    n: int
    d_k: int
    seed: int
    train_len: int
    train_lens: list[int]
    steps: int
    final_loss: float
    diverged_at: int | None
    steps_to_target: int | None
    loss_spikes: int
    seconds: float
    cpu_seconds: float
    accuracy: dict[str, float]
    error_vs_swaps: dict[str, Any]
    curve: dict[str, list[Any]]

    @property
    def key(self) -> tuple[str, int, int]:
        return self.model, self.n, self.seed


@dataclass(frozen=True)
class Baseline:
    """Reference accuracies on the same scored positions: uniform guess and the one-hop shortcut."""

    n: int
    seq_len: int
    chance: float
    one_hop: float


@dataclass(frozen=True)
class SweepResult:
    config: SweepConfig
    cells: list[Cell]
    baselines: list[Baseline]
    baseline_curves: dict[int, dict[str, Any]]
    seconds: float
    cpu_seconds: float
    resumed: int = 0


def _model_seed(seed: int, name: str, n: int) -> int:
    return zlib.crc32(f"{seed}/{name}/{n}".encode())


def error_curve(correct_by_position: npt.NDArray[np.float64], points: int = CURVE_POINTS) -> dict[str, Any]:
    """Error rate vs swaps seen from per-position accuracies [T]: ``swaps`` (the last position of each bin, 1-based),
    ``error`` (the mean error over the bin) and ``cumulative_error`` (the mean error over positions 1..swaps)."""
    length = len(correct_by_position)
    width = max(1, -(-length // points))
    error = 1.0 - np.asarray(correct_by_position, dtype=np.float64)
    ends = [*range(width, length, width), length]
    starts = [0, *ends[:-1]]
    cumulative = np.cumsum(error) / np.arange(1, length + 1)
    return {"eval_len": length, "swaps": ends,
            "error": [float(error[s:e].mean()) for s, e in zip(starts, ends, strict=True)],
            "cumulative_error": [float(cumulative[e - 1]) for e in ends]}


def load_cells(path: Path, fingerprint: str) -> tuple[list[Cell], int]:
    """The cells stored in ``path`` under ``fingerprint`` and the number of lines skipped (another configuration,
    or a line cut short when a run was killed mid-write)."""
    cells: list[Cell] = []
    skipped = 0
    if not path.exists():
        return cells, skipped
    names = {f.name for f in dataclasses.fields(Cell)}
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            skipped += 1
            continue
        if not isinstance(record, dict) or record.get("fingerprint") != fingerprint:
            skipped += 1
            continue
        cells.append(Cell(**{k: v for k, v in record.items() if k in names}))
    return cells, skipped


def _append(path: Path, fingerprint: str, cell: Cell) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cut = path.exists() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    with path.open("a") as handle:  # a line cut short by a kill is closed first, so the new record stays whole
        handle.write(("\n" if cut else "") + json.dumps({"fingerprint": fingerprint, **asdict(cell)}) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _curriculum(config: SweepConfig, n: int, seed: int) -> Iterator[Batch]:
    return itertools.chain.from_iterable(train_batches(n, length, batch, steps, seed=seed)
                                         for length, steps, batch in config.stages())


def _run_cell(config: SweepConfig, name: str, n: int, seed: int, eval_data: dict[int, SwapData],
              progress_label: str, say: Any) -> Cell:
    device = torch.device(config.device)
    start, cpu_start = time.perf_counter(), time.process_time()
    torch.manual_seed(_model_seed(seed, name, n))
    model = SwapModel(name, n, config.model).to(device)
    data = _curriculum(config, n, seed)

    def progress(step: int, loss: float) -> None:
        say(f"  {progress_label} step {step}/{config.train.steps} loss {loss:.3f}")

    record = train(model, data, config.train, seed=_model_seed(seed, name, n), progress=progress,
                   log_every=config.log_every, target=config.target, device=device)
    by_position = {length: position_accuracy(model, held_out, device=device) for length, held_out in eval_data.items()}
    accuracy = {str(length): float(np.mean(correct[scored_positions(length)]))
                for length, correct in by_position.items()}
    longest = max(by_position)
    return Cell(model=name, kernel=model_kernel(name), n=n, d_k=config.model.d_k, seed=seed,
                train_len=config.train_len, train_lens=list(config.train_lens), steps=record.steps,
                final_loss=record.final_loss, diverged_at=record.diverged_at,
                steps_to_target=record.steps_to_target, loss_spikes=record.loss_spikes,
                seconds=time.perf_counter() - start, cpu_seconds=time.process_time() - cpu_start,
                accuracy=accuracy, error_vs_swaps=error_curve(by_position[longest]), curve=asdict(record.curve))


def run_sweep(config: SweepConfig, log: TextIO | None = sys.stderr, cells_path: Path | None = None) -> SweepResult:
    """Train and evaluate every (model, n, seed); progress lines go to ``log`` (None for silence).

    ``cells_path``: a JSON-lines file; finished cells are appended to it, and cells already stored there under this
    configuration's fingerprint are reused instead of re-run.
    """

    def say(line: str) -> None:
        if log is not None:
            log.write(line + "\n")
            log.flush()

    start = time.perf_counter()
    cpu_start = time.process_time()
    fingerprint = config.fingerprint()
    stored: dict[tuple[str, int, int], Cell] = {}
    if cells_path is not None:
        found, skipped = load_cells(cells_path, fingerprint)
        stored = {cell.key: cell for cell in found}
        if found or skipped:
            say(f"{cells_path}: {len(found)} stored cell(s) of this configuration, {skipped} other line(s) ignored")
    seeds = [config.seed + i for i in range(config.seeds)]
    total = len(config.ns) * len(config.models) * len(seeds)
    cells: list[Cell] = []
    baselines: list[Baseline] = []
    baseline_curves: dict[int, dict[str, Any]] = {}
    resumed = 0
    for n in config.ns:
        eval_data = {length: make_data(n, config.eval_count, length, seed=config.seed, split="eval")
                     for length in config.eval_lens}
        for length, held_out in eval_data.items():
            hits = one_hop_predictions(held_out) == held_out.target
            baselines.append(Baseline(n=n, seq_len=length, chance=1 / n,
                                      one_hop=float(np.mean(hits[:, scored_positions(length)]))))
        longest = max(eval_data)
        baseline_curves[n] = error_curve(
            np.mean(one_hop_predictions(eval_data[longest]) == eval_data[longest].target, axis=0))
        for name in config.models:
            for seed in seeds:
                index = len(cells) + 1
                label = f"[{index}/{total}] {name} n={n} seed={seed}"
                if (name, n, seed) in stored:
                    cells.append(stored[(name, n, seed)])
                    resumed += 1
                    say(f"{label}: stored, skipped")
                    continue
                cell = _run_cell(config, name, n, seed, eval_data, label, say)
                if cells_path is not None:
                    _append(cells_path, fingerprint, cell)
                cells.append(cell)
                note = "" if cell.diverged_at is None else f", DIVERGED at step {cell.diverged_at}"
                accs = ", ".join(f"acc@{length} {acc:.3f}" for length, acc in cell.accuracy.items())
                say(f"{label}: {cell.seconds:.1f} s, loss {cell.final_loss:.3f}{note}, {accs} "
                    f"(elapsed {time.perf_counter() - start:.0f} s)")
    return SweepResult(config=config, cells=cells, baselines=baselines, baseline_curves=baseline_curves,
                       seconds=time.perf_counter() - start, cpu_seconds=time.process_time() - cpu_start,
                       resumed=resumed)
