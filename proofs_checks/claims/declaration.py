"""What a check is: a claim, its provenance, its kind of evidence, the spec functions it exercises, and a
measurement against a bound.

A check decides from numbers. ``run(profile)`` returns an ``Outcome`` holding the measured value, the bound it was
compared with, the verdict, and one line of detail (sample size, confidence interval, fitted slope). Checks never
set mpmath's precision globally: they use ``spec.precision.workdps(profile.dps)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

__all__ = ["DEFAULT", "EVIDENCE_KINDS", "THOROUGH", "Check", "Evidence", "Figure", "Outcome", "Profile"]

Evidence = Literal["proved", "enclosed", "exact", "measured"]
"""How strongly a check's claim is established, strongest first:

- ``proved``: a machine-checked proof for every size backs the claim (``proofs_checks.proofs``, a proof with this
  claim id whose scope starts with ``all``); the check itself still runs its instances.
- ``enclosed``: certified by interval arithmetic on the checked instances (the spec on ``mpmath.iv`` intervals):
  every rounding error is inside the enclosures, no error model is assumed.
- ``exact``: decided in exact (integer or rational) arithmetic on the checked instances.
- ``measured``: Monte Carlo estimates within confidence intervals, or fitted slopes, on the checked instances.
"""
EVIDENCE_KINDS: tuple[Evidence, ...] = get_args(Evidence)


@dataclass(frozen=True)
class Profile:
    """How hard the checks work. ``samples`` multiplies Monte Carlo sample counts and sweep sizes."""

    name: str
    dps: int
    samples: int
    seed: int

    def with_seed(self, seed: int) -> Profile:
        """The same profile with another base seed."""
        return Profile(self.name, self.dps, self.samples, seed)


DEFAULT = Profile(name="default", dps=50, samples=1, seed=20250526)
"""The default profile: 50 digits, base sample sizes (the whole run takes under 2 minutes)."""
THOROUGH = Profile(name="thorough", dps=100, samples=8, seed=20250526)
"""``--thorough``: 100 digits, eight times the samples."""


@dataclass(frozen=True)
class Outcome:
    """The result of one check: ``measured`` against ``bound``, the verdict, and one line of detail."""

    measured: float
    bound: float
    passed: bool
    detail: str = ""


@dataclass(frozen=True)
class Check:
    """One claim of the paper (``id`` = its number in equations.md section 6, e.g. "C6"), checked by ``run``."""

    id: str
    claim: str
    provenance: str
    evidence: Evidence
    spec_functions: tuple[str, ...]
    run: Callable[[Profile], Outcome]


@dataclass(frozen=True)
class Figure:
    """A plot for the report: ``render(profile, path)`` writes a PNG to ``path``."""

    filename: str
    caption: str
    render: Callable[[Profile, Path], None]
