"""``--certified``: how far the harness's own reference can be from the exact result, certified.

The harness judges a kernel against the float64 spec (``bridge.run_spec``) as if it were exact. This module bounds
that reference's error without an error model: it runs the spec again on the case's inputs as ``mpmath.iv``
intervals (``spec.precision.to_interval``; the float64 inputs are exact points) at ``CERTIFIED_DPS`` digits, which
gives, for every output entry, an interval [a, b] that contains the exact real result. Then

- the certified radius, max (b - a) / 2 over the entries, is the oracle's own error bound, and
- the reference error, ||e||_F / ||reference||_F with e = max(|reference - a|, |reference - b|) per entry, is a
  certified upper bound on the float64 reference's normwise relative error, measured as the harness measures a
  kernel's (``tolerances.normwise_error``).

Default scales are the exact ones (1/sqrt(K) as an enclosure), so the float64 rounding of a scale counts as
reference error. Each (sequence, head) runs the spec function of its op's record (``ops``), as ``bridge`` does in
float64.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import mpmath
import numpy as np

from proofs_checks.differential.bridge import heads, run_spec
from proofs_checks.differential.ops import record
from proofs_checks.differential.strategies import Problem
from spec import precision
from spec._types import F64, Array

__all__ = ["CERTIFIED_DPS", "CertifiedReference", "certify", "report"]

CERTIFIED_DPS = 30
"""Digits of the interval oracle: its enclosures are ~1e-28 wide, far below any float64 reference error."""


@dataclass(frozen=True)
class CertifiedReference:
    """One output of one case: the oracle's radius and the certified bound on the float64 reference's error."""

    output: str
    radius: float
    reference_error: float


def _enclosures(problem: Problem, arrays: dict[str, F64]) -> dict[str, Array]:
    """The interval spec over every (sequence, head), in the impl layout (object arrays of intervals): each head
    runs its op's spec function (``ops``) on interval inputs, as ``bridge`` runs it in float64."""
    op_record = record(problem.op)
    outputs = {"o": np.empty((problem.B, problem.T, problem.H, problem.V), dtype=object)}
    if op_record.stateful:
        outputs["final_state"] = np.empty((len(problem.sequence_lengths()), problem.H, problem.K, problem.V),
                                          dtype=object)
    for head in heads(arrays, op_record.inputs, problem.cu_seqlens):
        x = {name: precision.to_interval(value) for name, value in head.inputs.items()}
        S0 = None if head.state is None else precision.to_interval(head.state)
        o, S = op_record.spec(x, S0, **problem.options())
        outputs["o"][head.b, head.rows, head.h] = o
        if S is not None:
            outputs["final_state"][head.n, head.h] = S
    return outputs


def _upper(value: Any) -> float:
    return float(mpmath.mpf(value.b))


def certify(problem: Problem, dps: int = CERTIFIED_DPS) -> list[CertifiedReference]:
    """The certified radius and reference error of every output of ``problem`` (one line each)."""
    arrays = problem.arrays()
    reference = run_spec(problem.op, arrays, problem.cu_seqlens, **problem.options())
    with precision.workdps(dps):
        enclosures = _enclosures(problem, arrays)
        results = []
        for name, exact in enclosures.items():
            ref = reference[name]
            radius = max((_upper(x.delta) / 2 for x in exact.flat), default=0.0)
            errors = np.array([_upper(abs(float(r) - x)) for r, x in zip(ref.flat, exact.flat, strict=True)])
            norm = float(np.linalg.norm(ref))
            bound = float(np.linalg.norm(errors)) / norm if norm > 0 else (0.0 if not errors.any() else math.inf)
            results.append(CertifiedReference(name, radius, bound))
    return results


def report(cases: Sequence[tuple[str, Problem, dict[str, float]]]) -> str:
    """Lines for the CLI: for each (label, problem, budgets by output) the certified radius and reference error,
    and the reference error as a fraction of the kernel's budget."""
    lines = [f"certified reference (the spec on mpmath.iv intervals, {CERTIFIED_DPS} digits):"]
    for label, problem, budgets in cases:
        start = time.perf_counter()
        results = certify(problem)
        lines.append(f"  {label} case ({problem.op}, T = {problem.T}, {time.perf_counter() - start:.1f} s):")
        for r in results:
            budget = budgets.get(r.output)
            share = f", {r.reference_error / budget:.1e} of the kernel's budget" if budget else ""
            lines.append(f"    {r.output:>12}: enclosure radius <= {r.radius:.1e}; float64 reference error <= "
                         f"{r.reference_error:.1e} (normwise relative, certified){share}")
    if len(lines) == 1:
        lines.append("  no case to certify")
    return "\n".join(lines)
