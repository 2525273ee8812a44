"""Compare any callable with the public impl signature against the float64 spec on one ``Problem``.

Outputs: the callable's result vs the spec (through ``bridge``), within ``tolerances.budget``. Gradients: the
callable's autograd gradients (of L = sum(c * outputs) for a random cotangent c) vs the float64 control recurrence's
(``controls``), which is tied to the spec on the same case: its outputs must match the spec, and its directional
derivative along a random direction must match 4th-order central differences of the float64 spec. If that tie
fails, the harness itself is wrong and ``HarnessError`` is raised (never reported as the kernel's fault).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from proofs_checks.differential import tolerances
from proofs_checks.differential.bridge import run_spec
from proofs_checks.differential.conditioning import solve_condition
from proofs_checks.differential.controls import run_control
from proofs_checks.differential.strategies import Problem, round_to_dtype
from spec._types import F64

__all__ = ["CaseResult", "HarnessError", "call_kernel", "check_case"]

MAX_CONDITION_ROUNDOFF = 1e-2
"""Cases whose measured kappa * u_compute exceeds this are skipped: the result has under two correct digits in the
kernel's arithmetic, so there is nothing to compare (reported as skipped, with the count)."""


class HarnessError(RuntimeError):
    """The harness's own reference failed its tie to the spec (a harness bug, not the kernel's)."""


@dataclass
class CaseResult:
    """Errors and budgets of one case, per output ("o", "final_state") and gradient ("grad_<input>")."""

    problem: Problem
    errors: dict[str, float] = field(default_factory=dict)
    budgets: dict[str, float] = field(default_factory=dict)
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)

    def ratios(self) -> dict[str, float]:
        return {name: self.errors[name] / self.budgets[name] for name in self.errors}

    def worst(self) -> tuple[str, float]:
        """(name, error / budget) of the worst quantity; ("", 0.0) when skipped or empty."""
        ratios = self.ratios()
        if not ratios:
            return "", 0.0
        name = max(ratios, key=lambda n: ratios[n] if not math.isnan(ratios[n]) else math.inf)
        return name, ratios[name]

    @property
    def passed(self) -> bool:
        return self.skipped is not None or all(r <= 1.0 for r in self.ratios().values())

    def report(self) -> str:
        lines = [f"case: {self.problem!r}"]
        if self.skipped:
            lines.append(f"  skipped: {self.skipped}")
        for name in self.errors:
            ratio = self.errors[name] / self.budgets[name]
            verdict = "ok" if ratio <= 1.0 else "FAIL"
            lines.append(f"  {name:>20}: error {self.errors[name]:.3e}  budget {self.budgets[name]:.3e}  "
                         f"error/budget {ratio:.3g}  {verdict}")
        lines.extend(f"  note: {note}" for note in self.notes)
        lines.append("reproducer:")
        lines.extend("  " + line for line in self.problem.repro().splitlines())
        return "\n".join(lines)


def _torch_inputs(arrays: dict[str, F64], dtype: str, requires_grad: bool) -> dict[str, Tensor]:
    return {name: torch.from_numpy(x.copy()).to(getattr(torch, dtype)).requires_grad_(requires_grad)
            for name, x in arrays.items()}


def call_kernel(fn: Callable[..., object], problem: Problem, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Call ``fn`` with the public signature of ``problem.op``; returns {"o": ..., ["final_state": ...]}."""
    cu = None if problem.cu_seqlens is None else torch.tensor(problem.cu_seqlens, dtype=torch.int64)
    names = [n for n in problem.input_names if n != "initial_state"]
    args = [tensors[n] for n in names]
    kwargs: dict[str, object] = {**problem.options(), "chunk_size": problem.chunk_size, "cu_seqlens": cu}
    if problem.op in ("delta_rule", "linear_attn"):
        kwargs["initial_state"] = tensors.get("initial_state")
        kwargs["output_final_state"] = True
    result = fn(*args, **kwargs)
    if isinstance(result, tuple):
        o, state = result[0], result[1]
        if not isinstance(o, Tensor) or not isinstance(state, Tensor):
            raise TypeError(f"{problem.op} must return (o, final_state) tensors with output_final_state=True, got "
                            f"({type(o).__name__}, {type(state).__name__})")
        return {"o": o, "final_state": state}
    if not isinstance(result, Tensor):
        raise TypeError(f"{problem.op} must return a tensor, got {type(result).__name__}")
    return {"o": result}


def _perturbed(arrays: dict[str, F64], seed: int) -> dict[str, F64]:
    rng = np.random.default_rng(seed)
    return {name: x * (1.0 + tolerances.ETA * rng.uniform(-1.0, 1.0, x.shape)) for name, x in arrays.items()}


def _relative_change(a: dict[str, F64], b: dict[str, F64]) -> float:
    return max((tolerances.normwise_error(a[name], b[name]) for name in a), default=0.0)


def _control(problem: Problem, arrays: dict[str, F64]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    tensors = _torch_inputs(arrays, "float64", True)
    return tensors, run_control(problem.op, tensors, problem.cu_seqlens, **problem.options())


def _loss(outputs: dict[str, Tensor], cotangents: dict[str, F64]) -> Tensor:
    total = torch.zeros((), dtype=torch.float64)
    for name, c in cotangents.items():
        total = total + (outputs[name].to(torch.float64) * torch.from_numpy(c)).sum()
    return total


def _grads(loss: Tensor, tensors: dict[str, Tensor]) -> dict[str, F64]:
    names = list(tensors)
    grads = torch.autograd.grad(loss, [tensors[n] for n in names], allow_unused=True)
    return {n: (np.zeros(tensors[n].shape) if g is None else g.detach().to(torch.float64).numpy())
            for n, g in zip(names, grads, strict=True)}


def _spec_loss(problem: Problem, arrays: dict[str, F64], cotangents: dict[str, F64]) -> tuple[float, float]:
    """(L, sum of |terms| of L) by the float64 spec."""
    out = run_spec(problem.op, arrays, problem.cu_seqlens, **problem.options())
    terms = [out[name] * c for name, c in cotangents.items()]
    return float(sum(t.sum() for t in terms)), float(sum(np.abs(t).sum() for t in terms))


def _round_safe(problem: Problem, arrays: dict[str, F64], name: str, step: F64) -> bool:
    """For the round kernel: True when moving input ``name`` by +-``step`` changes no write score by more than
    half the margin to the nearest half-integer (so the spec's round() is constant along the finite difference)."""
    if not (problem.op.startswith("deltaformer") and problem.kernel == "round"):
        return True
    if name not in ("w", "k", "q"):
        return True
    scale = float(problem.scale) if problem.scale is not None else 1.0
    norms = {n: float(np.linalg.norm(arrays[n], axis=-1).max()) for n in ("w", "k", "q") if n in arrays}
    bound = abs(scale) * float(np.linalg.norm(step, axis=-1).max()) * 2.0 * max(norms.values()) * 1.01
    margin = 1.0 / (2.0 * (2 * problem.K + 1))
    return bound < margin / 2.0


def _check_control_against_spec(problem: Problem, arrays: dict[str, F64], cotangents: dict[str, F64],
                                ref_grads: dict[str, F64], result: CaseResult) -> None:
    rng = np.random.default_rng(problem.seed + 2)
    for name, x in arrays.items():
        rms = float(np.sqrt(np.mean(x**2))) or 1.0
        direction = rng.standard_normal(x.shape) * rms
        h = 1e-4
        if not _round_safe(problem, arrays, name, 2.0 * h * direction):
            result.notes.append(f"finite-difference tie of d/d{name} skipped (round kernel margin)")
            continue
        values = {}
        magnitude = 0.0
        for m in (-2, -1, 1, 2):
            shifted = dict(arrays)
            shifted[name] = x + m * h * direction
            values[m], terms = _spec_loss(problem, shifted, cotangents)
            magnitude = max(magnitude, terms)
        d2 = (values[1] - values[-1]) / (2 * h)
        d4 = (8 * (values[1] - values[-1]) - (values[2] - values[-2])) / (12 * h)
        analytic = float((ref_grads[name] * direction).sum())
        allowed = abs(d4 - d2) + 1e3 * tolerances.unit_roundoff("float64") * magnitude / h
        if abs(analytic - d4) > allowed:
            raise HarnessError(f"control gradient d/d{name} disagrees with central differences of the float64 "
                               f"spec: {analytic!r} vs {d4!r} (allowed {allowed:.3e})\n{problem.repro()}")


def check_case(fn: Callable[..., object], problem: Problem, *, grads: bool = True) -> CaseResult:
    """Run ``fn`` on ``problem`` and compare outputs (and gradients) with the float64 spec."""
    result = CaseResult(problem)
    arrays = problem.arrays()
    options = problem.options()
    expected = run_spec(problem.op, arrays, problem.cu_seqlens, **options)
    if not all(np.isfinite(x).all() for x in expected.values()):
        result.skipped = "the float64 spec itself overflows on this input"
        return result
    perturbed = _perturbed(arrays, problem.seed + 1)
    kappa = _relative_change(run_spec(problem.op, perturbed, problem.cu_seqlens, **options), expected) / \
        tolerances.ETA + solve_condition(problem, arrays)
    if kappa * tolerances.compute_roundoff(problem.dtype) > MAX_CONDITION_ROUNDOFF:
        result.skipped = f"ill-conditioned: measured kappa = {kappa:.3g}"
        return result
    sizes = {"T": problem.T, "K": problem.K, "V": problem.V}
    tensors = _torch_inputs(arrays, problem.dtype, grads)
    actual = call_kernel(fn, problem, tensors)
    for name, want in expected.items():
        got = actual[name]
        if tuple(got.shape) != want.shape:
            raise ValueError(f"{problem.op} returned {name} of shape {tuple(got.shape)}, expected {want.shape}\n"
                             f"{problem.repro()}")
        if got.dtype != getattr(torch, problem.dtype):
            result.notes.append(f"{name} has dtype {got.dtype}, expected {problem.dtype}")
        result.errors[name] = tolerances.normwise_error(got.detach().to(torch.float64).numpy(), want)
        result.budgets[name] = tolerances.budget(problem.dtype, kappa=kappa, **sizes)
    if not grads:
        return result
    rng = np.random.default_rng(problem.seed + 3)
    cotangents = {name: round_to_dtype(rng.standard_normal(want.shape), problem.dtype)
                  for name, want in expected.items()}
    kernel_grads = _grads(_loss(actual, cotangents), tensors)
    ref_tensors, ref_out = _control(problem, arrays)
    control_error = _relative_change({n: t.detach().numpy() for n, t in ref_out.items()}, expected)
    if control_error > tolerances.budget("float64", kappa=kappa, **sizes):
        raise HarnessError(f"control recurrence disagrees with the spec (error {control_error:.3e})\n"
                           f"{problem.repro()}")
    ref_grads = _grads(_loss(ref_out, cotangents), ref_tensors)
    _check_control_against_spec(problem, arrays, cotangents, ref_grads, result)
    pert_tensors, pert_out = _control(problem, perturbed)
    pert_grads = _grads(_loss(pert_out, cotangents), pert_tensors)
    kappa_grad = _relative_change(pert_grads, ref_grads) / tolerances.ETA
    # gradient errors are measured against the scale of the whole gradient (all inputs): its rounding errors are
    # products of the same intermediate terms whatever the size of one input's gradient, which may be exactly 0
    # (softmax over a single earlier key, the round kernel) while the kernel's rounding leaves 1e-17
    total = math.sqrt(sum(float(np.sum(g**2)) for g in ref_grads.values()))
    for name, want in ref_grads.items():
        result.errors[f"grad_{name}"] = tolerances.normwise_error(kernel_grads[name], want, scale=total)
        result.budgets[f"grad_{name}"] = tolerances.budget(problem.dtype, kappa=kappa + kappa_grad, **sizes)
    return result
