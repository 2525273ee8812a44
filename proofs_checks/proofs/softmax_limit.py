"""Softmax attention's infinite-context limit and the constant of its t^-1/2 rate (claims 10 and 10b): the
Gaussian tilt, in every dimension, and the closed forms UPD.10a and UPD.10b that follow from it.

Setting (docs/derivations/updates.md, section 8): keys k ~ N(mu, Sigma), values v = A k + b + eps with eps
~ N(0, s^2 I) independent of k, kappa(k, q) = exp(lambda^T k) with lambda = q / tau. Column vectors are
noncommutative symbols (``lam`` = lambda, ``lamt`` = lambda^T, ...), so one check covers every dimension; the only
relations used are that a scalar equals its transpose (k^T lambda = lambda^T k) and Sigma = Sigma^T. What is not
proved here: the delta method step t E||o_t - L||^2 -> C (a limit theorem), which check C10b measures.
"""

from __future__ import annotations

import mpmath
import numpy as np
import sympy as sp

from proofs_checks.proofs.record import Proof, Step, Verdict, conclude, declare
from proofs_checks.proofs.symbolic import SPEC_DIGITS, Expr, equal, matches_spec, nc_symbols, symbols
from spec import updates
from spec._types import Array
from spec.precision import to_mp

__all__ = ["PROOFS"]


def _tilt() -> Step:
    """Completing the square: with m = mu + Sigma lambda,
    lambda^T k - (k - mu)^T Sigma^-1 (k - mu)/2 = lambda^T mu + lambda^T Sigma lambda/2 - (k - m)^T Sigma^-1 (k - m)/2,
    so e^(lambda^T k) N(k; mu, Sigma) = M(lambda) N(k; m, Sigma) in every dimension."""
    lam, lamt, k, kt, mu, mut, S = nc_symbols("lam lamt k kt mu mut S")
    P = S**-1
    m, mt = mu + S * lam, mut + lamt * S
    exponent = lamt * k - (kt - mut) * P * (k - mu) / 2
    residual = exponent - (lamt * mu + lamt * S * lam / 2 - (kt - mt) * P * (k - m) / 2)
    scalar_transposes = {kt * lam: lamt * k, mut * lam: lamt * mu}
    return equal("tilt: exponent of e^(lambda^T k) N(mu, Sigma) = log M(lambda) + exponent of N(mu + Sigma lambda, "
                 "Sigma)", sp.expand(residual).subs(scalar_transposes), 0)


def _limit(divide_by_tau: bool) -> Verdict:
    """UPD.10a: L = E[v kappa] / E[kappa] = M(lambda) E[A k' + b + eps] / M(lambda) = A (mu + Sigma q / tau) + b."""
    A, S, mu, q, b = nc_symbols("A S mu q b")
    tau, M = symbols("tau M", positive=True)
    tilted_mean = mu + S * q / (tau if divide_by_tau else 1)
    steps = [
        _tilt(),
        equal("L = M E'[A k' + b + eps] / M with k' ~ N(mu + Sigma q / tau, Sigma), E eps = 0",
              M * (A * tilted_mean + b) / M, A * (mu + S * q / tau) + b),
        _spec_limit(),
    ]
    return conclude(steps, "E[f(k) e^(lambda^T k)] = M(lambda) E[f(k')], lambda = q / tau (the tilt, integrated);")


def _constant(with_tilt_factor: bool) -> Verdict:
    """UPD.10b: C = E[kappa^2 ||v - L||^2] / (E kappa)^2 = e^(q^T Sigma q / tau^2)(||A Sigma q/tau||^2 + tr(A Sigma A^T)
    + d_v s^2)."""
    A, S, mu, lam, lamt, b = nc_symbols("A S mu lam lamt b")
    log_M = lamt * mu + lamt * S * lam / 2  # log M(lambda)
    log_M_double = 2 * lamt * mu + (2 * lamt) * S * (2 * lam) / 2  # log M(2 lambda)
    L = A * (mu + S * lam) + b
    factor = lamt * S * lam if with_tilt_factor else 0
    steps = [
        _tilt(),
        equal("log M(2 lambda) - 2 log M(lambda) = lambda^T Sigma lambda", log_M_double - 2 * log_M, factor),
        equal("mean of v - L under N(mu + 2 Sigma lambda, Sigma): A (mu + 2 Sigma lambda) + b - L = A Sigma lambda",
              A * (mu + 2 * S * lam) + b - L, A * S * lam),
        _spec_constant(),
    ]
    return conclude(steps, "kappa^2 = e^((2 lambda)^T k): E[kappa^2 ||v - L||^2] = M(2 lambda) E'||A k' + b + eps "
                           "- L||^2, and E'||X||^2 = ||E'X||^2 + tr Cov X = ||A Sigma lambda||^2 + tr(A Sigma A^T) + "
                           "d_v s^2 (k', eps independent);")


# One rational instance, d_k = d_v = 2, for the transcription checks against spec.updates.
_Q = ((1, 2), (-1, 1))
_A = (((1, 1), (2, 1)), ((1, 4), (-1, 1)))
_SIGMA = (((2, 1), (1, 2)), ((1, 2), (1, 1)))
_MU = ((1, 4), (1, 2))
_B = ((1, 1), (0, 1))
_TAU = (3, 2)
_NOISE = (1, 2)


def _rational(pair: tuple[int, int]) -> Expr:
    return sp.Rational(*pair)


def _matrix(rows: tuple[tuple[tuple[int, int], ...], ...]) -> Expr:
    return sp.Matrix([[_rational(x) for x in row] for row in rows])


def _vector(entries: tuple[tuple[int, int], ...]) -> Expr:
    return sp.Matrix([_rational(x) for x in entries])


def _mp(x: Expr) -> Array:
    return to_mp(np.array([[float(e) for e in row] for row in x.tolist()])).reshape(x.shape).squeeze()


def _spec_limit() -> Step:
    q, A, S, mu, b, tau = _vector(_Q), _matrix(_A), _matrix(_SIGMA), _vector(_MU), _vector(_B), _rational(_TAU)
    with mpmath.workdps(SPEC_DIGITS):
        value = updates.softmax_infinite_context_limit(_mp(q), _mp(A), _mp(b), _mp(mu), _mp(S),
                                                       tau=mpmath.mpf(tau.p) / tau.q)
    proved = A * (mu + S * q / tau) + b
    return matches_spec("spec UPD.10a (first entry, d_k = d_v = 2)", value[0], proved[0])


def _spec_constant() -> Step:
    q, A, S, tau, noise = _vector(_Q), _matrix(_A), _matrix(_SIGMA), _rational(_TAU), _rational(_NOISE)
    with mpmath.workdps(SPEC_DIGITS):
        value = updates.softmax_convergence_constant(_mp(q), _mp(A), _mp(S), tau=mpmath.mpf(tau.p) / tau.q,
                                                     noise_std=mpmath.mpf(noise.p) / noise.q)
    shift = A * S * q / tau
    proved = sp.exp((q.T * S * q)[0, 0] / tau**2) * ((shift.T * shift)[0, 0] + (A * S * A.T).trace()
                                                     + A.rows * noise**2)
    return matches_spec("spec UPD.10b (d_k = d_v = 2)", value, proved)


PROOFS: tuple[Proof, ...] = (
    declare("UPD.10a", "for an i.i.d. Gaussian context the softmax read's limit is E[v kappa]/E[kappa] = "
            "A (mu + Sigma q / tau) + b", "C10", "symbolic", "all d_k, d_v (noncommutative vectors and matrices)",
            lambda: _limit(divide_by_tau=True), "the limit with q for q / tau", lambda: _limit(divide_by_tau=False)),
    declare("UPD.10b", "the t^-1/2 rate's constant E[kappa^2 ||v - L||^2]/(E kappa)^2 = e^(q^T Sigma q / tau^2) "
            "(||A Sigma q / tau||^2 + tr(A Sigma A^T) + d_v s^2)", "C10b", "symbolic",
            "all d_k, d_v (noncommutative vectors and matrices)", lambda: _constant(with_tilt_factor=True),
            "the constant without the factor e^(q^T Sigma q / tau^2)", lambda: _constant(with_tilt_factor=False)),
)
