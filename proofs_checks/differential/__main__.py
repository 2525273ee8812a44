"""CLI: ``python -m proofs_checks.differential module:function --op OP [--examples N] [--seed S] ...``.

Exit status: 0 every drawn case agrees with the spec; 1 a case disagrees or the callable raised (the report shows
the worst case and a reproducer); 2 usage error or a harness error (its own reference failed its tie to the spec).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from proofs_checks.differential import certified
from proofs_checks.differential.check import HarnessError
from proofs_checks.differential.runner import run
from proofs_checks.differential.strategies import DTYPES, OPS


def _load(target: str) -> Callable[..., object]:
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise SystemExit(f"error: expected module:function, got {target!r}")
    obj: object = importlib.import_module(module_name)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise SystemExit(f"error: {target} is not callable")
    return obj


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proofs_checks.differential", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", help="module:function with the signature of impl.<op>")
    parser.add_argument("--op", required=True, choices=OPS)
    parser.add_argument("--examples", type=int, default=50, help="number of drawn cases (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="Hypothesis seed (default 0)")
    parser.add_argument("--dtypes", default="float64,float32",
                        help=f"comma-separated input dtypes from {','.join(DTYPES)} (default float64,float32)")
    parser.add_argument("--no-grads", action="store_true", help="compare outputs only")
    parser.add_argument("--max-t", type=int, default=40, help="largest T of the short cases (default 40)")
    parser.add_argument("--long-t", type=int, default=300, help="largest T of the long cases (default 300)")
    parser.add_argument("--no-shrink", action="store_true", help="report the first failing case unshrunk")
    parser.add_argument("--certified", action="store_true",
                        help="bound the spec reference's own error on the reported cases, by interval arithmetic")
    args = parser.parse_args(argv)
    dtypes = tuple(d for d in args.dtypes.split(",") if d)
    unknown = [d for d in dtypes if d not in DTYPES]
    if unknown or not dtypes:
        parser.error(f"--dtypes must be from {', '.join(DTYPES)}, got {args.dtypes!r}")
    try:
        fn = _load(args.target)
    except (ImportError, AttributeError) as error:
        print(f"error: cannot load {args.target}: {error}", file=sys.stderr)
        return 2
    try:
        summary = run(fn, args.op, examples=args.examples, seed=args.seed, dtypes=dtypes, grads=not args.no_grads,
                      max_t=args.max_t, long_t=args.long_t, shrink=not args.no_shrink)
    except HarnessError as error:
        print(f"harness error: {error}", file=sys.stderr)
        return 2
    print(summary.report())
    if args.certified:
        reported = [(label, case) for label, case in (("failing", summary.failure), ("worst", summary.worst)) if case]
        print(certified.report([(label, case.problem, case.budgets) for label, case in reported]))
    return 0 if summary.passed else 1


if __name__ == "__main__":
    sys.exit(main())
