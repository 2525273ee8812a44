"""``python -m proofs_checks.proofs``: run the machine-checked proofs; exit 1 if any fails.

Options: --list, --only ID..., --json PATH, --details (print every proof's steps).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from proofs_checks._cli import select_by_id
from proofs_checks.proofs.registry import all_proofs
from proofs_checks.proofs.run import render_table, run_proofs, write_json


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the selected proofs, print the table; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m proofs_checks.proofs", description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="list the proofs and exit")
    parser.add_argument("--only", nargs="+", metavar="ID", help="run only these proof ids (e.g. DF.6)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write machine-readable results here")
    parser.add_argument("--details", action="store_true", help="print every proof's steps, not only failures'")
    args = parser.parse_args(argv)

    proofs = all_proofs()
    if args.list:
        for proof in proofs:
            print(f"{proof.id:<22} {proof.claim:<5} {proof.method:<9} {proof.scope}: {proof.statement}")
        return 0
    proofs = select_by_id(parser, proofs, args.only, "proof")

    start = time.perf_counter()
    results = run_proofs(proofs)
    print(render_table(results, details=args.details))
    print(f"{time.perf_counter() - start:.1f} s wall time")
    if args.json:
        write_json(results, args.json)
        print(f"wrote {args.json}")
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
