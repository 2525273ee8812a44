"""The sweep: every model on every n, trained at one length, evaluated at that length and longer ones; the table,
the plot and the JSON it writes."""

from __future__ import annotations

import json
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from proofs_checks.swap.data import make_data, one_hop_predictions, scored_positions
from proofs_checks.swap.models import MODEL_NAMES, ModelConfig, SwapModel
from proofs_checks.swap.train import TrainConfig, TrainResult, evaluate, train

__all__ = ["Baseline", "Run", "SweepConfig", "SweepResult", "markdown_report", "plot", "results_json",
           "run_sweep", "text_table"]


@dataclass(frozen=True)
class SweepConfig:
    """What the sweep runs: models x ns, trained on ``train_len`` swaps, evaluated on ``eval_count`` held-out
    sequences of each length in ``eval_lens``."""

    ns: tuple[int, ...] = (3, 5, 8, 16, 32)
    models: tuple[str, ...] = MODEL_NAMES
    train_len: int = 16
    eval_lens: tuple[int, ...] = (16, 32, 64)
    eval_count: int = 256
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [m for m in self.models if m not in MODEL_NAMES]
        if unknown:
            raise ValueError(f"models must be among {MODEL_NAMES}, got {unknown}")
        if any(n < 2 for n in self.ns):
            raise ValueError(f"every n must be >= 2, got {self.ns}")
        if any(length < 2 for length in (self.train_len, *self.eval_lens)):
            raise ValueError("sequence lengths must be >= 2 (accuracy is scored on positions (L/2, L])")


@dataclass(frozen=True)
class Run:
    """One trained model: its training record and its accuracy at each evaluation length."""

    model: str
    n: int
    train: TrainResult
    accuracy: dict[int, float]


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
    runs: list[Run]
    baselines: list[Baseline]
    seconds: float
    cpu_seconds: float


def _model_seed(seed: int, name: str, n: int) -> int:
    return zlib.crc32(f"{seed}/{name}/{n}".encode())


def run_sweep(config: SweepConfig, log: TextIO | None = sys.stderr) -> SweepResult:
    """Train and evaluate every (model, n); progress lines go to ``log`` (None for silence)."""

    def say(line: str) -> None:
        if log is not None:
            log.write(line + "\n")
            log.flush()

    start = time.perf_counter()
    cpu_start = time.process_time()
    runs: list[Run] = []
    baselines: list[Baseline] = []
    total = len(config.ns) * len(config.models)
    for n in config.ns:
        train_data = make_data(n, config.train.steps * config.train.batch, config.train_len, seed=config.seed,
                               split="train")
        eval_data = {length: make_data(n, config.eval_count, length, seed=config.seed, split="eval")
                     for length in config.eval_lens}
        for length, data in eval_data.items():
            positions = scored_positions(length)
            hits = one_hop_predictions(data)[:, positions] == data.target[:, positions]
            baselines.append(Baseline(n=n, seq_len=length, chance=1 / n, one_hop=float(np.mean(hits))))
        for name in config.models:
            index = len(runs) + 1
            torch.manual_seed(_model_seed(config.seed, name, n))
            model = SwapModel(name, n, config.model)

            def progress(step: int, loss: float, name: str = name, n: int = n, index: int = index) -> None:
                say(f"  [{index}/{total}] {name} n={n} step {step}/{config.train.steps} loss {loss:.3f}")

            record = train(model, train_data, config.train, seed=_model_seed(config.seed, name, n),
                           progress=progress)
            accuracy = {length: evaluate(model, data) for length, data in eval_data.items()}
            runs.append(Run(model=name, n=n, train=record, accuracy=accuracy))
            note = "" if record.diverged_at is None else f", DIVERGED at step {record.diverged_at}"
            accs = ", ".join(f"acc@{length} {acc:.3f}" for length, acc in accuracy.items())
            say(f"[{index}/{total}] {name} n={n}: {record.seconds:.1f} s, loss {record.final_loss:.3f}{note}, "
                f"{accs} (elapsed {time.perf_counter() - start:.0f} s)")
    return SweepResult(config=config, runs=runs, baselines=baselines, seconds=time.perf_counter() - start,
                       cpu_seconds=time.process_time() - cpu_start)


def results_json(result: SweepResult) -> dict[str, Any]:
    """``{"results": [{"model", "n", "seq_len", "accuracy"}, ...]}`` plus baselines, training records, config."""
    config = result.config
    return {
        "results": [{"model": run.model, "n": run.n, "seq_len": length, "accuracy": acc}
                    for run in result.runs for length, acc in run.accuracy.items()],
        "baselines": [asdict(b) for b in result.baselines],
        "runs": [{"model": run.model, "n": run.n, "final_loss": run.train.final_loss,
                  "diverged_at": run.train.diverged_at, "seconds": run.train.seconds} for run in result.runs],
        "config": {"ns": list(config.ns), "models": list(config.models), "train_len": config.train_len,
                   "eval_lens": list(config.eval_lens), "eval_count": config.eval_count,
                   "model": asdict(config.model), "train": asdict(config.train), "seed": config.seed,
                   "accuracy_positions": "t in (L/2, L] of each held-out sequence of length L"},
        "seconds": result.seconds,
        "cpu_seconds": result.cpu_seconds,
    }


def _grid(result: SweepResult, length: int) -> list[tuple[str, list[str]]]:
    """Rows (label, cells per n) of the accuracy table at one evaluation length, baselines last."""
    by_key = {(run.model, run.n): run for run in result.runs}
    rows = []
    for name in result.config.models:
        cells = []
        for n in result.config.ns:
            run = by_key[(name, n)]
            mark = "*" if run.train.diverged_at is not None else ""
            cells.append(f"{run.accuracy[length]:.3f}{mark}")
        rows.append((name, cells))
    base = {(b.n, b.seq_len): b for b in result.baselines}
    rows.append(("one-hop shortcut", [f"{base[(n, length)].one_hop:.3f}" for n in result.config.ns]))
    rows.append(("chance 1/n", [f"{base[(n, length)].chance:.3f}" for n in result.config.ns]))
    return rows


def _title(config: SweepConfig, length: int) -> str:
    kind = "trained length" if length == config.train_len else (
        "longer than trained" if length > config.train_len else "shorter than trained")
    return f"seq_len = {length} ({kind}); accuracy on positions {length // 2 + 1}..{length}"


def text_table(result: SweepResult) -> str:
    """The accuracy tables as fixed-width text (one per evaluation length)."""
    lines = []
    for length in result.config.eval_lens:
        lines.append(_title(result.config, length))
        lines.append(f"{'model':<22}" + "".join(f"{'n=' + str(n):>9}" for n in result.config.ns))
        for label, cells in _grid(result, length):
            lines.append(f"{label:<22}" + "".join(f"{c:>9}" for c in cells))
        lines.append("")
    if any(run.train.diverged_at is not None for run in result.runs):
        lines.append("* training diverged (non-finite loss); the model kept its last finite parameters")
    lines.append(f"wall time {result.seconds:.0f} s, CPU time {result.cpu_seconds:.0f} s (this process)")
    return "\n".join(lines)


def markdown_report(result: SweepResult, plot_name: str | None) -> str:
    """The tables, the training records and the configuration as markdown."""
    config = result.config
    lines = ["# Swap-task sweep", "",
             f"Models: width {config.model.width}, {config.model.layers} layer(s), {config.model.heads} head(s), "
             f"DeltaFormer beta_mode {config.model.deltaformer_beta}, DeltaNet beta {config.model.deltanet_beta}; "
             f"training {config.train.steps} steps x batch {config.train.batch} on {config.train_len} swaps, "
             f"lr {config.train.lr}, seed {config.seed}; evaluation on {config.eval_count} held-out sequences per "
             f"length. Wall time {result.seconds:.0f} s, CPU time {result.cpu_seconds:.0f} s.", ""]
    for length in config.eval_lens:
        lines += [f"## {_title(config, length)}", "",
                  "| model | " + " | ".join(f"n = {n}" for n in config.ns) + " |",
                  "|---|" + "---:|" * len(config.ns)]
        lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in _grid(result, length)]
        lines.append("")
    lines += ["## Training", "", "| model | n | final loss | diverged at step | seconds |", "|---|---:|---:|---:|---:|"]
    for run in result.runs:
        diverged = "-" if run.train.diverged_at is None else str(run.train.diverged_at)
        lines.append(f"| {run.model} | {run.n} | {run.train.final_loss:.3f} | {diverged} | {run.train.seconds:.1f} |")
    if plot_name is not None:
        lines += ["", f"![accuracy vs n]({plot_name})"]
    return "\n".join(lines) + "\n"


def plot(result: SweepResult, path: Path) -> None:
    """Accuracy vs n per model, one panel per evaluation length, baselines dashed (PNG, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = result.config
    lengths = config.eval_lens
    fig, axes = plt.subplots(1, len(lengths), figsize=(5.2 * len(lengths), 4.2), squeeze=False, sharey=True)
    base = {(b.n, b.seq_len): b for b in result.baselines}
    for ax, length in zip(axes[0], lengths, strict=True):
        for name in config.models:
            runs = sorted((r for r in result.runs if r.model == name), key=lambda r: r.n)
            ax.plot([r.n for r in runs], [r.accuracy[length] for r in runs], marker="o", label=name)
        ns = list(config.ns)
        ax.plot(ns, [base[(n, length)].one_hop for n in ns], "k--", lw=1, label="one-hop shortcut")
        ax.plot(ns, [base[(n, length)].chance for n in ns], "k:", lw=1, label="chance 1/n")
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("n (objects)")
        ax.set_title(_title(config, length).split(";")[0], fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (held-out, positions L/2..L)")
    axes[0][-1].legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(result: SweepResult, out: Path | None, json_path: Path | None) -> list[Path]:
    """Write the markdown report and plot into ``out`` and the JSON to ``json_path``; returns the written paths."""
    written = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        plot_path = out / "swap_accuracy_vs_n.png"
        plot(result, plot_path)
        report = out / "swap_results.md"
        report.write_text(markdown_report(result, plot_path.name))
        written += [report, plot_path]
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(results_json(result), indent=2) + "\n")
        written.append(json_path)
    return written
