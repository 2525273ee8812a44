"""The parts of the error model that input perturbations miss: the write system's componentwise condition number
(``solve_condition``) and the magnitude of exponentiated scores (``score_condition``).

``check_case`` measures kappa by perturbing the *inputs* (w, k, v, beta) and re-running the spec. A kernel's own
rounding errors, however, also land on an intermediate: the matrix M = I + diag(beta) P of the write system
M U = V (DF.3), whose entries the kernel computes (P in the working precision) and whose triangular solve is
backward stable only componentwise in M itself: the computed U solves (M + dM) U = V with
|dM| <= gamma |M| (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., Theorem 8.5). To first order
dU = -M^{-1} dM U, so

    |dU| <= gamma |M^{-1}| |M| |U|,     ||dU||_F / ||U||_F <= gamma * kappa_solve,
    kappa_solve = || |M^{-1}| |M| |U| ||_F / ||U||_F                       (Skeel's condition number, Higham 7.2)

and for DeltaFormer attention, o = A U with the non-negative read-out matrix A (DF.8),
kappa_solve = || |A| |M^{-1}| |M| |U| ||_F / ||o||_F. Perturbations of the inputs move M only along its structure
(P is a function of w and k; for K = 1, a rank-one pattern), so they can miss this sensitivity entirely: Hypothesis
found a linear-kernel case (T = 183, K = V = 1, beta up to 1.95, |U| ~ 500 |V|) whose input-perturbation kappa is
1.6 while kappa_solve is 1.7e3, and a correct fp32 kernel's error 9.5e-6 exceeded the budget built from 1.6.

Summed over (batch, sequence, head) in the Frobenius norm, like the errors. Cost: one T x T inverse per head
(O(T^3)); the harness draws T <= a few hundred.

Exponentiated scores. A computed score s = fl(scale q . k) carries an absolute error up to gamma_K |scale| |q| . |k|
(Higham 3.1), and exp(s - m) turns an absolute error of s - m into the same *relative* error of the weight; so the
softmax (or exp) weights carry relative errors up to ~2 u S, S = max over attended pairs of |scale| |q| . |k| (in
nats), whatever their sensitivity to relative input perturbations. Hence kappa_scores = 2 S is added for ops that
exponentiate scores (``ops.Op.exp_scores``). Found like kappa_solve: in the "gap" regime (scores up to ~4000 nats
in float64) PyTorch's fused softmax-attention backward, a correct kernel, returned dv with error 2.8e-13 against an
exact (50-digit) reference, 1.7 x the budget built from the perturbation kappa (47); its error is of the size
u S (S ~ 4e3), which the random perturbation (score moves ~ ETA S / sqrt(K), random signs) had not seen.
"""

from __future__ import annotations

import numpy as np

from proofs_checks.differential.bridge import heads, run_spec
from proofs_checks.differential.ops import WriteHead, record
from proofs_checks.differential.strategies import Problem
from spec import deltaformer as spec_df
from spec._types import F64

__all__ = ["kappa_solve", "score_condition", "skeel_bound", "skeel_bounds", "solve_condition"]


def skeel_bound(write: WriteHead, v: F64) -> tuple[F64, F64]:
    """(bound, result) for one head: bound = |M^{-1}| |M| |U| (with the read-out: A |M^{-1}| |M| |U|, A >= 0) and
    result = U (A U), both [T, V]; the componentwise form of the module docstring."""
    M = np.eye(len(write.beta)) + write.beta[:, None] * write.scores()
    inverse = np.linalg.inv(M)
    U = inverse @ v  # accurate enough for a bound, and one O(T^3) factorisation instead of two
    bound = np.abs(inverse) @ (np.abs(M) @ np.abs(U))
    result = U
    if write.q is not None:
        A = spec_df.causal_softmax(write.q @ write.k.T * write.read_scale, strict=False)
        bound, result = A @ bound, A @ U  # A >= 0, so |A| = A
    return bound, result


def skeel_bounds(problem: Problem, arrays: dict[str, F64]) -> F64 | None:
    """The componentwise bound |A| |M^{-1}| |M| |U| (|M^{-1}| |M| |U| for u) in the impl layout [B, T, H, V], for
    ops with a write system; None for the other ops."""
    op_record = record(problem.op)
    if op_record.write is None:
        return None
    bounds = np.zeros(arrays["v"].shape)
    for head in heads(arrays, op_record.inputs, problem.cu_seqlens):
        bound, _ = skeel_bound(op_record.write(head.inputs, **problem.options()), head.inputs["v"])
        bounds[head.b, head.rows, head.h] = bound
    return bounds


def solve_condition(problem: Problem, arrays: dict[str, F64], result: F64 | None = None) -> float:
    """kappa_solve of the module docstring, || bound ||_F / || result ||_F, for ops with a write system (``result``:
    the spec's output when already computed); 0 for the other ops."""
    bounds = skeel_bounds(problem, arrays)
    if bounds is None:
        return 0.0
    if result is None:
        result = run_spec(problem.op, arrays, problem.cu_seqlens, **problem.options())["o"]
    return kappa_solve(bounds, result)


def score_condition(problem: Problem, arrays: dict[str, F64]) -> float:
    """kappa_scores = 2 S of the module docstring (0 for ops that exponentiate no scores)."""
    op_record = record(problem.op)
    if op_record.exp_scores is None:
        return 0.0
    largest = 0.0
    for head in heads(arrays, op_record.inputs, problem.cu_seqlens):
        for block in op_record.exp_scores(head.inputs, **problem.options()):
            magnitude = abs(block.scale) * (np.abs(block.left) @ np.abs(block.right).T)
            attended = np.tril(magnitude, -1 if block.strict else 0)
            largest = max(largest, float(attended.max(initial=0.0)))
    return 2.0 * largest


def kappa_solve(bounds: F64, result: F64) -> float:
    """|| bounds ||_F / || result ||_F (0 for a zero result)."""
    norm = float(np.linalg.norm(result))
    return float(np.linalg.norm(bounds)) / norm if norm > 0 else 0.0
