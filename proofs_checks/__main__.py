"""``python -m proofs_checks``: run every claim of the paper as a numerical check; exit 1 if any fails.

Options: --list, --only ID..., --thorough, --seed N, --json PATH, --plots DIR. Sub-commands live in their own
modules: ``python -m proofs_checks.differential`` (validate a kernel against the spec).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from proofs_checks._cli import select_by_id
from proofs_checks.claims.declaration import DEFAULT, THOROUGH
from proofs_checks.claims.registry import all_checks, all_figures
from proofs_checks.claims.run import render_table, run_checks, write_json, write_report


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the selected checks, print the table; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m proofs_checks", description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="list the checks and exit")
    parser.add_argument("--only", nargs="+", metavar="ID", help="run only these check ids (e.g. C6 C7)")
    parser.add_argument("--thorough", action="store_true", help="more samples and 100-digit precision")
    parser.add_argument("--seed", type=int, default=None, help="base seed (default: the profile's)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write machine-readable results here")
    parser.add_argument("--plots", type=Path, metavar="DIR", help="write PNG figures and report.md here")
    args = parser.parse_args(argv)

    checks = all_checks()
    if args.list:
        for check in checks:
            print(f"{check.id:<5} [{check.provenance}] ({check.evidence}) {check.claim}")
        return 0
    checks = select_by_id(parser, checks, args.only, "check")

    profile = THOROUGH if args.thorough else DEFAULT
    if args.seed is not None:
        profile = profile.with_seed(args.seed)
    start = time.perf_counter()
    results = run_checks(checks, profile)
    print(render_table(results))
    print(f"profile {profile.name}: {time.perf_counter() - start:.1f} s wall time")
    if args.json:
        write_json(results, profile, args.json)
        print(f"wrote {args.json}")
    if args.plots:
        import matplotlib

        matplotlib.use("Agg")
        report = write_report(results, all_figures(), profile, args.plots)
        print(f"wrote {report} and its figures")
    return 0 if all(r.outcome.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
