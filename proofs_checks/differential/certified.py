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
reference error. Each (sequence, head) runs the spec function of its op, as ``bridge`` does in float64.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import mpmath
import numpy as np

from proofs_checks.differential.bridge import run_spec, sequence_ranges
from proofs_checks.differential.strategies import Problem
from spec import deltaformer as spec_df
from spec import precision
from spec import updates as spec_updates
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


def _read_scale(problem: Problem, like: Array) -> Any:
    """The read-out / query scale: the problem's (a float64 number, exact) or an enclosure of 1/sqrt(K)."""
    if problem.scale is None:
        return spec_df.default_scale("softmax", problem.K, like)
    return precision.scalar(problem.scale, like)


def _head(problem: Problem, x: dict[str, Array], S0: Array | None) -> tuple[Array, Array | None]:
    """The spec of ``problem.op`` on one head's interval inputs: (o [T, V], final state [K, V] or None)."""
    op, v = problem.op, x["v"]
    if op == "deltaformer_u":
        return spec_df.deltaformer_u(x["w"], x["k"], v, x["beta"], kernel=problem.kernel, scale=problem.scale), None
    if op == "deltaformer_attn":
        return spec_df.deltaformer_attn(x["q"], x["k"], v, x["beta"], write=problem.write, kernel=problem.kernel,
                                        scale=problem.scale), None
    scale = _read_scale(problem, v)
    if op == "softmax_attn":
        return spec_df.causal_softmax_readout(x["q"], x["k"], v, scale), None
    initial = precision.zeros((problem.V, problem.K), v) if S0 is None else S0.T
    if op == "delta_rule":
        o, S = spec_updates.deltanet_recurrent(scale * x["q"], x["k"], v, x["beta"], initial)
    else:
        o, S = spec_updates.linear_attention_recurrent(scale * x["q"], x["k"], v, initial)
    return o, S.T


def _enclosures(problem: Problem, arrays: dict[str, F64]) -> dict[str, Array]:
    """The interval spec over every (sequence, head), in the impl layout (object arrays of intervals)."""
    names = [name for name in problem.input_names if name != "initial_state"]
    B, T, H = problem.B, problem.T, problem.H
    outputs = {"o": np.empty((B, T, H, problem.V), dtype=object)}
    ranges = sequence_ranges(T, B, problem.cu_seqlens)
    if problem.op in ("delta_rule", "linear_attn"):
        outputs["final_state"] = np.empty((len(ranges), H, problem.K, problem.V), dtype=object)
    initial = arrays.get("initial_state")
    for n, b, start, end in ranges:
        for h in range(H):
            x = {name: precision.to_interval(arrays[name][b, start:end, h]) for name in names}
            S0 = None if initial is None else precision.to_interval(initial[n, h])
            o, S = _head(problem, x, S0)
            outputs["o"][b, start:end, h] = o
            if S is not None:
                outputs["final_state"][n, h] = S
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
