"""What a proof is: a statement, the claim check it backs, its method and scope, and a function that decides it.

A ``Proof`` carries two callables. ``run`` proves the statement and returns a ``ProofResult``; ``twin`` runs the
same argument on a deliberately perturbed statement (a dropped factor, a shifted step size, an off-by-one
dimension) and must report ``passed=False`` with the residual or the counterexample in ``detail``, which shows
the argument can fail. Proof modules build both with ``declare`` from functions that return a ``Verdict``.

``method``: ``symbolic`` (sympy: an identity simplified to 0, an induction's base case and step), ``interval``
(mpmath.iv: a rigorous enclosure), ``exact`` (rational or integer arithmetic). ``scope`` starts with ``all`` when
the statement holds for every size (T, chunk partition, m, p, ...): by an induction whose base case and step are
both checked symbolically, or as an identity in symbolic parameters; otherwise it names the finite range checked.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["Method", "Proof", "ProofResult", "Step", "Verdict", "conclude", "declare"]

Method = Literal["symbolic", "interval", "exact"]


@dataclass(frozen=True)
class ProofResult:
    """The outcome of one proof (or of its twin), with its wall time in seconds."""

    id: str
    statement: str
    claim: str
    method: Method
    scope: str
    passed: bool
    detail: str
    seconds: float

    def to_json(self) -> dict[str, object]:
        """``{id, statement, claim, method, scope, passed, detail, seconds}``, JSON-ready."""
        return {"id": self.id, "statement": self.statement, "claim": self.claim, "method": self.method,
                "scope": self.scope, "passed": self.passed, "detail": self.detail,
                "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class Proof:
    """A statement backing claim check ``claim`` (C1..C12, C8c, ...), proved by ``run``; ``twin`` must fail."""

    id: str
    statement: str
    claim: str
    method: Method
    scope: str
    run: Callable[[], ProofResult]
    twin: Callable[[], ProofResult]


@dataclass(frozen=True)
class Step:
    """One checked step of an argument: what it shows, whether it holds, and the evidence (residual, value)."""

    label: str
    holds: bool
    evidence: str


@dataclass(frozen=True)
class Verdict:
    """What a proof body returns: passed only if every step holds; ``detail`` lists the steps."""

    passed: bool
    detail: str


def conclude(steps: Sequence[Step], preamble: str = "") -> Verdict:
    """A verdict from steps: passed iff there is at least one step and all hold; failing steps are listed first."""
    failing = [s for s in steps if not s.holds]
    lines = [f"FAILS {s.label}: {s.evidence}" for s in failing]
    lines += [f"{s.label}: {s.evidence}" for s in steps if s.holds]
    text = "; ".join(lines)
    return Verdict(passed=bool(steps) and not failing, detail=f"{preamble} {text}".strip())


def _timed(body: Callable[[], Verdict]) -> tuple[Verdict, float]:
    start = time.perf_counter()
    try:
        verdict = body()
    except Exception as error:  # a crashing proof is a failing proof, reported with its cause
        verdict = Verdict(passed=False, detail=f"raised {traceback.format_exception_only(error)[-1].strip()}")
    return verdict, time.perf_counter() - start


def declare(id: str, statement: str, claim: str, method: Method, scope: str, body: Callable[[], Verdict],
            twin_statement: str, twin_body: Callable[[], Verdict]) -> Proof:
    """A ``Proof`` whose ``run`` times ``body`` and whose ``twin`` times ``twin_body`` (id ``<id>/twin``)."""

    def run() -> ProofResult:
        verdict, seconds = _timed(body)
        return ProofResult(id, statement, claim, method, scope, verdict.passed, verdict.detail, seconds)

    def twin() -> ProofResult:
        verdict, seconds = _timed(twin_body)
        return ProofResult(f"{id}/twin", twin_statement, claim, method, scope, verdict.passed, verdict.detail,
                           seconds)

    return Proof(id, statement, claim, method, scope, run, twin)
