"""Search for disagreements: ``check_case`` over the pinned and drawn problems, then shrink each distinct failure
and report them all with a coverage summary. Used by the CLI and by the tests.

Two passes. The search pass runs every pinned case (``strategies.explicit_problems``) and ``examples`` drawn ones
(``strategies.sample_problems`` from the seed); a disagreement or a raising kernel is recorded, never raised, so the
count of checked cases is exact and the run continues past the first failure. Failures are grouped by kind
(``CaseResult.failure_kind``; for a raising kernel, the exception type and where it was raised), the first case of
each kind is kept, and the shrink pass (``shrink``) reduces each to the simplest case that fails the same way.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from proofs_checks.differential.compare import CaseResult, HarnessError, check_case
from proofs_checks.differential.isolate import Raised, Worker, load_target, raised
from proofs_checks.differential.ops import record
from proofs_checks.differential.shrink import shrink_problem
from proofs_checks.differential.strategies import EVERYTHING, Capabilities, Problem, explicit_problems, sample_problems
from proofs_checks.differential.tolerances import DEFAULT_PRECISION, Precision

__all__ = ["Coverage", "Failure", "RunSummary", "run"]

MAX_SHRUNK = 6
"""Distinct failures shrunk per run (the rest are reported unshrunk)."""


@dataclass
class Coverage:
    """What the checked cases (not the skipped or unsupported ones) contained."""

    cases: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    shortest: int = 0
    longest: int = 0

    def add(self, problem: Problem, result: CaseResult) -> None:
        self.cases += 1
        lengths = problem.sequence_lengths()
        self.shortest = min(self.shortest or problem.T, *lengths)
        self.longest = max(self.longest, *lengths)
        C = problem.chunk_size
        features = {
            f"dtype {problem.dtype}": True,
            "several chunks": any(n > C for n in lengths),
            "chunk_size not dividing T (after full chunks)": any(n > C and n % C for n in lengths),
            "T < chunk_size": any(n < C for n in lengths),
            "T = 1": 1 in lengths,
            "varlen with a length-1 segment": problem.cu_seqlens is not None and 1 in lengths,
            "varlen without length-1 segments": problem.cu_seqlens is not None and 1 not in lengths,
            "initial state": problem.with_state,
            f"values {problem.values}": True,
            "gradients compared": "gradients" in result.checks,
            "low-precision consistency compared": "consistency" in result.checks,
        }
        options = record(problem.op).options
        if "kernel" in options:
            features[f"kernel {problem.kernel}"] = True
        if "write" in options:
            features[f"write {problem.write}"] = True
        if "beta" in record(problem.op).inputs:
            features[f"beta {problem.beta_regime}"] = True
        self.counts.update(name for name, present in features.items() if present)

    def lines(self) -> list[str]:
        if not self.cases:
            return ["coverage: no case was compared"]
        out = [f"coverage of the {self.cases} compared cases (T from {self.shortest} to {self.longest}):"]
        out.extend(f"  {name}: {count}" for name, count in sorted(self.counts.items()))
        return out

    def to_json(self) -> dict[str, Any]:
        return {"cases": self.cases, "shortest_T": self.shortest, "longest_T": self.longest,
                "counts": dict(sorted(self.counts.items()))}


@dataclass
class Failure:
    """One distinct failure: its kind, how many searched cases failed that way, and the (shrunk) case."""

    kind: str
    count: int
    problem: Problem
    result: CaseResult | None
    raised: Raised | None
    shrink_checks: int = 0

    def report(self, target: str | None) -> str:
        if self.raised is not None:
            lines = [f"case: {self.problem!r}", "reproducer:"]
            lines.extend("  " + line for line in self.problem.repro(target).splitlines())
            tail = self.raised.text.rstrip().splitlines()[-12:]
            return "\n".join([*lines, "what the kernel raised (last lines):", *("  " + t for t in tail)])
        assert self.result is not None
        return self.result.report(target)

    def to_json(self, target: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "count": self.count, "problem": repr(self.problem),
                               "shrink_checks": self.shrink_checks, "reproducer": self.problem.repro(target)}
        if self.result is not None:
            out["errors"] = self.result.errors
            out["budgets"] = self.result.budgets
            out["notes"] = self.result.notes
        if self.raised is not None:
            out["raised"] = self.raised.text
        return out


@dataclass
class RunSummary:
    """What a run saw: counts, skips, coverage, the worst passing case and every distinct failure."""

    op: str
    target: str | None = None
    pinned: int = 0
    drawn: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    unsupported: Counter[str] = field(default_factory=Counter)
    not_checked: list[str] = field(default_factory=list)
    precision: Precision = DEFAULT_PRECISION
    coverage: Coverage = field(default_factory=Coverage)
    worst: CaseResult | None = None
    failures: list[Failure] = field(default_factory=list)
    notes: Counter[str] = field(default_factory=Counter)

    @property
    def checked(self) -> int:
        return self.coverage.cases

    @property
    def passed(self) -> bool:
        return not self.failures and self.checked > 0

    @property
    def failure(self) -> CaseResult | None:
        """The first numerical disagreement's (shrunk) case, if any."""
        return next((f.result for f in self.failures if f.result is not None), None)

    def report(self) -> str:
        total = self.pinned + self.drawn
        lines = [f"op {self.op}: {total} cases ({self.pinned} pinned, {self.drawn} drawn): {self.checked} compared, "
                 f"{sum(self.skipped.values())} skipped, {sum(self.unsupported.values())} unsupported"]
        lines.append(f"precision policy: {self.precision.describe()}")
        if self.not_checked:
            lines.append(f"not checked (declared unsupported): {'; '.join(self.not_checked)}")
        lines.extend(f"  skipped ({count}): {reason}" for reason, count in self.skipped.most_common())
        lines.extend(f"  unsupported ({count}): {reason}" for reason, count in self.unsupported.most_common())
        lines.extend(f"  note ({count} cases): {note}" for note, count in self.notes.most_common())
        lines.extend(self.coverage.lines())
        if self.failures:
            lines.append(f"FAIL: {len(self.failures)} distinct failure{'s' if len(self.failures) > 1 else ''}")
            for i, failure in enumerate(self.failures, 1):
                shrunk = f", shrunk in {failure.shrink_checks} checks" if failure.shrink_checks else ""
                lines.append(f"--- failure {i}/{len(self.failures)}: {failure.kind} "
                             f"({failure.count} of the searched cases{shrunk})")
                lines.append(failure.report(self.target))
        elif not self.checked:
            lines.append("FAIL: no case was compared (every case skipped or unsupported)")
        else:
            lines.append("PASS: every compared case within budget")
            if self.worst is not None:
                name, ratio = self.worst.worst()
                lines.append(f"worst case ({name}, error/budget {ratio:.3g}):")
                lines.append(self.worst.report(self.target))
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "target": self.target, "passed": self.passed, "pinned": self.pinned,
                "drawn": self.drawn, "compared": self.checked, "skipped": dict(self.skipped),
                "unsupported": dict(self.unsupported), "not_checked": self.not_checked,
                "precision": repr(self.precision), "notes": dict(self.notes), "coverage": self.coverage.to_json(),
                "worst": None if self.worst is None else {"problem": repr(self.worst.problem),
                                                          "worst": list(self.worst.worst())},
                "failures": [f.to_json(self.target) for f in self.failures]}


def _message_key(text: str) -> str:
    """The last line of an exception's text with its numbers replaced by #, for counting."""
    return re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "#", text.strip().splitlines()[-1])[:160]


def _note_key(note: str) -> str:
    """A note without its case-specific numbers, for counting."""
    return note.split(" (", maxsplit=1)[0]


def run(fn: Callable[..., object] | str, op: str, *, examples: int = 50, seed: int = 0,
        dtypes: tuple[str, ...] = ("float64", "float32"), grads: bool = True, max_t: int = 40, long_t: int = 300,
        shrink: bool = True, capabilities: Capabilities = EVERYTHING, precision: Precision = DEFAULT_PRECISION,
        isolate: bool = False, pinned: bool = True, target_name: str | None = None,
        fail_fast: bool = False) -> RunSummary:
    """Check ``fn`` (a callable or a ``module:function`` string) against the spec on the pinned (``pinned``) and
    ``examples`` drawn problems of ``op``, then shrink each distinct failure (``shrink``); never raises for a
    disagreement or a raising kernel (HarnessError, the harness's own fault, propagates). ``isolate``: each case in
    a child process (``isolate``). ``target_name``: the ``module:function`` the reproducers import. ``fail_fast``:
    stop the search at the first failing case (still shrunk and reported)."""
    record(op)
    name = fn if isinstance(fn, str) else target_name
    worker = Worker(fn) if isolate else None
    kernel = (load_target(fn) if isinstance(fn, str) else fn) if worker is None else None
    summary = RunSummary(op, target=name, precision=precision, not_checked=capabilities.not_checked(op))
    found: dict[str, Failure] = {}

    def evaluate(problem: Problem, with_grads: bool) -> CaseResult | Raised:
        if worker is not None:
            return worker.check(problem, grads=with_grads, precision=precision)
        assert kernel is not None
        try:
            return check_case(kernel, problem, grads=with_grads, precision=precision)
        except HarnessError:
            raise
        except Exception as error:
            return raised(error)

    def kind_of(outcome: CaseResult | Raised) -> str | None:
        if isinstance(outcome, Raised):
            if outcome.not_implemented and capabilities.skip_unsupported:
                return None
            return f"raised {outcome.origin}"
        return outcome.failure_kind()

    def visit(problem: Problem, *, explicit: bool) -> None:
        outcome = evaluate(problem, grads)
        if explicit:
            summary.pinned += 1
        else:
            summary.drawn += 1
        kind = kind_of(outcome)
        if isinstance(outcome, Raised) and kind is None:
            summary.unsupported[_message_key(outcome.text)] += 1
            return
        if isinstance(outcome, CaseResult):
            if outcome.skipped:
                summary.skipped[outcome.skipped.split(": measured")[0]] += 1
                return
            summary.coverage.add(problem, outcome)
            summary.notes.update(_note_key(note) for note in outcome.notes)
        if kind is not None:
            if kind in found:
                found[kind].count += 1
            else:
                result = outcome if isinstance(outcome, CaseResult) else None
                found[kind] = Failure(kind, 1, problem, result, outcome if isinstance(outcome, Raised) else None)
            return
        assert isinstance(outcome, CaseResult)
        if summary.worst is None or outcome.worst()[1] > summary.worst.worst()[1]:
            summary.worst = outcome

    explicit = explicit_problems(op, dtypes=dtypes, capabilities=capabilities) if pinned else []
    drawn = sample_problems(op, examples, seed=seed, dtypes=dtypes, max_t=max_t, long_t=long_t,
                            capabilities=capabilities)
    try:
        for problem, is_pinned in [(p, True) for p in explicit] + [(p, False) for p in drawn]:
            visit(problem, explicit=is_pinned)
            if fail_fast and found:
                break
        for failure in list(found.values())[:MAX_SHRUNK] if shrink else ():
            with_grads = grads and (failure.result is None or failure.kind.startswith("gradients"))

            def fails(candidate: Problem, kind: str = failure.kind, with_grads: bool = with_grads) -> bool:
                return kind_of(evaluate(candidate, with_grads)) == kind

            smallest, checks = shrink_problem(failure.problem, fails, dtypes=dtypes, capabilities=capabilities)
            failure.shrink_checks = checks
            if smallest != failure.problem:
                failure.problem = smallest
                outcome = evaluate(smallest, grads)
                failure.result = outcome if isinstance(outcome, CaseResult) else None
                failure.raised = outcome if isinstance(outcome, Raised) else None
    finally:
        if worker is not None:
            worker.close()
    summary.failures = list(found.values())
    return summary
