"""The triangular solve's componentwise condition number: the part of the error model that input perturbations miss.

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
"""

from __future__ import annotations

import math

import numpy as np

from proofs_checks.differential.bridge import sequence_ranges
from proofs_checks.differential.strategies import Problem
from spec import deltaformer as spec_df
from spec._types import F64

__all__ = ["solve_condition"]


def _head(q: F64, w: F64, k: F64, v: F64, beta: F64, *, kernel: str, write_scale: float,
          read_scale: float | None) -> tuple[float, float]:
    """(||bound||_F^2, ||result||_F^2) for one head; read_scale None: the op is deltaformer_u (no read-out)."""
    P = spec_df.write_scores(w, k, kernel=kernel, scale=write_scale)
    M = np.eye(len(beta)) + beta[:, None] * P
    U = spec_df.deltaformer_u_solve(P, v, beta)
    bound = np.abs(np.linalg.inv(M)) @ (np.abs(M) @ np.abs(U))
    result = U
    if read_scale is not None:
        A = spec_df.causal_softmax(q @ k.T * read_scale, strict=False)
        bound, result = A @ bound, A @ U  # A >= 0, so |A| = A
    return float(np.sum(bound**2)), float(np.sum(result**2))


def solve_condition(problem: Problem, arrays: dict[str, F64]) -> float:
    """kappa_solve of the module docstring for the DeltaFormer ops; 0 for the other ops (no write system)."""
    if problem.op not in ("deltaformer_u", "deltaformer_attn"):
        return 0.0
    attn = problem.op == "deltaformer_attn"
    first = arrays["q" if attn else "w"]
    B, T, H, K = first.shape
    write_scale = spec_df.default_scale(problem.kernel, K, first) if problem.scale is None else problem.scale
    read_scale = (1.0 / math.sqrt(K) if problem.scale is None else problem.scale) if attn else None
    bound_sq = result_sq = 0.0
    for _, b, start, end in sequence_ranges(T, B, problem.cu_seqlens):
        for h in range(H):
            q, k, v, beta = (arrays[name][b, start:end, h] for name in ("q" if attn else "w", "k", "v", "beta"))
            w = k if attn and problem.write == "k" else q
            head_bound, head_result = _head(q, w, k, v, beta, kernel=problem.kernel, write_scale=write_scale,
                                            read_scale=read_scale)
            bound_sq += head_bound
            result_sq += head_result
    return math.sqrt(bound_sq / result_sq) if result_sq > 0 else 0.0
