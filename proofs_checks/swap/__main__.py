"""``python -m proofs_checks.swap``: the swap-task sweep (table on stdout, markdown + PNG in --out, --json)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from impl.layers import BETA_MODES
from proofs_checks.swap.models import DELTANET_BETAS, MODEL_NAMES, ModelConfig
from proofs_checks.swap.sweep import SweepConfig, run_sweep, text_table, write_outputs
from proofs_checks.swap.train import TrainConfig

DEFAULT = SweepConfig()
QUICK_NS = (3, 8)
QUICK_STEPS = 200


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m proofs_checks.swap", description=__doc__)
    parser.add_argument("--n", type=int, nargs="+", default=None,
                        help=f"numbers of objects (default {' '.join(map(str, DEFAULT.ns))}; quick: "
                             f"{' '.join(map(str, QUICK_NS))})")
    parser.add_argument("--models", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES))
    parser.add_argument("--quick", action="store_true",
                        help=f"reduced sweep: n in {QUICK_NS}, {QUICK_STEPS} steps (a few minutes)")
    parser.add_argument("--steps", type=int, default=None, help=f"training steps (default {DEFAULT.train.steps})")
    parser.add_argument("--batch", type=int, default=DEFAULT.train.batch)
    parser.add_argument("--lr", type=float, default=DEFAULT.train.lr)
    parser.add_argument("--train-len", type=int, default=DEFAULT.train_len, help="swaps per training sequence")
    parser.add_argument("--eval-lens", type=int, nargs="+", default=list(DEFAULT.eval_lens),
                        help="swaps per held-out evaluation sequence")
    parser.add_argument("--eval-count", type=int, default=DEFAULT.eval_count,
                        help="held-out sequences per length")
    parser.add_argument("--width", type=int, default=DEFAULT.model.width)
    parser.add_argument("--layers", type=int, default=DEFAULT.model.layers)
    parser.add_argument("--heads", type=int, default=DEFAULT.model.heads)
    parser.add_argument("--deltaformer-beta", choices=BETA_MODES, default=DEFAULT.model.deltaformer_beta,
                        help="beta_mode of the impl DeltaFormer layer")
    parser.add_argument("--deltanet-beta", choices=DELTANET_BETAS, default=DEFAULT.model.deltanet_beta,
                        help="DeltaNet's beta: sigmoid in (0, 1) (default) or 2 sigmoid in (0, 2) (ablation)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a shared machine more threads run slower)")
    parser.add_argument("--out", type=Path, default=Path("swap_results"),
                        help="directory for swap_results.md and swap_accuracy_vs_n.png")
    parser.add_argument("--json", type=Path, default=None, help="write the results as JSON to this path")
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> SweepConfig:
    ns = tuple(args.n) if args.n is not None else (QUICK_NS if args.quick else DEFAULT.ns)
    steps = args.steps if args.steps is not None else (QUICK_STEPS if args.quick else DEFAULT.train.steps)
    return SweepConfig(ns=ns, models=tuple(args.models), train_len=args.train_len, eval_lens=tuple(args.eval_lens),
                       eval_count=args.eval_count,
                       model=ModelConfig(width=args.width, layers=args.layers, heads=args.heads,
                                         deltaformer_beta=args.deltaformer_beta, deltanet_beta=args.deltanet_beta),
                       train=TrainConfig(steps=steps, batch=args.batch, lr=args.lr), seed=args.seed)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    print(f"swap sweep: models {', '.join(config.models)}; n in {list(config.ns)}; {config.train.steps} steps x "
          f"batch {config.train.batch} on {config.train_len} swaps; eval lengths {list(config.eval_lens)}",
          file=sys.stderr)
    result = run_sweep(config)
    print(text_table(result))
    for path in write_outputs(result, args.out, args.json):
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
