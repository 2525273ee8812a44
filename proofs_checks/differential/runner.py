"""Drive ``check_case`` over Hypothesis-drawn problems; used by the CLI and by the tests."""

from __future__ import annotations

import math
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import HealthCheck, Phase, given, settings, target
from hypothesis import seed as hypothesis_seed

from proofs_checks.differential.check import CaseResult, HarnessError, check_case
from proofs_checks.differential.strategies import Problem, problems

__all__ = ["RunSummary", "run"]


@dataclass
class RunSummary:
    """What a run saw: counts, the worst passing case, the (shrunk) failing case if any."""

    op: str
    examples: int = 0
    skipped: int = 0
    worst: CaseResult | None = None
    failure: CaseResult | None = None
    crash: str | None = None
    crash_problem: Problem | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.failure is None and self.crash is None

    def report(self) -> str:
        lines = [f"op {self.op}: {self.examples} cases checked, {self.skipped} skipped "
                 f"(spec overflow or ill-conditioned)"]
        if self.crash is not None:
            lines.append("FAIL: the callable raised on a drawn case")
            if self.crash_problem is not None:
                lines.append(f"case: {self.crash_problem!r}")
                lines.extend(self.crash_problem.repro().splitlines())
            lines.append(self.crash)
        elif self.failure is not None:
            name, ratio = self.failure.worst()
            lines.append(f"FAIL: {name} is {ratio:.3g} x its budget on the (shrunk) worst failing case")
            lines.append(self.failure.report())
        else:
            lines.append("PASS: every drawn case within budget")
            if self.worst is not None:
                name, ratio = self.worst.worst()
                lines.append(f"worst case ({name}, error/budget {ratio:.3g}):")
                lines.append(self.worst.report())
        return "\n".join(lines)


class _DisagreementError(AssertionError):
    def __init__(self, result: CaseResult) -> None:
        super().__init__(result.report())
        self.result = result


class _CrashError(AssertionError):
    def __init__(self, problem: Problem, text: str) -> None:
        super().__init__(text)
        self.problem, self.text = problem, text


def run(fn: Callable[..., object], op: str, *, examples: int = 50, seed: int = 0,
        dtypes: tuple[str, ...] = ("float64", "float32"), grads: bool = True, max_t: int = 40,
        long_t: int = 300, shrink: bool = True) -> RunSummary:
    """Check ``fn`` against the spec on ``examples`` drawn problems of ``op``; never raises for a disagreement."""
    summary = RunSummary(op)
    phases = [Phase.explicit, Phase.generate, Phase.target] + ([Phase.shrink] if shrink else [])

    @hypothesis_seed(seed)
    @settings(max_examples=examples, deadline=None, database=None, phases=phases, print_blob=False,
              suppress_health_check=list(HealthCheck))
    @given(problem=problems(op, dtypes=dtypes, max_t=max_t, long_t=long_t))
    def inner(problem: Problem) -> None:
        try:
            result = check_case(fn, problem, grads=grads)
        except HarnessError:
            raise
        except Exception as error:  # the callable under test raised: that is a finding, with its reproducer
            raise _CrashError(problem, "".join(traceback.format_exception(error))) from error
        summary.examples += 1
        if result.skipped:
            summary.skipped += 1
            return
        _, ratio = result.worst()
        target(ratio if math.isfinite(ratio) else 1e300, label="error/budget")
        if not result.passed:
            raise _DisagreementError(result)
        if summary.worst is None or ratio > summary.worst.worst()[1]:
            summary.worst = result

    try:
        inner()
    except _DisagreementError as failure:
        summary.failure = failure.result
    except _CrashError as crash:
        summary.crash, summary.crash_problem = crash.text, crash.problem
    return summary
