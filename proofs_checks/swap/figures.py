"""The sweep's figures (PNG, matplotlib's Agg backend): accuracy vs n with 95% intervals over seeds, training loss
curves per model, and cumulative error vs swaps seen on the longest held-out sequences."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from proofs_checks.swap.report import summarise
from proofs_checks.swap.sweep import SweepResult

__all__ = ["draw_all"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def accuracy_vs_n(result: SweepResult, path: Path) -> None:
    """Accuracy vs n per model (mean over seeds, 95% interval as error bars), one panel per evaluation length."""
    plt = _pyplot()
    config = result.config
    lengths = config.eval_lens
    fig, axes = plt.subplots(1, len(lengths), figsize=(5.2 * len(lengths), 4.2), squeeze=False, sharey=True)
    base = {(b.n, b.seq_len): b for b in result.baselines}
    summary = summarise(result)
    ns = list(config.ns)
    for ax, length in zip(axes[0], lengths, strict=True):
        for name in config.models:
            rows = [r for r in summary if r.model == name and r.eval_len == length]
            means = np.array([r.mean for r in rows])
            low = np.array([r.mean if r.ci_low is None else r.ci_low for r in rows])
            high = np.array([r.mean if r.ci_high is None else r.ci_high for r in rows])
            ax.errorbar([r.n for r in rows], means, yerr=[means - low, high - means], marker="o", capsize=3,
                        label=name)
        ax.plot(ns, [base[(n, length)].one_hop for n in ns], "k--", marker="x", lw=1, label="one-hop shortcut")
        ax.plot(ns, [base[(n, length)].chance for n in ns], "k:", marker="_", lw=1, label="chance 1/n")
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns, [str(n) for n in ns])
        if config.model.d_k <= max(ns):
            ax.axvline(config.model.d_k, color="grey", lw=0.8, alpha=0.6)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(f"n (objects); grey line: d_k = {config.model.d_k}" if config.model.d_k <= max(ns)
                      else "n (objects)")
        ax.set_title(f"seq_len = {length}" + (f" (trained up to {config.train_len})"), fontsize=10)
        ax.grid(alpha=0.3)
    seeds = f"mean, 95% CI, {config.seeds} seeds" if config.seeds > 1 else "one seed"
    axes[0][0].set_ylabel(f"held-out accuracy ({seeds})")
    axes[0][-1].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def loss_curves(result: SweepResult, path: Path) -> None:
    """Training loss vs step, one panel per model, one line per (n, seed); dotted lines mark curriculum stages."""
    plt = _pyplot()
    config = result.config
    models = list(config.models)
    cols = min(4, len(models))
    rows = -(-len(models) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False, sharey=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    boundaries = np.cumsum([steps for _, steps, _ in config.stages()])[:-1]
    for index, name in enumerate(models):
        ax = axes[index // cols][index % cols]
        for i, n in enumerate(config.ns):
            for j, cell in enumerate(c for c in result.cells if c.model == name and c.n == n):
                ax.plot(cell.curve["step"], cell.curve["loss"], color=colours[i % len(colours)], lw=0.8, alpha=0.8,
                        label=f"n = {n}" if j == 0 else None)
        for step in boundaries:
            ax.axvline(step, color="grey", ls=":", lw=0.8)
        if any(c.curve["step"] for c in result.cells if c.model == name):
            ax.set_yscale("log")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for index in range(len(models), rows * cols):
        axes[index // cols][index % cols].axis("off")
    for row in axes:
        row[0].set_ylabel("training loss (interval mean)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def error_vs_swaps(result: SweepResult, path: Path) -> None:
    """Cumulative error (mean error over swaps 1..t) vs swaps seen t on the longest held-out sequences, one panel
    per n, mean over seeds per model (band: min..max over seeds); the one-hop shortcut dashed."""
    plt = _pyplot()
    config = result.config
    ns = list(config.ns)
    fig, axes = plt.subplots(1, len(ns), figsize=(4.6 * len(ns), 3.8), squeeze=False, sharey=True)
    for ax, n in zip(axes[0], ns, strict=True):
        for name in config.models:
            cells = [c for c in result.cells if c.model == name and c.n == n]
            curves = np.array([c.error_vs_swaps["cumulative_error"] for c in cells])
            swaps = cells[0].error_vs_swaps["swaps"]
            line = ax.plot(swaps, curves.mean(0), lw=1.2, label=name)[0]
            if len(cells) > 1:
                ax.fill_between(swaps, curves.min(0), curves.max(0), color=line.get_color(), alpha=0.15)
        shortcut = result.baseline_curves[n]
        ax.plot(shortcut["swaps"], shortcut["cumulative_error"], "k--", lw=1, label="one-hop shortcut")
        ax.axvline(config.train_len, color="grey", lw=0.8, alpha=0.6)
        ax.set_ylim(0, 1.0)
        ax.set_title(f"n = {n} (grey: longest trained length {config.train_len})", fontsize=9)
        ax.set_xlabel("swaps seen")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("cumulative error rate")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_all(result: SweepResult, out: Path) -> list[Path]:
    """Every figure that applies (the loss curves need ``log_every`` > 0) into ``out``; returns their paths."""
    paths = [out / "swap_accuracy_vs_n.png", out / "swap_error_vs_swaps.png"]
    accuracy_vs_n(result, paths[0])
    error_vs_swaps(result, paths[1])
    if result.config.log_every > 0:
        paths.append(out / "swap_loss_curves.png")
        loss_curves(result, paths[-1])
    return paths
