"""``python -m proofs_checks.swap``: the swap-task sweep (table on stdout, markdown + PNG in --out, --json).

Without ``--preset`` it runs issue 6's default sweep (or ``--quick``); ``--preset fig4 | beyond-dk | paper`` runs a
named sweep (``proofs_checks/swap/presets.py``), whose settings explicit options override. Finished cells are
appended to a JSON-lines file (``--cells``; default beside ``--json``, else in ``--out``), and a re-run with the same
configuration resumes from it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import torch

from impl.layers import BETA_MODES
from proofs_checks.swap.models import DELTANET_BETAS, MODEL_NAMES, ModelConfig
from proofs_checks.swap.presets import PRESETS, paper_cpu_estimate, preset
from proofs_checks.swap.report import text_table, write_outputs
from proofs_checks.swap.sweep import DEVICES, SweepConfig, run_sweep
from proofs_checks.swap.train import TrainConfig

T = TypeVar("T")

DEFAULT = SweepConfig()
QUICK_NS = (3, 8)
QUICK_STEPS = 200


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m proofs_checks.swap", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="a named sweep: fig4 (kernel ablation), beyond-dk (n past d_k), paper (GPU only)")
    parser.add_argument("--quick", action="store_true",
                        help=f"reduced sweep: the preset's quick variant, or without a preset n in {QUICK_NS}, "
                             f"{QUICK_STEPS} steps (a few minutes)")
    parser.add_argument("--n", type=int, nargs="+", default=None,
                        help=f"numbers of objects (default {' '.join(map(str, DEFAULT.ns))})")
    parser.add_argument("--models", nargs="+", choices=MODEL_NAMES, default=None)
    parser.add_argument("--seeds", type=int, default=None, help="seeds per cell (default 1; presets 3)")
    parser.add_argument("--steps", type=int, default=None, help=f"training steps (default {DEFAULT.train.steps})")
    parser.add_argument("--batch", type=int, default=None, help="sequences per step (of the first curriculum stage)")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--train-len", type=int, nargs="+", default=None,
                        help="swaps per training sequence; several values are a curriculum (equal steps each, "
                             "constant tokens per step)")
    parser.add_argument("--eval-lens", type=int, nargs="+", default=None,
                        help="swaps per held-out evaluation sequence")
    parser.add_argument("--eval-count", type=int, default=None, help="held-out sequences per length")
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--heads", type=int, default=None)
    parser.add_argument("--head-dim", type=int, default=None, help="head size d_k (default width / heads)")
    parser.add_argument("--deltaformer-beta", choices=BETA_MODES, default=None,
                        help="beta_mode of the impl DeltaFormer layer (default sigmoid2)")
    parser.add_argument("--deltanet-beta", choices=DELTANET_BETAS, default=None,
                        help="DeltaNet's beta: sigmoid in (0, 1) (default) or 2 sigmoid in (0, 2)")
    parser.add_argument("--log-every", type=int, default=None, help="log the training curve every N steps")
    parser.add_argument("--seed", type=int, default=None, help="first seed (default 0)")
    parser.add_argument("--device", choices=DEVICES, default=None, help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a shared machine more threads run slower)")
    parser.add_argument("--out", type=Path, default=None,
                        help="directory for swap_results.md and the figures (default swap_results[/<preset>])")
    parser.add_argument("--json", type=Path, default=None, help="write the results as JSON to this path")
    parser.add_argument("--cells", type=Path, default=None,
                        help="JSON-lines file of finished cells, appended to and resumed from (default "
                             "<json>.cells.jsonl, else <out>/cells.jsonl)")
    return parser.parse_args(argv)


def _given(value: T | None, fallback: T) -> T:
    return fallback if value is None else value


def config_from_args(args: argparse.Namespace) -> SweepConfig:
    """The preset (or the default sweep, or ``--quick``'s), with every explicitly given option applied on top."""
    if args.preset is not None:
        base = preset(args.preset, quick=args.quick)
    elif args.quick:
        base = replace(DEFAULT, ns=QUICK_NS, train=replace(DEFAULT.train, steps=QUICK_STEPS))
    else:
        base = DEFAULT
    model = base.model
    model = ModelConfig(width=_given(args.width, model.width), layers=_given(args.layers, model.layers),
                        heads=_given(args.heads, model.heads), head_dim=_given(args.head_dim, model.head_dim),
                        deltaformer_beta=_given(args.deltaformer_beta, model.deltaformer_beta),
                        deltanet_beta=_given(args.deltanet_beta, model.deltanet_beta))
    train = TrainConfig(steps=_given(args.steps, base.train.steps), batch=_given(args.batch, base.train.batch),
                        lr=_given(args.lr, base.train.lr))
    return replace(base, ns=tuple(_given(args.n, base.ns)),
                   models=tuple(_given(args.models, base.models)),
                   seeds=_given(args.seeds, base.seeds), seed=_given(args.seed, base.seed),
                   train_lens=tuple(_given(args.train_len, base.train_lens)),
                   eval_lens=tuple(_given(args.eval_lens, base.eval_lens)),
                   eval_count=_given(args.eval_count, base.eval_count),
                   log_every=_given(args.log_every, base.log_every), device=_given(args.device, base.device),
                   model=model, train=train)


def refuse_on_cpu(config: SweepConfig) -> str | None:
    """The refusal message for the GPU-sized preset when no CUDA device will run it, else None."""
    if config.preset != "paper" or (config.device == "cuda" and torch.cuda.is_available()):
        return None
    seconds, per_step = paper_cpu_estimate(config)
    stages = ", ".join(f"{length} swaps x {batch}: {s:.2f} s" for (length, _, batch), s in
                       zip(config.stages(), per_step, strict=True))
    why = "--device cpu was given" if config.device == "cpu" else "no CUDA device is available"
    return (f"the paper preset is sized for a GPU and {why}. On this CPU it would take about "
            f"{seconds / 3600:.0f} CPU-hours ({seconds / 86400:.1f} days) of training alone: measured seconds per "
            f"step ({stages}) x {config.train.steps} steps x {len(config.models)} models x {len(config.ns)} n x "
            f"{config.seeds} seeds. Run it with --device cuda on a machine with a GPU.")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    if config.device == "cuda" and config.preset != "paper" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    refusal = refuse_on_cpu(config)
    if refusal is not None:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    out = args.out if args.out is not None else Path("swap_results") / (config.preset or "")
    cells = args.cells
    if cells is None:
        cells = args.json.with_suffix(".cells.jsonl") if args.json is not None else out / "cells.jsonl"
    stages = ", ".join(f"{steps} steps x batch {batch} on {length} swaps" for length, steps, batch in config.stages())
    print(f"swap sweep{' (' + config.preset + ')' if config.preset else ''}: models {', '.join(config.models)}; "
          f"n in {list(config.ns)}; d_k {config.model.d_k}; seeds {config.seeds}; {stages}; eval lengths "
          f"{list(config.eval_lens)}; cells file {cells}", file=sys.stderr)
    result = run_sweep(config, log=sys.stderr, cells_path=cells)
    print(text_table(result))
    for path in write_outputs(result, out, args.json):
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
