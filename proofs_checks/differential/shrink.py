"""Greedy shrinking of a failing ``Problem`` toward the simplest case that fails the same way.

``search`` finds failures with Hypothesis (generation only, so the count of checked cases is exact and every distinct
failure is kept) and shrinks each here: candidates are simpler in one field at a time, tried simplest first (fewer
packed sequences, shorter sequences, smaller batch, heads, head sizes and chunks, the first declared dtype, kernel
and write, beta in (0, 1], "random" values, the default scale, no initial state); the first candidate that still
fails the same way is kept, and the search restarts from it until no candidate fails or the budget of checks is
spent. Every candidate lowers one field's rank and none raises another's, so it terminates.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator

from proofs_checks.differential.ops import record
from proofs_checks.differential.strategies import (
    HEAD_SIZES,
    LONG_CHUNKS,
    SHORT_CHUNKS,
    VALUE_SIZES,
    Capabilities,
    Problem,
)

__all__ = ["candidates", "shrink_problem"]


def _lengths_below(n: int, chunk: int) -> list[int]:
    """Sequence lengths below n, shortest first: 1..8, those around one and two chunks (where chunk bugs live), and
    n minus 1/2, 1/4, 1/8, 1/16 of it and minus 1 (so a failure that needs a long sequence still shrinks fast)."""
    wanted = {*range(1, 9), chunk - 1, chunk, chunk + 1, 2 * chunk - 1, 2 * chunk + 1,
              *(n - n // d for d in (2, 4, 8, 16)), n - 1}
    return sorted(t for t in wanted if 1 <= t < n)


def _normalised(problem: Problem, capabilities: Capabilities) -> Problem:
    """Keep a candidate valid: the round kernel's scale follows K, a regime the kernel lacks becomes "random"."""
    op_record = record(problem.op)
    changes: dict[str, object] = {}
    if problem.values not in op_record.value_regimes(problem.kernel):
        changes.update(values="random", gap=0.0)
    scales = op_record.scales(problem.kernel, problem.K, 1)
    if problem.scale not in scales and (problem.kernel == "round" or None not in scales):
        changes["scale"] = scales[0]
    if problem.beta_regime not in (op_record.beta_regimes(problem.kernel) or ("unit",)):
        changes["beta_regime"] = "unit"
    return dataclasses.replace(problem, **changes) if changes else problem  # type: ignore[arg-type]


def candidates(problem: Problem, *, dtypes: tuple[str, ...], capabilities: Capabilities) -> Iterator[Problem]:
    """Problems simpler than ``problem`` in one field each, simplest first (see the module docstring)."""
    p = problem
    replace = dataclasses.replace
    cu = p.cu_seqlens
    if cu is not None:
        lengths = [b - a for a, b in itertools.pairwise(cu)]
        yield replace(p, cu_seqlens=None)
        for i in range(len(lengths)):  # drop one sequence
            rest = lengths[:i] + lengths[i + 1:]
            if len(rest) >= 2:
                yield replace(p, T=sum(rest), cu_seqlens=_bounds(rest))
        for i in range(len(lengths) - 1):  # merge two neighbours
            yield replace(p, cu_seqlens=cu[:i + 1] + cu[i + 2:])
        for i, n in enumerate(lengths):  # shorten one sequence
            for shorter in _lengths_below(n, p.chunk_size):
                changed = [*lengths[:i], shorter, *lengths[i + 1:]]
                yield replace(p, T=sum(changed), cu_seqlens=_bounds(changed))
    else:
        for shorter in _lengths_below(p.T, p.chunk_size):
            yield replace(p, T=shorter)
        if p.B > 1:
            yield replace(p, B=1)
    for H in range(1, p.H):
        yield replace(p, H=H)
    sizes = sorted(set(capabilities.head_sizes or HEAD_SIZES + VALUE_SIZES))
    for K in (k for k in sizes if k < p.K):
        yield replace(p, K=K, V=K) if capabilities.same_head_size else replace(p, K=K)
    for V in (v for v in sizes if v < p.V and not capabilities.same_head_size):
        yield replace(p, V=V)
    for chunk in sorted(c for c in (capabilities.chunk_sizes or SHORT_CHUNKS + LONG_CHUNKS) if c < p.chunk_size):
        yield replace(p, chunk_size=chunk)
    for dtype in dtypes[:dtypes.index(p.dtype)] if p.dtype in dtypes else ():
        yield replace(p, dtype=dtype)
    options = record(p.op).options
    if "kernel" in options and p.kernel in capabilities.kernels:
        for kernel in capabilities.kernels[:capabilities.kernels.index(p.kernel)]:
            yield replace(p, kernel=kernel)
    if "write" in options and p.write in capabilities.writes:
        for write in capabilities.writes[:capabilities.writes.index(p.write)]:
            yield replace(p, write=write)
    if p.beta_regime != "unit":
        yield replace(p, beta_regime="unit")
    if p.values != "random":
        yield replace(p, values="random", gap=0.0)
    if p.values == "gap":
        for gap in (20.0, 60.0, 120.0):
            if gap < p.gap:
                yield replace(p, gap=gap)
    if p.scale is not None:
        yield replace(p, scale=None)
    if p.with_state:
        yield replace(p, with_state=False)


def _bounds(lengths: list[int]) -> tuple[int, ...]:
    return (0, *itertools.accumulate(lengths))


def shrink_problem(problem: Problem, fails: Callable[[Problem], bool], *, dtypes: tuple[str, ...],
           capabilities: Capabilities, budget: int = 100) -> tuple[Problem, int]:
    """(the simplest failing problem found, the number of candidates checked); ``fails`` must be True for
    ``problem``."""
    checked = 0
    passed: set[Problem] = set()  # candidates already seen not to fail (not checked twice)
    improved = True
    while improved and checked < budget:
        improved = False
        for simpler in candidates(problem, dtypes=dtypes, capabilities=capabilities):
            candidate = _normalised(simpler, capabilities)
            if candidate == problem or candidate in passed:
                continue
            if checked >= budget:
                break
            checked += 1
            if fails(candidate):
                problem, improved = candidate, True
                break
            passed.add(candidate)
    return problem, checked
