"""The equation index: every spec function, its equation id, provenance and equation, read from the docstrings.

Each public spec function's docstring starts with ``<ID> [<tag>]...: <equation>`` (for example
``DF.3 [derived]: U = (I + diag(beta) P)^{-1} V``), so the index cannot drift from the code. Print it with
``python -m spec.index`` (markdown table; ``--check`` exits 1 if a public function lacks a valid first line).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import re
import sys
from dataclasses import dataclass

import spec

__all__ = ["PROVENANCE_TAGS", "IndexEntry", "equation_index", "main", "unindexed_functions"]

PROVENANCE_TAGS = ("paper", "code", "reconstructed", "derived", "literature")
"""The provenance tags of ``../shared/paper/equations.md``."""

_FIRST_LINE = re.compile(r"^(?P<id>[A-Z]+\.\d+[a-z]?) (?P<tags>(?:\[[a-z]+\])+): (?P<equation>.+)$")
_SKIP = {"spec.index", "spec.precision"}


@dataclass(frozen=True)
class IndexEntry:
    """One row of the index: equation id, provenance tags, the equation, and the function that encodes it."""

    id: str
    tags: tuple[str, ...]
    equation: str
    function: str


def _public_functions() -> list[tuple[str, object]]:
    found: list[tuple[str, object]] = []
    for info in sorted(pkgutil.iter_modules(spec.__path__), key=lambda m: m.name):
        name = f"spec.{info.name}"
        if info.name.startswith("_") or name in _SKIP:
            continue
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", ()):
            obj = getattr(module, attr)
            if inspect.isfunction(obj):
                found.append((f"{name}.{attr}", obj))
    return found


def _sort_key(entry: IndexEntry) -> tuple[str, int, str]:
    prefix, _, number = entry.id.partition(".")
    digits = re.match(r"\d+", number)
    return prefix, int(digits.group()) if digits else 0, entry.id


def equation_index() -> list[IndexEntry]:
    """Every public spec function whose docstring starts with a valid index line, sorted by id."""
    entries = []
    for qualified, fn in _public_functions():
        first = (inspect.getdoc(fn) or "").splitlines()[0] if inspect.getdoc(fn) else ""
        match = _FIRST_LINE.match(first)
        if match is None:
            continue
        tags = tuple(re.findall(r"\[([a-z]+)\]", match["tags"]))
        if any(tag not in PROVENANCE_TAGS for tag in tags):
            continue
        entries.append(IndexEntry(match["id"], tags, match["equation"], qualified))
    return sorted(entries, key=_sort_key)


def unindexed_functions() -> list[str]:
    """Public spec functions without a valid ``<ID> [<tag>]: <equation>`` first line (should be none)."""
    indexed = {entry.function for entry in equation_index()}
    helpers = {"spec.deltaformer.default_scale"}
    return [name for name, _ in _public_functions() if name not in indexed and name not in helpers]


def markdown_table(entries: list[IndexEntry]) -> str:
    """The index as a markdown table."""
    lines = ["| id | provenance | equation | spec function |", "|---|---|---|---|"]
    for e in entries:
        equation = e.equation.replace("|", "\\|")
        lines.append(f"| {e.id} | {' '.join(f'[{t}]' for t in e.tags)} | {equation} | `{e.function}` |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m spec.index [--check]``: print the equation index; with --check, fail on unindexed functions."""
    parser = argparse.ArgumentParser(prog="python -m spec.index", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a public spec function is not indexed")
    args = parser.parse_args(argv)
    print(markdown_table(equation_index()))
    missing = unindexed_functions()
    if args.check and missing:
        print("\nnot indexed (docstring must start with '<ID> [<tag>]: <equation>'):", *missing, sep="\n  ",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
