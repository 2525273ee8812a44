"""Run each case in a child process, so a kernel that kills its process (SIGFPE, SIGSEGV, abort) is reported as a
failing case with its reproducer instead of taking the harness down.

One long-lived worker (``multiprocessing`` spawn context: a fresh interpreter, no forked thread pools) imports the
kernel once and checks cases sent over a pipe; when it dies, the case it was running is reported with the signal or
exit code, and the next case starts a new worker. The kernel is sent by reference: a ``module:function`` string or a
picklable callable (a module-level function, or a ``functools.partial`` of one).
"""

from __future__ import annotations

import importlib
import multiprocessing
import signal
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import torch

from proofs_checks.differential.compare import CaseResult, HarnessError, check_case
from proofs_checks.differential.strategies import Problem
from proofs_checks.differential.tolerances import Precision

__all__ = ["Raised", "Worker", "load_target", "origin_of"]


@dataclass
class Raised:
    """The kernel raised (or its process died) on a case: the formatted traceback and where it came from."""

    text: str
    origin: str
    """What tells two crashes apart: the exception type and the innermost frame, or the signal."""
    not_implemented: bool = False


def load_target(target: str) -> Callable[..., object]:
    """Import ``module:function`` (the attribute may be dotted); ValueError / ImportError / AttributeError if not."""
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"expected module:function, got {target!r}")
    obj: object = importlib.import_module(module_name)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{target} is not callable")
    return obj


_NOT_THE_KERNEL = (*(str(Path(module.__file__).parent) for module in (torch, traceback) if module.__file__),
                   str(Path(__file__).parent))
"""Directories whose frames are not the kernel's: torch, the standard library, the harness itself."""


def origin_of(error: BaseException) -> str:
    """The exception type and the innermost frame of the kernel's own code (not torch's, the standard library's or
    the harness's) where it was raised; the innermost frame when there is none."""
    frames = traceback.extract_tb(error.__traceback__)
    own = [f for f in frames if not f.filename.startswith(_NOT_THE_KERNEL)] or frames
    where = f" at {own[-1].filename}:{own[-1].lineno}" if own else ""
    return f"{type(error).__name__}{where}"


def raised(error: BaseException) -> Raised:
    return Raised("".join(traceback.format_exception(error)), origin_of(error),
                  isinstance(error, NotImplementedError))


def _serve(connection: Connection, target: str | Callable[..., object]) -> None:
    fn = load_target(target) if isinstance(target, str) else target
    while True:
        request = connection.recv()
        if request is None:
            return
        problem, grads, precision = request
        try:
            outcome: Any = check_case(fn, problem, grads=grads, precision=precision)
        except HarnessError as error:
            outcome = error
        except Exception as error:
            outcome = raised(error)
        connection.send(outcome)


class Worker:
    """A child process that runs ``check_case`` on the cases it is sent (see the module docstring)."""

    def __init__(self, target: str | Callable[..., object]) -> None:
        self.target = target
        self._context = multiprocessing.get_context("spawn")
        self._process: Any = None
        self._connection: Connection | None = None

    def _start(self) -> Connection:
        parent, child = self._context.Pipe()
        self._process = self._context.Process(target=_serve, args=(child, self.target), daemon=True)
        self._process.start()
        child.close()
        self._connection = parent
        return parent

    def check(self, problem: Problem, *, grads: bool, precision: Precision) -> CaseResult | Raised:
        """The case's result, or what the kernel raised, or how its process died."""
        connection = self._connection or self._start()
        connection.send((problem, grads, precision))
        try:
            outcome = connection.recv()
        except EOFError:
            self._process.join()
            code = self._process.exitcode
            self._connection = None
            name = signal.Signals(-code).name if code is not None and code < 0 else f"exit code {code}"
            return Raised(f"the kernel's process died ({name}) on this case", f"process died ({name})")
        if isinstance(outcome, HarnessError):
            raise outcome
        assert isinstance(outcome, CaseResult | Raised)
        return outcome

    def close(self) -> None:
        if self._connection is not None:
            self._connection.send(None)
            self._process.join(timeout=10)
            self._connection = None
