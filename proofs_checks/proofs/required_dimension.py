"""The feature dimension needed for E SNR^-1 <= eps (claim 4): the requirements SNR.20-SNR.24 solved from their
forms, SNR.25's root unique (symbolic monotonicity), its asymptotic expansion in L = ln((N - 1)/eps), and
certified interval enclosures of that root for N = 2^4..2^40.

SNR.25 solves F(d) = L - g(d) = 0 with g(d) = (d/2) ln(1 + 4/sqrt(d) - 4/d) (SNR.19 at tau = sqrt(d)). With
x = d^(-1/2) in (0, 1], g(d) = h(x) = ln(q(x)) / (2 x^2), q(x) = 1 + 4x - 4x^2 (docs/derivations/snr.md, section 8).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import mpmath
import sympy as sp
from mpmath import iv

from proofs_checks.proofs.record import Proof, Step, Verdict, conclude, declare
from proofs_checks.proofs.symbolic import equal, symbols
from spec import snr

__all__ = ["PROOFS"]

EPS_INVERSE = 100
"""1/eps: check C4's target SNR^-1 is eps = 1/100 (kept exact: L = ln((N - 1) * 100))."""
EXPONENTS = range(4, 41)
"""N = 2^4..2^40, the range of check C4."""
INTERVAL_DIGITS = 60
"""Working precision of the interval enclosures."""
BRACKET = mpmath.mpf(10) ** -30
"""Relative half-width of each certified bracket around the spec's root."""
REMAINDER_LIMIT = 248
"""The L^-2 coefficient of the expansion of sqrt(d_k) (proved in SNR.25-expansion)."""


def _text(x: Any) -> str:
    """An interval as [low, high] with 8 digits each."""
    return f"[{mpmath.nstr(mpmath.mpf(x.a), 8)}, {mpmath.nstr(mpmath.mpf(x.b), 8)}]"


@contextmanager
def _interval_digits(digits: int) -> Iterator[None]:
    """Scope mpmath.iv's precision (the interval context has no workdps of its own)."""
    saved = iv.prec
    iv.dps = digits
    try:
        yield
    finally:
        iv.prec = saved


def _monotone(q_sign: int) -> Verdict:
    """h is strictly decreasing on (0, 1], so F is strictly decreasing on d >= 1 and its root is unique."""
    x = sp.Symbol("x", positive=True)
    (d,) = symbols("d", positive=True)
    q = 1 + 4 * x + q_sign * 4 * x**2
    h = sp.log(q) / (2 * x**2)
    w = x * sp.diff(q, x) / q - 2 * sp.log(q)
    cubic = 1 + 8 * x * (2 * x**2 - sp.Rational(5, 2) * x + 1)
    steps = [
        equal("g(d) = h(d^(-1/2))", (d / 2) * sp.log(1 + 4 / sp.sqrt(d) - 4 / d), h.subs(x, 1 / sp.sqrt(d))),
        equal("h'(x) = w(x) / (2 x^3), w = x q'/q - 2 ln q", sp.diff(h, x), w / (2 * x**3)),
        equal("w(0) = 0", w.subs(x, 0), 0),
        equal("w'(x) q^2 = -4 (1 + 8x (2x^2 - 5x/2 + 1))", sp.diff(w, x) * q**2, -4 * cubic),
        equal("2x^2 - 5x/2 + 1 = 2 (x - 5/8)^2 + 7/32 > 0", 2 * x**2 - sp.Rational(5, 2) * x + 1,
              2 * (x - sp.Rational(5, 8)) ** 2 + sp.Rational(7, 32)),
        equal("q = 1 + 4x(1 - x) >= 1 on [0, 1]", q, 1 + 4 * x * (1 - x)),
        equal("g(1) = h(1) = 0, so F(1) = L > 0 when N - 1 > eps", h.subs(x, 1), 0),
    ]
    return conclude(steps, "so w' < 0 and w < 0 on (0, 1], h' < 0, g increasing in d, F = L - g decreasing; "
                           "h(x) ~ 2/x -> oo gives a root; it is unique;")


def _expansion(first_correction: Any) -> Verdict:
    """sqrt(d_k) = L/2 + 3 - 56/(3L) + 248/L^2 + O(L^-3): series of h at 0, inverted term by term."""
    x = sp.Symbol("x", positive=True)
    L, y, N, eps = symbols("L y N eps", positive=True)
    h = sp.log(1 + 4 * x - 4 * x**2) / (2 * x**2)
    series = sp.series(h, x, 0, 4).removeO()
    candidate = L / 2 + 3 + first_correction / L + REMAINDER_LIMIT / L**2
    residual = series.subs(x, 1 / y).subs(y, candidate) - L
    d_linear = 2 + (N - 1) / eps
    steps = [
        equal("h(x) = 2/x - 6 + 56x/3 - 68x^2 + 1312x^3/5 + O(x^4)", series,
              2 / x - 6 + sp.Rational(56, 3) * x - 68 * x**2 + sp.Rational(1312, 5) * x**3),
        equal("g(y^2) - L = O(L^-3) at y = L/2 + 3 - 56/(3L) + 248/L^2 (L^2 (g - L) -> 0)",
              sp.limit(L**2 * residual, L, sp.oo), 0),
        equal("slope of sqrt(d_k) in L -> 1/2", sp.limit(sp.diff(candidate, L), L, sp.oo), sp.Rational(1, 2)),
        equal("linear (SNR.23): log-log slope d ln d / d ln N -> 1", sp.limit(N * sp.diff(d_linear, N) / d_linear,
                                                                             N, sp.oo), 1),
    ]
    return conclude(steps, "y = sqrt(d) = 1/x; the equation g = L has dg/dy -> 2, so an O(L^-3) residual "
                           "moves y by O(L^-3): O(log^2 N) for exp at tau = sqrt(d_k), O(N) for linear;")


def _requirements(tau2_log_base: Any) -> Verdict:
    """SNR.20-SNR.24: each requirement is where its form equals eps, and the form decreases in d_k."""
    N, eps, d, n, e = symbols("N eps d n e", positive=True)
    # (form in d, requirement, domain: N and d written so that every factor's sign is known to sympy)
    forms = {
        "SNR.20 linear N/d_k": (N / d, N / eps, {}),
        "SNR.21 exp tau = sqrt(d_k): N e^(2 - 2 sqrt(d_k))": (N * sp.exp(2 - 2 * sp.sqrt(d)),
                                                               (1 + sp.log(N / eps) / 2) ** 2, {}),
        "SNR.22 exp tau = 2: N e^(-d_k/2)": (N * sp.exp(-d / 2), 2 * sp.log(N / eps), {}),
        "SNR.23 linear averaged (N - 1)/(d_k - 2)": ((N - 1) / (d - 2), 2 + (N - 1) / eps, {N: 1 + n, d: 2 + e}),
        "SNR.24 exp tau = 2 averaged (N - 1) 2^(-d_k/2)": ((N - 1) * 2 ** (-d / 2),
                                                           2 * sp.log((N - 1) / eps) / tau2_log_base, {N: 1 + n}),
    }
    steps: list[Step] = []
    for label, (form, requirement, domain) in forms.items():
        # N > eps written as N = eps (1 + n), so ln(N/eps) > 0 is known to sympy.
        at_requirement = form.subs(d, requirement).subs(N, eps * (1 + n))
        steps.append(equal(f"{label}: form = eps at the requirement", at_requirement, eps))
        derivative = sp.simplify(sp.diff(form, d).subs(domain))
        steps.append(Step(f"{label}: decreasing in d_k", bool(derivative.is_negative), f"d/dd_k = {derivative}"))
    return conclude(steps, "a decreasing form is <= eps exactly from the requirement on (N > eps; N = 1 + n, "
                           "d_k = 2 + e with n, e > 0 where the form needs it);")


def _excess(d: Any, L: Any) -> Any:
    """F(d) = L - (d/2) ln(1 + 4/sqrt(d) - 4/d) in interval arithmetic (d a point, L an interval)."""
    point = iv.mpf(d)
    return L - point / 2 * iv.log(1 + 4 / iv.sqrt(point) - 4 / point)


def _root_enclosures(claimed: str) -> Verdict:
    """Certified brackets [lo, hi] of SNR.25's root for N = 2^4..2^40: F(lo) > 0 > F(hi) in interval arithmetic."""
    failures: list[str] = []
    remainders: list[Any] = []
    widest = mpmath.mpf(0)
    with mpmath.workdps(INTERVAL_DIGITS), _interval_digits(INTERVAL_DIGITS):
        for exponent in EXPONENTS:
            N = 2**exponent
            eps = mpmath.mpf(1) / EPS_INVERSE
            solver = snr.required_dk_exp_sqrt_exact if claimed == "spec" else snr.required_dk_exp_sqrt
            centre = solver(N, eps)
            lo, hi = centre * (1 - BRACKET), centre * (1 + BRACKET)
            L = iv.log(iv.mpf((N - 1) * EPS_INVERSE))

            at_lo, at_hi = _excess(lo, L), _excess(hi, L)
            if not (at_lo.a > 0 and at_hi.b < 0):
                failures.append(f"N=2^{exponent}: F(lo) in {_text(at_lo)}, F(hi) in {_text(at_hi)}: not a bracket")
                continue
            root = iv.mpf([lo, hi])
            remainder = (iv.sqrt(root) - (L / 2 + 3 - iv.mpf(56) / (3 * L))) * L**2
            remainders.append((exponent, remainder))
            widest = max(widest, mpmath.mpf(remainder.delta))
    steps = [Step("sign change of the decreasing F certified at every N", not failures,
                  "; ".join(failures[:3]) if failures else f"{len(remainders)} brackets of relative width 2e-30")]
    if remainders:
        increasing = all(b.a > a.b for (_, a), (_, b) in itertools.pairwise(remainders))
        inside = all(r.a > 0 and r.b < REMAINDER_LIMIT for _, r in remainders)
        first, last = remainders[0][1], remainders[-1][1]
        steps.append(Step("remainder (sqrt(d) - L/2 - 3 + 56/(3L)) L^2 in (0, 248), increasing in N",
                          increasing and inside, f"from {_text(first)} at N=2^4 to {_text(last)} at N=2^40, "
                                                 f"enclosure widths <= {mpmath.nstr(widest, 2)}"))
    return conclude(steps, f"F(d) = L - (d/2) ln(1 + 4/sqrt(d) - 4/d), eps = 1/100, {INTERVAL_DIGITS}-digit "
                           "intervals; F is strictly decreasing (SNR.25-monotone), so each bracket holds the "
                           "unique root and the spec's bisection result lies in it;")


PROOFS: tuple[Proof, ...] = (
    declare("SNR.20-24", "the required dimensions SNR.20-SNR.24 are exactly where their decreasing forms reach eps",
            "C4", "symbolic", "all N > eps > 0 (symbolic parameters)", lambda: _requirements(sp.log(2)),
            "SNR.24 with ln for log2", lambda: _requirements(1)),
    declare("SNR.25-monotone", "(d/2) ln(1 + 4/sqrt(d) - 4/d) is strictly increasing on d >= 1, so SNR.25's root "
            "is unique", "C4", "symbolic", "all d >= 1 (every N, eps)", lambda: _monotone(-1),
            "the same argument for ln(1 + 4x + 4x^2)", lambda: _monotone(1)),
    declare("SNR.25-expansion", "sqrt(d_k) = L/2 + 3 - 56/(3L) + 248/L^2 + O(L^-3), L = ln((N - 1)/eps): "
            "O(log^2 N), slope 1/2 in L; linear O(N) with log-log slope 1", "C4", "symbolic",
            "all N, asymptotic as L -> oo", lambda: _expansion(sp.Rational(-56, 3)), "-28/(3L) for -56/(3L)",
            lambda: _expansion(sp.Rational(-28, 3))),
    declare("SNR.25-enclosure", "the root of SNR.25 lies in [d(1 - 1e-30), d(1 + 1e-30)] around the spec's "
            "bisection d, and the expansion's remainder times L^2 lies in (0, 248)", "C4", "interval",
            "N = 2^4..2^40, eps = 0.01", lambda: _root_enclosures("spec"),
            "the root is SNR.21's (1 + ln(N/eps)/2)^2", lambda: _root_enclosures("SNR.21")),
)
