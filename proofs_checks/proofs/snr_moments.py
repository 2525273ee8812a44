"""The moment lemmas under the SNR closed forms (claims 1, 2, 3): Gaussian and chi-square moments, by sympy.

Setting (docs/derivations/snr.md): given k_i, z = k_j^T k_i ~ N(0, s) with s = ||k_i||^2; averaged over k_i,
s ~ chi^2_d. Every chi-square statement reduces to the Gamma integral int_0^oo x^(k-1) e^(-lam x) dx =
Gamma(k) / lam^k (k, lam > 0), which sympy evaluates once with positive symbols; divergence is shown by the
integral of a smaller integrand. The odd double factorial is the spec's product (2p - 1)!! = prod_{j=1}^p (2j - 1).
"""

from __future__ import annotations

import sympy as sp

from proofs_checks.proofs.record import Proof, Step, Verdict, conclude, declare
from proofs_checks.proofs.symbolic import Expr, equal, symbols

__all__ = ["PROOFS", "chi2_density", "double_factorial_odd", "gamma_integral"]


def double_factorial_odd(p: Expr) -> Expr:
    """(2p - 1)!! = prod_{j=1}^{p} (2j - 1), as a sympy Product (the spec's ``_double_factorial_odd``)."""
    j = sp.Symbol("j", integer=True, positive=True)
    return sp.Product(2 * j - 1, (j, 1, p))


def gamma_integral(k: Expr, lam: Expr) -> Expr:
    """int_0^oo x^(k-1) e^(-lam x) dx, evaluated by sympy for a positive symbol k and lam > 0, then k substituted.

    Valid where the substituted k is positive (the caller states that hypothesis, e.g. d > 2p for k = d/2 - p).
    """
    x, positive_k = sp.Symbol("x", positive=True), sp.Symbol("k", positive=True)
    return sp.integrate(x ** (positive_k - 1) * sp.exp(-lam * x), (x, 0, sp.oo)).subs(positive_k, k)


def chi2_density(x: Expr, d: Expr) -> Expr:
    """The chi^2_d density x^(d/2 - 1) e^(-x/2) / (2^(d/2) Gamma(d/2))."""
    return x ** (d / 2 - 1) * sp.exp(-x / 2) / (2 ** (d / 2) * sp.gamma(d / 2))


def _diverges_at_zero() -> list[Step]:
    """int_0^1 x^(k-1) dx = oo for k <= 0 (k < 0 and k = 0 separately)."""
    x, eps = symbols("x eps", positive=True)
    (k,) = symbols("k", negative=True)
    return [
        equal("int_eps^1 x^(k-1) dx -> oo as eps -> 0 (k < 0)", sp.limit(sp.integrate(x ** (k - 1), (x, eps, 1)),
                                                                           eps, 0, "+"), sp.oo),
        equal("int_eps^1 x^(-1) dx -> oo as eps -> 0 (k = 0)", sp.limit(sp.integrate(1 / x, (x, eps, 1)), eps, 0,
                                                                         "+"), sp.oo),
    ]


def _relu_moments(recursion_factor: int) -> Verdict:
    """E relu(z)^(2p) = (2p - 1)!! s^p / 2 for z ~ N(0, s), every p >= 0, by induction on p (integration by parts)."""
    z = sp.Symbol("z", real=True)
    (s,) = symbols("s", positive=True)
    p = sp.Symbol("p", integer=True, nonnegative=True)
    density = sp.exp(-z**2 / (2 * s)) / sp.sqrt(2 * sp.pi * s)
    boundary = -s * z ** (2 * p + 1) * sp.exp(-z**2 / (2 * s))
    closed = double_factorial_odd(p) * s**p / 2
    closed_next = double_factorial_odd(p + 1) * s ** (p + 1) / 2
    steps = [
        equal("base p = 0: int_0^oo phi_s(z) dz = 1/2", sp.integrate(density, (z, 0, sp.oo)), sp.Rational(1, 2)),
        equal("parts: d/dz[-s z^(2p+1) e^(-z^2/2s)] = (z^(2p+2) - (2p+1) s z^(2p)) e^(-z^2/2s)",
              sp.diff(boundary, z), (z ** (2 * p + 2) - (2 * p + 1) * s * z ** (2 * p)) * sp.exp(-z**2 / (2 * s))),
        equal("boundary term at z -> oo", sp.limit(boundary, z, sp.oo), 0),
        equal("boundary term at z = 0 (2p + 1 >= 1)", boundary.subs(z, 0), 0),
        # So M_{p+1} = (2p + 1) s M_p; with the hypothesis M_p = closed, M_{p+1} must equal closed_next.
        equal("step: (2p + 1) s (2p - 1)!! s^p / 2 = (2p + 1)!! s^(p+1) / 2",
              sp.gammasimp((recursion_factor * (2 * p + 1) * s * closed).doit()), sp.gammasimp(closed_next.doit())),
        equal("symmetry: z^(2p) phi_s(z) is even, so E z^(2p) = 2 E relu(z)^(2p)",
              (z ** (2 * p) * density).subs(z, -z), z ** (2 * p) * density),
    ]
    return conclude(steps, "M_p = int_0^oo z^(2p) phi_s(z) dz; hypothesis M_p = (2p - 1)!! s^p / 2;")


def _gaussian_mgf(square_coefficient: int) -> Verdict:
    """E e^(t z) = e^(t^2 s / 2) for z ~ N(0, s), every real t (completing the square)."""
    z, t, c = symbols("z t c", real=True)
    (s,) = symbols("s", positive=True)
    density = sp.exp(-z**2 / (2 * s)) / sp.sqrt(2 * sp.pi * s)
    steps = [
        equal("complete the square: t z - z^2/(2s) = -(z - s t)^2/(2s) + s t^2/2", t * z - z**2 / (2 * s),
              -((z - s * t) ** 2) / (2 * s) + s * t**2 / square_coefficient),
        equal("a shifted Gaussian has mass 1", sp.integrate(density.subs(z, z - c), (z, -sp.oo, sp.oo)), 1),
    ]
    return conclude(steps, "E e^(t z) = e^(s t^2 / 2) int phi_s(z - s t) dz;")


def _chi2_mgf(factor: int) -> Verdict:
    """E e^(a X) = (1 - 2a)^(-d/2) for X ~ chi^2_d iff a < 1/2; for the exp SNR, a < 1/2 iff tau > 2(sqrt 2 - 1)."""
    d, lam, k = symbols("d lam k", positive=True)
    x = sp.Symbol("x", positive=True)
    a = sp.Rational(1, 2) - lam
    tau = sp.Symbol("tau", positive=True)
    domain = sp.solve_univariate_inequality(2 * (1 - tau) / tau**2 < sp.Rational(1, 2), tau, relational=False)
    steps = [
        equal("a = 1/2 - lam, lam > 0: int x^(d/2-1) e^(-lam x) dx / (2^(d/2) Gamma(d/2)) = (1 - 2a)^(-d/2)",
              gamma_integral(d / 2, lam) / (2 ** (d / 2) * sp.gamma(d / 2)), (1 - factor * a) ** (-d / 2)),
        equal("a >= 1/2: the integrand is >= x^(d/2-1) e^0 on [1, oo), whose integral diverges",
              sp.integrate(x ** (k - 1), (x, 1, sp.oo)), sp.oo),
        Step("a = 2(1 - tau)/tau^2 < 1/2 with tau > 0 iff tau > 2(sqrt 2 - 1)",
             domain.intersect(sp.Interval.open(0, sp.oo)) == sp.Interval.open(2 * (sp.sqrt(2) - 1), sp.oo),
             f"sympy solves the inequality to {domain}"),
    ]
    return conclude(steps, "X ~ chi^2_d has density x^(d/2-1) e^(-x/2) / (2^(d/2) Gamma(d/2)), d > 0;")


def _chi2_inverse(shift: int) -> Verdict:
    """E[1/X] = 1/(d - 2) for X ~ chi^2_d, d > 2; infinite for d <= 2. Hence E[d_v/||v||^2] = d_v/(d_v - 2)."""
    (d,) = symbols("d", positive=True)
    k = d / 2 - 1
    steps = [
        equal("d > 2: int x^(d/2-2) e^(-x/2) dx / (2^(d/2) Gamma(d/2)) = 1/(d - 2) (Gamma integral, k = d/2 - 1)",
              sp.gammasimp(gamma_integral(k, sp.Rational(1, 2)) / (2 ** (d / 2) * sp.gamma(d / 2))), 1 / (d - shift)),
        equal("SNR.4: d_v E[1/||v||^2] = d_v/(d_v - 2)", d * (1 / (d - 2)), d / (d - shift)),
        *_diverges_at_zero(),
    ]
    return conclude(steps, "d <= 2 means k = d/2 - 1 <= 0, where the integrand ~ x^(k-1) near 0 diverges;")


def _chi2_negative_moments(shift: int) -> Verdict:
    """E[X^-p] = prod_{m=1}^p 1/(d - 2m) for X ~ chi^2_d, d > 2p, every p >= 0 (induction on p); infinite if d <= 2p."""
    (d,) = symbols("d", positive=True)
    p = sp.Symbol("p", integer=True, nonnegative=True)
    m = sp.Symbol("m", integer=True, positive=True)

    def moment(order: Expr) -> Expr:
        """E[X^-order] = Gamma(d/2 - order) / (2^order Gamma(d/2)), from the Gamma integral with k = d/2 - order."""
        return gamma_integral(d / 2 - order, sp.Rational(1, 2)) / (2 ** (d / 2) * sp.gamma(d / 2))

    product = sp.Product(1 / (d - 2 * m), (m, 1, p))
    steps = [
        equal("base p = 0: E[X^0] = 1 = empty product", sp.gammasimp(moment(0)), 1),
        equal("E[X^-p] = Gamma(d/2 - p) / (2^p Gamma(d/2))", sp.gammasimp(moment(p)),
              sp.gamma(d / 2 - p) / (2**p * sp.gamma(d / 2))),
        equal("step: E[X^-(p+1)] / E[X^-p] = 1/(d - 2(p + 1))", sp.gammasimp(moment(p + 1) / moment(p)),
              1 / (d - 2 * p - shift)),
        equal("the product grows by the same factor", sp.gammasimp((sp.Product(1 / (d - 2 * m), (m, 1, p + 1))
                                                                   / product).doit()), 1 / (d - 2 * p - 2)),
        *_diverges_at_zero(),
    ]
    return conclude(steps, "k = d/2 - p > 0 iff d > 2p; for d <= 2p the integrand ~ x^(k-1) near 0 diverges;")


PROOFS: tuple[Proof, ...] = (
    declare("SNR.10-lemma", "E relu(z)^(2p) = (2p - 1)!! s^p / 2 and E z^(2p) = (2p - 1)!! s^p for z ~ N(0, s)",
            "C2", "symbolic", "all p >= 0, s > 0 (induction on p by parts)", lambda: _relu_moments(1),
            "recursion M_{p+1} = 2 (2p + 1) s M_p", lambda: _relu_moments(2)),
    declare("SNR.11-lemma", "Gaussian MGF: E e^(t z) = e^(t^2 s / 2) for z ~ N(0, s)", "C3", "symbolic",
            "all real t, s > 0", lambda: _gaussian_mgf(2), "e^(t^2 s)", lambda: _gaussian_mgf(1)),
    declare("SNR.19-lemma", "chi-square MGF: E e^(a X) = (1 - 2a)^(-d/2) iff a < 1/2, i.e. tau > 2(sqrt 2 - 1) for "
            "the exp kernel's a = 2(1 - tau)/tau^2", "C3", "symbolic", "all d > 0, a < 1/2; divergence for "
            "a >= 1/2", lambda: _chi2_mgf(2), "(1 - a)^(-d/2)", lambda: _chi2_mgf(1)),
    declare("SNR.4-lemma", "E[1/chi^2_d] = 1/(d - 2) for d > 2 (infinite for d <= 2); E[d_v/||v||^2] = "
            "d_v/(d_v - 2)", "C1", "symbolic", "all real d > 2", lambda: _chi2_inverse(2), "1/(d - 1)",
            lambda: _chi2_inverse(1)),
    declare("SNR.16-lemma", "E[(chi^2_d)^-p] = prod_{m=1}^p 1/(d - 2m) for d > 2p (infinite for d <= 2p)", "C2",
            "symbolic", "all p >= 0 (induction on p), all real d > 2p", lambda: _chi2_negative_moments(2),
            "factor 1/(d - 2p - 1)", lambda: _chi2_negative_moments(1)),
)
