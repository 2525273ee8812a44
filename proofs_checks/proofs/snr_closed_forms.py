"""Each SNR closed form SNR.5-SNR.19 derived by sympy from its definition (claims 1, 2, 3).

The definition is SNR.3, SNR^-1(k_i) = (N - 1) E_k[kappa^2(k, k_i)] / kappa^2(k_i, k_i) (docs/derivations/snr.md,
section 3: the cross terms of E||r||^2 vanish for zero-mean values independent of the keys), with the second moment
from the lemmas of ``snr_moments`` (proved there). Averaging over k_i uses the chi-square lemmas; the paper's
scaling forms are the conditional forms at the typical key s = d_k with N for N - 1. Every derived expression is
compared with the closed form as ``spec/snr.py`` states it (symbolically), and the spec function itself is
evaluated at one rational point at 45 digits against the proved expression (a transcription check).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mpmath
import sympy as sp

from proofs_checks.proofs.record import Proof, Step, Verdict, conclude, declare
from proofs_checks.proofs.snr_moments import double_factorial_odd
from proofs_checks.proofs.symbolic import SPEC_DIGITS, Expr, equal, matches_spec
from spec import snr

__all__ = ["PROOFS"]

N = sp.Symbol("N", integer=True, positive=True)
p = sp.Symbol("p", integer=True, positive=True)
m = sp.Symbol("m", integer=True, positive=True)
s, d_k, d_v, tau = sp.symbols("s d_k d_v tau", positive=True)

POINT: dict[Expr, Expr] = {N: 1000, s: sp.Rational(37, 3), d_k: sp.Rational(45, 2), d_v: sp.Rational(31, 4),
                           tau: sp.Rational(7, 5), p: 3}
"""Where each spec function is evaluated against its proved closed form (d_k > 2p for SNR.16)."""


def _snr3(m2: Expr, c: Expr) -> Expr:
    """SNR.3: (N - 1) m2 / c^2."""
    return (N - 1) * m2 / c**2


def _typical(conditional: Expr) -> Expr:
    """The paper's scaling form: the conditional form at s = d_k with N for N - 1."""
    return conditional.subs(N, N + 1).subs(s, d_k)


def _spec(label: str, function: Callable[..., Any], names: tuple[Expr, ...], expr: Expr) -> Step:
    """Evaluate ``function`` at POINT (ints stay ints, the rest as mpf at SPEC_DIGITS) against ``expr`` there."""
    with mpmath.workdps(SPEC_DIGITS):
        arguments = [int(POINT[x]) if x.is_integer else mpmath.mpf(POINT[x].p) / POINT[x].q for x in names]
        value = function(*arguments)
    return matches_spec(f"spec {label}", value, expr.subs(POINT).doit())


def _linear(unconditional_shift: int) -> Verdict:
    """SNR.5-SNR.9 (linear kernel): m2 = E z^2 = s, c = s."""
    m2 = 2 * (double_factorial_odd(1) * s / 2).doit()
    snr5 = _snr3(m2, s)
    snr7 = (N - 1) * (1 / (d_k - 2))
    snr8 = snr7 * d_v / (d_v - 2)
    stated7 = (N - 1) / (d_k - unconditional_shift)
    steps = [
        equal("SNR.9 E z^2 = 2 E relu(z)^2 = s", m2, s),
        equal("SNR.5 (N - 1)/||k_i||^2", snr5, (N - 1) / s),
        equal("SNR.6 N/d_k", _typical(snr5), N / d_k),
        equal("SNR.7 (N - 1) E[1/chi^2_{d_k}] = (N - 1)/(d_k - 2)", snr7, stated7),
        equal("SNR.8 times E[d_v/||v||^2] = (N - 1)/(d_k - 2) d_v/(d_v - 2)", snr8,
              (N - 1) / (d_k - 2) * d_v / (d_v - 2)),
        equal("C1b: SNR.7 / SNR.6 = (1 - 1/N)/(1 - 2/d_k) -> 1", snr7 / _typical(snr5),
              (1 - 1 / N) / (1 - 2 / d_k)),
        _spec("SNR.5", snr.snr_inv_linear_conditional, (N, s), snr5),
        _spec("SNR.7", snr.snr_inv_linear_unconditional, (N, d_k), snr7),
        _spec("SNR.8", snr.snr_inv_linear_unconditional_ratio, (N, d_k, d_v), snr8),
    ]
    return conclude(steps, "from SNR.3 with SNR.10 at p = 1 and the chi-square lemma SNR.4-lemma;")


def _relu(independent_moments: bool) -> Verdict:
    """SNR.10, SNR.12-SNR.16 (ReLU^p): m2 = (2p - 1)!! s^p / 2, c = s^p."""
    double_factorial = double_factorial_odd(p)
    m2 = double_factorial * s**p / 2
    snr14 = _snr3(m2, s**p)
    average = sp.Product(1 / (d_k - 2 * m), (m, 1, p)) if independent_moments else (1 / (d_k - 2)) ** p
    snr16 = (N - 1) * double_factorial / 2 * average
    stated16 = (N - 1) * double_factorial / 2 * sp.Product(1 / (d_k - 2 * m), (m, 1, p))
    steps = [
        equal("SNR.14 (N - 1)(2p - 1)!!/(2 ||k_i||^(2p))", snr14, (N - 1) * double_factorial / (2 * s**p)),
        equal("SNR.12 (p = 1) (N - 1)/(2 ||k_i||^2)", snr14.subs(p, 1).doit(), (N - 1) / (2 * s)),
        equal("SNR.13 N/(2 d_k)", _typical(snr14).subs(p, 1).doit(), N / (2 * d_k)),
        equal("SNR.15 (2p - 1)!! N/(2 d_k^p)", _typical(snr14), double_factorial * N / (2 * d_k**p)),
        equal("SNR.16 (N - 1)(2p - 1)!!/2 E[chi^-2p] = ... prod 1/(d_k - 2m)", snr16.subs(p, 3).doit(),
              stated16.subs(p, 3).doit()),
        equal("SNR.16 for symbolic p", snr16, stated16),
        equal("C2b: SNR.16 / SNR.15 = (1 - 1/N) prod d_k/(d_k - 2m)", sp.simplify((snr16 / _typical(snr14)).doit()),
              sp.simplify(((1 - 1 / N) * sp.Product(d_k / (d_k - 2 * m), (m, 1, p))).doit())),
        equal("C2b: at p = 1, 2, 3 the ratio -> 1 - 1/N as d_k -> oo",
              sum(sp.limit((stated16 / _typical(snr14)).subs(p, k).doit(), d_k, sp.oo) for k in (1, 2, 3)),
              3 * (1 - 1 / N)),
        _spec("SNR.10", snr.kappa_sq_mean_relu_power, (s, p), m2),
        _spec("SNR.14", snr.snr_inv_relu_power_conditional, (N, s, p), snr14),
        _spec("SNR.16", snr.snr_inv_relu_power_unconditional, (N, d_k, p), stated16),
    ]
    return conclude(steps, "from SNR.3 with SNR.10-lemma and SNR.16-lemma (E[s^-p] = prod 1/(d_k - 2m), not "
                           "E[1/s]^p);")


def _exp(mgf_factor: int) -> Verdict:
    """SNR.11, SNR.17-SNR.19 (exp kernel): m2 = E e^(2z/tau) = e^(2s/tau^2) (Gaussian MGF), c = e^(s/tau)."""
    m2 = sp.exp((2 / tau) ** 2 * s / 2)
    snr17 = _snr3(m2, sp.exp(s / tau))
    a = 2 * (1 - tau) / tau**2
    snr19 = (N - 1) * (1 - 2 * a) ** (-d_k / 2)
    stated19 = (N - 1) * (1 - mgf_factor * (tau**-2 - tau**-1)) ** (-d_k / 2)
    growth = (1 - tau) / tau**2
    steps = [
        equal("SNR.11 E e^(2z/tau) = e^(2 s/tau^2)", m2, sp.exp(2 * s / tau**2)),
        equal("SNR.17 (N - 1) exp(2 (1 - tau) ||k_i||^2 / tau^2)", snr17, (N - 1) * sp.exp(2 * (1 - tau) * s / tau**2)),
        equal("SNR.18 N exp(2 (1 - tau) d_k / tau^2)", _typical(snr17), N * sp.exp(2 * (1 - tau) * d_k / tau**2)),
        equal("SNR.18 at tau = sqrt(d_k): N exp(2 - 2 sqrt(d_k))", _typical(snr17).subs(tau, sp.sqrt(d_k)),
              N * sp.exp(2 - 2 * sp.sqrt(d_k))),
        equal("(1 - tau)/tau^2 is stationary at tau = 2 (derivative (tau - 2)/tau^3)", sp.diff(growth, tau),
              (tau - 2) / tau**3),
        equal("SNR.18 at tau = 2: N exp(-d_k/2)", _typical(snr17).subs(tau, 2), N * sp.exp(-d_k / 2)),
        equal("SNR.19 (N - 1) E[e^(a s)], a = 2(1 - tau)/tau^2", snr19, stated19),
        equal("SNR.19 at tau = 1: N - 1", snr19.subs(tau, 1), N - 1),
        equal("SNR.19 at tau = 2: (N - 1) 2^(-d_k/2)", snr19.subs(tau, 2), (N - 1) * 2 ** (-d_k / 2)),
        _spec("SNR.11", snr.kappa_sq_mean_exp, (s, tau), m2),
        _spec("SNR.17", snr.snr_inv_exp_conditional, (N, s, tau), snr17),
        _spec("SNR.19", snr.snr_inv_exp_unconditional, (N, d_k, tau), stated19),
    ]
    return conclude(steps, "from SNR.3 with SNR.11-lemma (t = 2/tau) and SNR.19-lemma (finite for tau > "
                           "2(sqrt 2 - 1));")


PROOFS: tuple[Proof, ...] = (
    declare("SNR.5-9", "linear kernel: SNR.5 (N-1)/||k_i||^2, SNR.6 N/d_k, SNR.7 (N-1)/(d_k-2), SNR.8 times "
            "d_v/(d_v-2), SNR.9 E z^2 = s, derived from SNR.3", "C1", "symbolic",
            "all N >= 1, s > 0, d_k > 2, d_v > 2 (symbolic parameters)", lambda: _linear(2),
            "SNR.7 stated with d_k - 1 for d_k - 2", lambda: _linear(1)),
    declare("SNR.10-16", "ReLU^p kernel: SNR.14 (N-1)(2p-1)!!/(2||k_i||^2p), SNR.12/13/15, SNR.16 with "
            "prod 1/(d_k-2m), derived from SNR.3", "C2", "symbolic",
            "all p >= 1 (symbolic p), N >= 1, s > 0, d_k > 2p", lambda: _relu(independent_moments=True),
            "SNR.16 with E[1/s]^p for E[s^-p]", lambda: _relu(independent_moments=False)),
    declare("SNR.11,17-19", "exp kernel: SNR.11 e^(2s/tau^2), SNR.17 (N-1) e^(2(1-tau)s/tau^2), SNR.18 and its "
            "special temperatures, SNR.19 (N-1)(1-4(tau^-2-tau^-1))^(-d_k/2), derived from SNR.3", "C3",
            "symbolic", "all N >= 1, s > 0, d_k > 0, tau > 2(sqrt 2 - 1) (symbolic parameters)",
            lambda: _exp(4), "SNR.19 stated with 1 - 2(tau^-2 - tau^-1)", lambda: _exp(2)),
)
