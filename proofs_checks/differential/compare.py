"""Compare any callable with the public impl signature against the float64 spec on one ``Problem``.

Outputs: the callable's result vs the spec (through ``bridge``), within ``tolerances.budget`` for the declared
``Precision``. Every kernel call and backward pass runs with ``torch.empty`` poisoned by NaN (``poison``), so
unwritten rows show. Cases whose exact result the input dtype cannot hold are skipped and say so.

Low-precision consistency (fp16/bf16 inputs, intermediates in the compute dtype): the callable's output on the
low-precision inputs is compared elementwise with the low-precision rounding of its output on the same values as
float32 inputs (``tolerances.consistency_allowance``): a residual rounded to the input dtype before a cancelling
subtraction fails there even when the normwise error hides it.

Gradients: the callable's autograd gradients (of L = sum(c * outputs) for a random cotangent c) vs the float64
control recurrence's (``controls``), which is tied to the spec on the same case: its outputs must match the spec, and
its directional derivative along a random direction must match 4th-order central differences of the float64 spec.
If that tie fails, the harness itself is wrong and ``HarnessError`` is raised (never reported as the kernel's
fault).

The expected signature (``call_kernel``): ``fn(*tensors, **options)`` with the op's tensors in ``ops`` order
([B, T, H, D], beta [B, T, H] always passed, even where the impl allows None), ``chunk_size`` (an int from the drawn
pool), ``cu_seqlens`` (None or an int64 CPU tensor [N + 1] with B = 1), the op's options (``kernel``, ``write``,
``scale``: None or a float) and, for stateful ops, ``initial_state`` (None or [N, H, K, V]) and
``output_final_state=True``; it returns o, or (o, final_state) for stateful ops.
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
from proofs_checks.differential.conditioning import kappa_solve, score_condition, skeel_bounds
from proofs_checks.differential.controls import run_control
from proofs_checks.differential.ops import record
from proofs_checks.differential.poison import poisoned_empty
from proofs_checks.differential.strategies import Problem
from proofs_checks.differential.tolerances import DEFAULT_PRECISION, Precision, round_to_dtype
from spec._types import F64

__all__ = ["CaseResult", "HarnessError", "call_kernel", "check_case"]

MAX_CONDITION_ROUNDOFF = 1e-2
"""Cases whose measured kappa * u_compute exceeds this are skipped: the result has under two correct digits in the
kernel's arithmetic, so there is nothing to compare (reported as skipped, with the count)."""
LOW_PRECISION = ("float16", "bfloat16")


class HarnessError(RuntimeError):
    """The harness's own reference failed its tie to the spec (a harness bug, not the kernel's)."""


@dataclass
class CaseResult:
    """Errors and budgets of one case, per output ("o", "final_state"), low-precision consistency
    ("consistency_<output>", an elementwise ratio to its allowance, budget 1) and gradient ("grad_<input>")."""

    problem: Problem
    errors: dict[str, float] = field(default_factory=dict)
    budgets: dict[str, float] = field(default_factory=dict)
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)
    grads: bool = True
    precision: Precision = DEFAULT_PRECISION
    nonfinite: set[str] = field(default_factory=set)
    """Quantities where the kernel returned NaN or Inf."""
    checks: set[str] = field(default_factory=set)
    """What was compared: "outputs", "consistency", "gradients"."""

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

    def failure_kind(self) -> str | None:
        """What failed, the key that tells distinct failures apart: the first failing quantity in the order outputs,
        low-precision consistency, gradients (all gradients are one kind), and whether the kernel returned NaN/Inf
        there. None when the case passed."""
        failing = [name for name, ratio in self.ratios().items() if not ratio <= 1.0]
        if not failing:
            return None
        order = [name for name in failing if not name.startswith("grad_")] or ["gradients"]
        name = order[0]
        broken = name in self.nonfinite or (name == "gradients" and any(n.startswith("grad_") for n in self.nonfinite))
        return f"{name} (NaN/Inf)" if broken else name

    def report(self, target: str | None = None) -> str:
        lines = [f"case: {self.problem!r}"]
        if self.skipped:
            lines.append(f"  skipped: {self.skipped}")
        for name in self.errors:
            ratio = self.errors[name] / self.budgets[name]
            verdict = "ok" if ratio <= 1.0 else "FAIL"
            if name.startswith("consistency_"):
                lines.append(f"  {name:>20}: worst element at {self.errors[name]:.3g} x its allowance "
                             f"(2 ulps + the fp32 error)  {verdict}")
                continue
            lines.append(f"  {name:>20}: error {self.errors[name]:.3e}  budget {self.budgets[name]:.3e}  "
                         f"error/budget {ratio:.3g}  {verdict}")
        lines.extend(f"  note: {note}" for note in self.notes)
        lines.append("reproducer:")
        precision = None if self.precision == DEFAULT_PRECISION else repr(self.precision)
        lines.extend("  " + line for line in self.problem.repro(target, grads=self.grads,
                                                                 precision=precision).splitlines())
        return "\n".join(lines)


def _torch_inputs(arrays: dict[str, F64], dtype: str, requires_grad: bool) -> dict[str, Tensor]:
    return {name: torch.from_numpy(x.copy()).to(getattr(torch, dtype)).requires_grad_(requires_grad)
            for name, x in arrays.items()}


def call_kernel(fn: Callable[..., object], problem: Problem, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Call ``fn`` with the public signature of ``problem.op`` (module docstring); returns {"o": ...,
    ["final_state": ...]}."""
    op_record = record(problem.op)
    cu = None if problem.cu_seqlens is None else torch.tensor(problem.cu_seqlens, dtype=torch.int64)
    args = [tensors[n] for n in op_record.inputs]
    kwargs: dict[str, object] = {**problem.options(), "chunk_size": problem.chunk_size, "cu_seqlens": cu}
    if op_record.stateful:
        kwargs["initial_state"] = tensors.get("initial_state")
        kwargs["output_final_state"] = True
    result = fn(*args, **kwargs)
    if op_record.stateful:
        if not isinstance(result, tuple) or len(result) < 2:
            raise TypeError(f"{problem.op} must return (o, final_state) with output_final_state=True, got "
                            f"{type(result).__name__}")
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


def _round_safe(problem: Problem, arrays: dict[str, F64], steps: dict[str, F64]) -> bool:
    """For the round kernel: True when moving the inputs by +-``steps`` changes no write score by more than half the
    margin to the nearest half-integer (so the spec's round() is constant along the finite difference):
    |d(a . b)| <= (|da| + |db|) max(|a|, |b|) to first order, with 1% for the second-order term."""
    if not (record(problem.op).write is not None and problem.kernel == "round"):
        return True
    vectors = [n for n in ("w", "k", "q") if n in arrays]
    scale = float(problem.scale) if problem.scale is not None else 1.0
    norm = max(float(np.linalg.norm(arrays[n], axis=-1).max()) for n in vectors)
    step = sum(float(np.linalg.norm(steps[n], axis=-1).max()) for n in vectors)
    margin = 1.0 / (2.0 * (2 * problem.K + 1))
    return abs(scale) * step * 2.0 * norm * 1.01 < margin / 2.0


def _check_control_against_spec(problem: Problem, arrays: dict[str, F64], cotangents: dict[str, F64],
                                ref_grads: dict[str, F64], result: CaseResult) -> None:
    """The control's gradient along one random direction of all inputs at once vs 4th-order central differences of
    the float64 spec (the 2nd-order estimate's distance gives the truncation allowance)."""
    rng = np.random.default_rng(problem.seed + 2)
    direction = {name: rng.standard_normal(x.shape) * (float(np.sqrt(np.mean(x**2))) or 1.0)
                 for name, x in arrays.items()}
    h = 1e-4
    if not _round_safe(problem, arrays, {n: 2.0 * h * d for n, d in direction.items()}):
        result.notes.append("finite-difference tie of d/dw, d/dk, d/dq skipped (round kernel margin)")
        for name in ("w", "k", "q"):
            if name in direction:
                direction[name] = np.zeros_like(direction[name])
    values = {}
    magnitude = 0.0
    for m in (-2, -1, 1, 2):
        shifted = {name: x + m * h * direction[name] for name, x in arrays.items()}
        values[m], terms = _spec_loss(problem, shifted, cotangents)
        magnitude = max(magnitude, terms)
    d2 = (values[1] - values[-1]) / (2 * h)
    d4 = (8 * (values[1] - values[-1]) - (values[2] - values[-2])) / (12 * h)
    analytic = float(sum((ref_grads[name] * d).sum() for name, d in direction.items()))
    allowed = abs(d4 - d2) + 1e3 * tolerances.unit_roundoff("float64") * magnitude / h
    if abs(analytic - d4) > allowed:
        raise HarnessError(f"control gradient disagrees with central differences of the float64 spec along a "
                           f"random direction: {analytic!r} vs {d4!r} (allowed {allowed:.3e})\n{problem.repro()}")


def _as_f64(t: Tensor) -> F64:
    return t.detach().to(torch.float64).numpy()


def _unrepresentable(values: dict[str, F64], dtype: str, scale: float | None = None) -> str | None:
    bad = [name for name, x in values.items() if not tolerances.representable(x, dtype, scale=scale)]
    if not bad:
        return None
    return f"the exact {', '.join(bad)} not representable in {dtype} (overflow or underflow)"


def _consistency(fn: Callable[..., object], problem: Problem, arrays: dict[str, F64], actual: dict[str, Tensor],
                 magnitudes: dict[str, F64], result: CaseResult) -> None:
    """The low-precision consistency check of the module docstring."""
    try:
        with poisoned_empty(), torch.no_grad():
            reference = call_kernel(fn, problem, _torch_inputs(arrays, "float32", False))
    except Exception as error:  # a kernel without a float32 path: say so, compare nothing
        first_line = (str(error).splitlines() or [""])[0][:120]
        result.notes.append(f"low-precision consistency check not run: the kernel raised {type(error).__name__} "
                            f"on the same values as float32 inputs ({first_line})")
        return
    result.checks.add("consistency")
    for name, magnitude in magnitudes.items():
        got = _as_f64(actual[name])
        rounded = round_to_dtype(_as_f64(reference[name]), problem.dtype)
        allowance = tolerances.consistency_allowance(rounded, magnitude, problem.dtype, T=problem.T, K=problem.K,
                                                     V=problem.V)
        finite = bool(np.isfinite(got).all() and np.isfinite(rounded).all())
        ratio = float(np.max(np.abs(got - rounded) / allowance)) if finite and got.size else (0.0 if finite else
                                                                                              math.inf)
        result.errors[f"consistency_{name}"] = ratio
        result.budgets[f"consistency_{name}"] = 1.0
        if not finite:
            result.nonfinite.add(f"consistency_{name}")


def check_case(fn: Callable[..., object], problem: Problem, *, grads: bool = True,
               precision: Precision = DEFAULT_PRECISION) -> CaseResult:
    """Run ``fn`` on ``problem`` and compare outputs (and gradients) with the float64 spec under ``precision``.

    Exceptions raised by ``fn`` propagate (the caller decides whether NotImplementedError means unsupported)."""
    result = CaseResult(problem, grads=grads, precision=precision)
    arrays = problem.arrays()
    options = problem.options()
    expected = run_spec(problem.op, arrays, problem.cu_seqlens, **options)
    if not all(np.isfinite(x).all() for x in expected.values()):
        result.skipped = "the float64 spec itself overflows on this input"
        return result
    unrepresentable = _unrepresentable(expected, problem.dtype)
    if unrepresentable:
        result.skipped = unrepresentable
        return result
    perturbed = _perturbed(arrays, problem.seed + 1)
    moved = run_spec(problem.op, perturbed, problem.cu_seqlens, **options)
    skeel = skeel_bounds(problem, arrays)
    kappa = (_relative_change(moved, expected) / tolerances.ETA + score_condition(problem, arrays)
             + (0.0 if skeel is None else kappa_solve(skeel, expected["o"])))
    if kappa * tolerances.compute_roundoff(problem.dtype, precision) > MAX_CONDITION_ROUNDOFF:
        result.skipped = f"ill-conditioned: measured kappa = {kappa:.3g}"
        return result
    chunks = max(math.ceil(length / problem.chunk_size) for length in problem.sequence_lengths())
    sizes = {"T": problem.T, "K": problem.K, "V": problem.V}
    tensors = _torch_inputs(arrays, problem.dtype, grads)
    with poisoned_empty():
        actual = call_kernel(fn, problem, tensors)
    result.checks.add("outputs")
    for name, want in expected.items():
        got = actual[name]
        if tuple(got.shape) != want.shape:
            raise ValueError(f"{problem.op} returned {name} of shape {tuple(got.shape)}, expected {want.shape}")
        if got.dtype != getattr(torch, problem.dtype):
            result.notes.append(f"{name} has dtype {got.dtype}, expected {problem.dtype}")
        values = _as_f64(got)
        if not np.isfinite(values).all():
            result.nonfinite.add(name)
        result.errors[name] = tolerances.normwise_error(values, want)
        result.budgets[name] = tolerances.budget(problem.dtype, kappa=kappa, precision=precision, chunks=chunks,
                                                 **sizes)
    if problem.dtype in LOW_PRECISION and not precision.input_intermediates(problem.dtype):
        magnitudes = {name: np.abs(want) + np.abs(moved[name] - want) / tolerances.ETA
                      for name, want in expected.items()}
        if skeel is not None:
            magnitudes["o"] = magnitudes["o"] + skeel
        _consistency(fn, problem, arrays, actual, magnitudes, result)
    if not grads:
        return result
    rng = np.random.default_rng(problem.seed + 3)
    cotangents = {name: round_to_dtype(rng.standard_normal(want.shape), problem.dtype)
                  for name, want in expected.items()}
    with poisoned_empty():
        kernel_grads = _grads(_loss(actual, cotangents), tensors)
    ref_tensors, ref_out = _control(problem, arrays)
    control_error = _relative_change({n: t.detach().numpy() for n, t in ref_out.items()}, expected)
    if control_error > tolerances.budget("float64", T=problem.T, K=problem.K, V=problem.V, kappa=kappa):
        raise HarnessError(f"control recurrence disagrees with the spec (error {control_error:.3e})\n"
                           f"{problem.repro()}")
    ref_grads = _grads(_loss(ref_out, cotangents), ref_tensors)
    # gradient errors are measured against the scale of the whole gradient (all inputs): its rounding errors are
    # products of the same intermediate terms whatever the size of one input's gradient, which may be exactly 0
    # (softmax over a single earlier key, the round kernel) while the kernel's rounding leaves 1e-17
    total = math.sqrt(sum(float(np.sum(g**2)) for g in ref_grads.values()))
    unrepresentable = _unrepresentable(ref_grads, problem.dtype, scale=total)
    if unrepresentable:
        result.notes.append(f"gradients not compared: {unrepresentable}")
        return result
    _check_control_against_spec(problem, arrays, cotangents, ref_grads, result)
    pert_tensors, pert_out = _control(problem, perturbed)
    pert_grads = _grads(_loss(pert_out, cotangents), pert_tensors)
    # relative to the whole gradient, like the errors (one input's exact gradient may be 0)
    kappa_grad = max(tolerances.normwise_error(pert_grads[n], g, scale=total) for n, g in ref_grads.items()) \
        / tolerances.ETA
    result.checks.add("gradients")
    for name, want in ref_grads.items():
        if not np.isfinite(kernel_grads[name]).all():
            result.nonfinite.add(f"grad_{name}")
        result.errors[f"grad_{name}"] = tolerances.normwise_error(kernel_grads[name], want, scale=total)
        result.budgets[f"grad_{name}"] = tolerances.budget(problem.dtype, kappa=kappa + kappa_grad,
                                                           precision=precision, chunks=chunks, **sizes)
    return result
