"""Compare enclosures from the certified oracle (the spec run on ``spec.precision.to_interval`` inputs) rigorously.

Two forms of one quantity, computed in interval arithmetic on the same inputs, return for every entry an interval
that contains the exact real value of that form. If the identity "form x = form y" holds, both intervals of an
entry contain the same number, so:

- disjoint intervals certify that the exact values differ: the identity is false on these inputs (no tolerance);
- overlapping intervals certify |exact_x - exact_y| <= max(b_x - a_y, b_y - a_x), the sup distance, with no error
  model at all (the outward rounding of every operation is inside the intervals).

A check passes when no entry is disjoint and the certified bound, relative to max(1, max |entry|), is at most
``resolution(dps)``. The resolution is a requirement on how much the check must prove, not an error model: an
identity that failed by more than it would show as disjoint intervals and fail anyway. 10^(10 - dps) asks for
40 certified digits at the default 50: the widths of these computations (at most a few hundred operations per
entry, condition numbers below 10^4) stay below 10^(6 - dps) (measured: under 10^(2 - dps)), so the resolution is
met with 4 digits to spare, and a form that lost precision (a float64 value slipping in would make its interval a
float64-sized point or crash the interval code) could not pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mpmath
import numpy as np

from proofs_checks.claims.declaration import Outcome, Profile
from spec._types import Array
from spec.precision import to_interval

__all__ = ["NOTHING", "Agreement", "agreement", "enclosure_outcome", "resolution"]


def resolution(dps: int) -> mpmath.mpf:
    """The relative agreement a check at ``dps`` digits must certify: 10^(10 - dps)."""
    return mpmath.mpf(10) ** (10 - dps)


@dataclass(frozen=True)
class Agreement:
    """What a set of enclosure comparisons certified: disjoint entries, the worst relative bound, the count."""

    disjoint: int
    relative_gap: mpmath.mpf
    entries: int

    def combine(self, other: Agreement) -> Agreement:
        """Both comparisons: disjoint entries add up, the worst bound wins."""
        return Agreement(self.disjoint + other.disjoint, max(self.relative_gap, other.relative_gap),
                         self.entries + other.entries)

    def passes(self, dps: int) -> bool:
        """No entry certified different, and agreement certified to ``resolution(dps)``."""
        return self.disjoint == 0 and self.relative_gap <= resolution(dps)


NOTHING = Agreement(0, mpmath.mpf(0), 0)


def _upper(x: Any) -> mpmath.mpf:
    return mpmath.mpf(x.b)


def agreement(x: Array, y: Array, scale: Array | None = None) -> Agreement:
    """Compare two interval arrays entry by entry (``y`` may hold exact numbers, enclosed as points).

    The gap of each entry is the certified bound on |exact_x - exact_y|; it is divided by max(1, max |x|, max
    |scale|) (``scale`` defaults to ``x``), so entries of a large result are compared relatively.
    """
    xs, ys = list(to_interval(np.asarray(x)).flat), list(to_interval(np.asarray(y)).flat)
    if len(xs) != len(ys):
        raise ValueError(f"agreement needs arrays of one size, got {len(xs)} and {len(ys)} entries")
    magnitude = max((_upper(abs(value)) for value in (xs if scale is None else to_interval(scale).flat)),
                    default=mpmath.mpf(0))
    disjoint, worst = 0, mpmath.mpf(0)
    for a, b in zip(xs, ys, strict=True):
        if (a.b < b.a) is True or (b.b < a.a) is True:
            disjoint += 1
        worst = max(worst, _upper(a.b - b.a), _upper(b.b - a.a))
    return Agreement(disjoint, worst / max(mpmath.mpf(1), magnitude), len(xs))


def enclosure_outcome(found: Agreement, profile: Profile, what: str) -> Outcome:
    """The check's outcome: measured = the worst certified relative bound, against ``resolution(profile.dps)``."""
    return Outcome(measured=float(found.relative_gap), bound=float(resolution(profile.dps)),
                   passed=found.passes(profile.dps),
                   detail=f"{what}; {found.entries} entries compared as {profile.dps}-digit enclosures, "
                          f"{found.disjoint} certified different; measured = certified bound on "
                          f"|difference of the exact values| / max(1, max|entry|)")
