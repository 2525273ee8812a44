"""CLI: ``python -m proofs_checks.differential module:function --op OP [options]``.

The callable takes the arguments of ``impl.<op>`` (see ``proofs_checks.differential``). Declare what it supports
(``--kernels``, ``--write``, ``--no-varlen``, ``--no-state``, ``--chunk-sizes``, ``--head-sizes``,
``--same-head-size``, ``--skip-unsupported``) and its
precision policy (``--compute-dtype``, ``--intermediates``); the summary says what was left out and why.

Exit status: 0 every compared case agrees with the spec; 1 a case disagrees, the callable raised (or its process
died under ``--isolate``), or no case was compared at all (the report lists every distinct failure, shrunk, with a
reproducer); 2 usage error or a harness error (its own reference failed its tie to the spec).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from proofs_checks.differential import certified
from proofs_checks.differential.compare import HarnessError
from proofs_checks.differential.isolate import load_target
from proofs_checks.differential.ops import KERNELS, OPS, WRITES
from proofs_checks.differential.search import run
from proofs_checks.differential.strategies import DTYPES, Capabilities
from proofs_checks.differential.tolerances import COMPUTE_DTYPES, INTERMEDIATES, Precision


def _names(parser: argparse.ArgumentParser, flag: str, text: str, known: Sequence[str]) -> tuple[str, ...]:
    names = tuple(n for n in text.split(",") if n)
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        parser.error(f"{flag} must be a comma-separated list from {', '.join(known)}, got {text!r}")
    return names


def _sizes(parser: argparse.ArgumentParser, flag: str, text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        sizes = tuple(int(c) for c in text.split(",") if c)
    except ValueError:
        parser.error(f"{flag} must be comma-separated integers, got {text!r}")
    if not sizes or min(sizes) < 1:
        parser.error(f"{flag} must be positive integers, got {text!r}")
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proofs_checks.differential", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", help="module:function with the signature of impl.<op>")
    parser.add_argument("--op", required=True, choices=tuple(OPS))
    parser.add_argument("--examples", type=int, default=50, help="number of drawn cases (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="Hypothesis seed (default 0)")
    parser.add_argument("--dtypes", default="float64,float32",
                        help=f"comma-separated input dtypes from {','.join(DTYPES)} (default float64,float32)")
    parser.add_argument("--no-grads", action="store_true", help="compare outputs only")
    parser.add_argument("--max-t", type=int, default=40, help="largest T of the short cases (default 40)")
    parser.add_argument("--long-t", type=int, default=300, help="largest T of the long cases (default 300)")
    parser.add_argument("--no-shrink", action="store_true", help="report the first case of each failure unshrunk")
    parser.add_argument("--no-pinned", action="store_true", help="skip the pinned cases (one per bug class)")
    parser.add_argument("--fail-fast", action="store_true", help="stop the search at the first failing case")
    capabilities = parser.add_argument_group("capabilities (what the callable supports)")
    capabilities.add_argument("--kernels", default=",".join(KERNELS),
                              help=f"DeltaFormer write kernels to draw (default {','.join(KERNELS)})")
    capabilities.add_argument("--write", default=",".join(WRITES),
                              help=f"DeltaFormer write vectors to draw (default {','.join(WRITES)})")
    capabilities.add_argument("--no-varlen", action="store_true", help="never pass cu_seqlens")
    capabilities.add_argument("--no-state", action="store_true", help="never pass initial_state")
    capabilities.add_argument("--chunk-sizes", help="comma-separated chunk sizes to draw (default: 1 to 100)")
    capabilities.add_argument("--head-sizes", help="comma-separated head sizes K and V to draw (default: 1 to 16)")
    capabilities.add_argument("--same-head-size", action="store_true", help="always V = K")
    capabilities.add_argument("--skip-unsupported", action="store_true",
                              help="count a case where the callable raises NotImplementedError as unsupported")
    precision = parser.add_argument_group("precision policy (what the error budget allows)")
    precision.add_argument("--compute-dtype", choices=COMPUTE_DTYPES,
                           help="the arithmetic's dtype (default: float64 for float64 inputs, else float32)")
    precision.add_argument("--intermediates", choices=INTERMEDIATES, default="compute",
                           help="'input': per-chunk intermediates rounded to the input dtype (default compute)")
    parser.add_argument("--json", type=Path, help="also write the report (with the coverage summary) as JSON")
    parser.add_argument("--isolate", action="store_true",
                        help="run each case in a child process (a crash becomes a failing case)")
    parser.add_argument("--threads", type=int,
                        help="torch intra-op threads (the cases are small: 1 is often faster on a busy machine)")
    parser.add_argument("--certified", action="store_true",
                        help="bound the spec reference's own error on the reported cases, by interval arithmetic")
    args = parser.parse_args(argv)
    dtypes = _names(parser, "--dtypes", args.dtypes, DTYPES)
    declared = Capabilities(kernels=_names(parser, "--kernels", args.kernels, KERNELS),
                            writes=_names(parser, "--write", args.write, WRITES), varlen=not args.no_varlen,
                            state=not args.no_state, chunk_sizes=_sizes(parser, "--chunk-sizes", args.chunk_sizes),
                            head_sizes=_sizes(parser, "--head-sizes", args.head_sizes),
                            same_head_size=args.same_head_size, skip_unsupported=args.skip_unsupported)
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be a positive integer, got {args.threads}")
        torch.set_num_threads(args.threads)
    try:
        load_target(args.target)
    except (ImportError, AttributeError, ValueError) as error:
        print(f"error: cannot load {args.target}: {error}", file=sys.stderr)
        return 2
    try:
        summary = run(args.target, args.op, examples=args.examples, seed=args.seed, dtypes=dtypes,
                      grads=not args.no_grads, max_t=args.max_t, long_t=args.long_t, shrink=not args.no_shrink,
                      capabilities=declared, precision=Precision(args.compute_dtype, args.intermediates),
                      isolate=args.isolate, pinned=not args.no_pinned, fail_fast=args.fail_fast)
    except HarnessError as error:
        print(f"harness error: {error}", file=sys.stderr)
        return 2
    print(summary.report())
    if args.certified:
        reported = [(f"failure {i}", f.result) for i, f in enumerate(summary.failures, 1) if f.result is not None]
        reported += [("worst", summary.worst)] if summary.worst is not None and not summary.failures else []
        print(certified.report([(label, case.problem, case.budgets) for label, case in reported if case]))
    if args.json is not None:
        args.json.write_text(json.dumps(summary.to_json(), indent=2, default=str) + "\n")
    return 0 if summary.passed else 1


if __name__ == "__main__":
    sys.exit(main())
