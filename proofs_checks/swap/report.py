"""The sweep's outputs: the JSON document, the summary over seeds (mean and 95% Student t interval), the text and
markdown tables.

JSON: ``{"results": [{model, kernel, n, d_k, train_len, eval_len, seed, accuracy, final_loss, steps, seconds, ...}],
"summary": [{model, n, d_k, eval_len, mean, ci_low, ci_high, seeds}], "curves": {"loss": {cell: {...}},
"error_vs_swaps": {cell: {...}}, "one_hop_error_vs_swaps": {n: {...}}}, "baselines": [...], "config": {...},
"seconds", "cpu_seconds", "ci_method"}``; a cell is named ``"<model>/n=<n>/seed=<seed>"``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from proofs_checks.swap.stats import mean_ci
from proofs_checks.swap.sweep import Cell, SweepResult, as_json

__all__ = ["CI_METHOD", "Summary", "markdown_report", "results_json", "summarise", "text_table", "write_outputs"]

CI_METHOD = ("95% Student t interval over seeds: mean +- t_{0.975, s-1} sd / sqrt(s) (sd with divisor s - 1), "
             "clipped to [0, 1]; null for a single seed")


@dataclass(frozen=True)
class Summary:
    """One (model, n, eval_len) cell over its seeds."""

    model: str
    n: int
    d_k: int
    eval_len: int
    mean: float
    ci_low: float | None
    ci_high: float | None
    seeds: int


def cell_name(cell: Cell) -> str:
    return f"{cell.model}/n={cell.n}/seed={cell.seed}"


def summarise(result: SweepResult) -> list[Summary]:
    """Mean and 95% interval of the accuracy over seeds, per (model, n, eval_len), in the sweep's order."""
    rows = []
    config = result.config
    for name in config.models:
        for n in config.ns:
            cells = [c for c in result.cells if c.model == name and c.n == n]
            for length in config.eval_lens:
                mean, low, high = mean_ci([c.accuracy[str(length)] for c in cells])
                rows.append(Summary(model=name, n=n, d_k=config.model.d_k, eval_len=length, mean=mean,
                                    ci_low=None if low is None else max(0.0, low),
                                    ci_high=None if high is None else min(1.0, high), seeds=len(cells)))
    return rows


def results_json(result: SweepResult) -> dict[str, Any]:
    """The JSON document (module docstring)."""
    results = [{"model": c.model, "kernel": c.kernel, "n": c.n, "d_k": c.d_k, "train_len": c.train_len,
                "train_lens": c.train_lens, "eval_len": int(length), "seed": c.seed, "accuracy": acc,
                "final_loss": c.final_loss, "steps": c.steps, "seconds": c.seconds, "cpu_seconds": c.cpu_seconds,
                "diverged_at": c.diverged_at, "steps_to_target": c.steps_to_target, "loss_spikes": c.loss_spikes}
               for c in result.cells for length, acc in c.accuracy.items()]
    return {
        "results": results,
        "summary": [asdict(row) for row in summarise(result)],
        "curves": {"loss": {cell_name(c): c.curve for c in result.cells if c.curve["step"]},
                   "error_vs_swaps": {cell_name(c): c.error_vs_swaps for c in result.cells},
                   "one_hop_error_vs_swaps": {str(n): curve for n, curve in result.baseline_curves.items()}},
        "baselines": [asdict(b) for b in result.baselines],
        "config": {**as_json(result.config), "stages": [list(s) for s in result.config.stages()],
                   "accuracy_positions": "t in (L/2, L] of each held-out sequence of length L",
                   "fingerprint": result.config.fingerprint()},
        "ci_method": CI_METHOD,
        "seconds": result.seconds,
        "cpu_seconds": result.cpu_seconds,
        "cells_resumed": result.resumed,
    }


def _format(row: Summary) -> str:
    if row.ci_low is None or row.ci_high is None:
        return f"{row.mean:.3f}"
    return f"{row.mean:.2f} [{row.ci_low:.2f}, {row.ci_high:.2f}]"


def _title(result: SweepResult, length: int) -> str:
    longest = result.config.train_len
    kind = "trained length" if length == longest else (
        "longer than trained" if length > longest else "shorter than the longest trained")
    return f"seq_len = {length} ({kind}); accuracy on positions {length // 2 + 1}..{length}"


def _grid(result: SweepResult, length: int) -> list[tuple[str, list[str]]]:
    """Rows (label, cells per n) at one evaluation length, baselines last; a cell any seed of which diverged is
    marked *."""
    config = result.config
    by_key = {(row.model, row.n): row for row in summarise(result) if row.eval_len == length}
    rows = []
    for name in config.models:
        cells = []
        for n in config.ns:
            diverged = any(c.diverged_at is not None for c in result.cells if c.model == name and c.n == n)
            cells.append(_format(by_key[(name, n)]) + ("*" if diverged else ""))
        rows.append((name, cells))
    base = {(b.n, b.seq_len): b for b in result.baselines}
    rows.append(("one-hop shortcut", [f"{base[(n, length)].one_hop:.3f}" for n in config.ns]))
    rows.append(("chance 1/n", [f"{base[(n, length)].chance:.3f}" for n in config.ns]))
    return rows


def _footer(result: SweepResult) -> list[str]:
    lines = []
    if result.config.seeds > 1:
        lines.append(f"mean [95% CI] over {result.config.seeds} seeds: {CI_METHOD}")
    if any(c.diverged_at is not None for c in result.cells):
        lines.append("* training diverged (non-finite loss) in at least one seed; that model kept its last finite "
                     "parameters")
    lines.append(f"wall time {result.seconds:.0f} s, CPU time {result.cpu_seconds:.0f} s (this process; "
                 f"{result.resumed} cell(s) reused from the cells file)")
    return lines


def text_table(result: SweepResult) -> str:
    """The accuracy tables as fixed-width text (one per evaluation length)."""
    lines = []
    width = 22 if result.config.seeds == 1 else 20
    for length in result.config.eval_lens:
        lines.append(_title(result, length))
        lines.append(f"{'model':<22}" + "".join(f"{'n=' + str(n):>{width}}" for n in result.config.ns))
        for label, cells in _grid(result, length):
            lines.append(f"{label:<22}" + "".join(f"{c:>{width}}" for c in cells))
        lines.append("")
    return "\n".join(lines + _footer(result))


def _stability_rows(result: SweepResult) -> list[str]:
    """Per (model, n) over seeds: final loss (mean [95% CI]), steps to target per seed, spikes, divergences."""
    rows = ["| model | n | final loss | steps to target (per seed) | loss spikes (sum) | diverged |",
            "|---|---:|---:|---|---:|---:|"]
    for name in result.config.models:
        for n in result.config.ns:
            cells = [c for c in result.cells if c.model == name and c.n == n]
            mean, low, high = mean_ci([c.final_loss for c in cells])
            loss = f"{mean:.3f}" if low is None or high is None else f"{mean:.3f} [{max(0.0, low):.3f}, {high:.3f}]"
            targets = ", ".join("-" if c.steps_to_target is None else str(c.steps_to_target) for c in cells)
            diverged = sum(c.diverged_at is not None for c in cells)
            rows.append(f"| {name} | {n} | {loss} | {targets} | {sum(c.loss_spikes for c in cells)} | "
                        f"{diverged}/{len(cells)} |")
    return rows


def _training_rows(result: SweepResult) -> list[str]:
    rows = ["| model | n | seed | final loss | diverged at | steps to target | loss spikes | seconds (CPU) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for c in result.cells:
        diverged = "-" if c.diverged_at is None else str(c.diverged_at)
        target = "-" if c.steps_to_target is None else str(c.steps_to_target)
        rows.append(f"| {c.model} | {c.n} | {c.seed} | {c.final_loss:.3f} | {diverged} | {target} | "
                    f"{c.loss_spikes} | {c.seconds:.0f} ({c.cpu_seconds:.0f}) |")
    return rows


def markdown_report(result: SweepResult, figures: list[str]) -> str:
    """The tables, the training records and the configuration as markdown, embedding ``figures`` (file names)."""
    config = result.config
    stages = ", ".join(f"{steps} steps x batch {batch} at {length} swaps" for length, steps, batch in config.stages())
    title = "# Swap-task sweep" + (f": preset `{config.preset}`" if config.preset else "")
    lines = [title, "",
             f"Models: width {config.model.width}, {config.model.layers} layer(s), {config.model.heads} head(s) of "
             f"d_k = {config.model.d_k}, DeltaFormer beta_mode {config.model.deltaformer_beta}, DeltaNet beta "
             f"{config.model.deltanet_beta}. Training: {stages}; lr {config.train.lr}; seeds "
             f"{config.seed}..{config.seed + config.seeds - 1}; evaluation on {config.eval_count} held-out sequences "
             f"per length; device {config.device}. Wall time {result.seconds:.0f} s, CPU time "
             f"{result.cpu_seconds:.0f} s ({result.resumed} cell(s) reused from an earlier, interrupted run: their "
             f"time is in the per-cell seconds, not in these totals).", ""]
    for length in config.eval_lens:
        lines += [f"## {_title(result, length)}", "",
                  "| model | " + " | ".join(f"n = {n}" for n in config.ns) + " |",
                  "|---|" + "---:|" * len(config.ns)]
        lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in _grid(result, length)]
        lines.append("")
    lines += [line for line in _footer(result)[:-1]] + [""]
    lines += ["## Training", "", f"Steps to target: first step at which the accuracy of the fresh training batches "
              f"(before their update), averaged over the last {config.log_every} steps, reached {config.target} "
              f"(- never). Loss spikes: see proofs_checks/swap/train.py.", "", *_stability_rows(result), ""] \
        if config.log_every else ["## Training", ""]
    lines += _training_rows(result)
    lines += [""] + [f"![{name}]({name})" for name in figures]
    return "\n".join(lines) + "\n"


def write_outputs(result: SweepResult, out: Path | None, json_path: Path | None) -> list[Path]:
    """Write the markdown report and figures into ``out`` and the JSON to ``json_path``; returns the paths."""
    from proofs_checks.swap.figures import draw_all

    written = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        figures = draw_all(result, out)
        report = out / "swap_results.md"
        report.write_text(markdown_report(result, [path.name for path in figures]))
        written += [report, *figures]
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(results_json(result), indent=1) + "\n")
        written.append(json_path)
    return written
