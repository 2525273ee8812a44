"""Retrieval signal-to-noise ratio (equations.md section 2): closed forms, one equation per function.

Setting (the paper's): N pairs with i.i.d. keys k_j ~ N(0, I_{d_k}) and values v_j ~ N(0, I_{d_v}), all
independent; retrieve pair i with q = k_i from a kernel memory (``spec.memory``). The read is c v_i + r with
c = kappa(k_i, k_i) and r = sum_{j != i} v_j kappa(k_j, k_i). Every kernel here is a dot-product kernel,
kappa(k, x) = f(k^T x), so for a fixed k_i only the Gaussian scalar k_j^T k_i ~ N(0, ||k_i||^2) matters, and
every conditional quantity depends on k_i only through s = ||k_i||^2 (the ``key_sq_norm`` argument).

Two normalisations of the value energy, both exact (docs/derivations/snr.md, section 2):

- *value-averaged* (the default, and what equations.md's conditional forms are): SNR^-1(k_i) = E||r||^2 /
  (c^2 E||v_i||^2) = (N - 1) E_k[kappa^2(k, k_i)] / kappa^2(k_i, k_i);
- *ratio*: the definition SNR.1 with ||v_i||^2 kept in the denominator and averaged over v_i as well; it is the
  value-averaged form times E[d_v / ||v_i||^2] = d_v / (d_v - 2) (SNR.4), finite only for d_v > 2.

"conditional" means given k_i (through s); "unconditional" averages over k_i ~ N(0, I_{d_k}) as well; "scaling"
is the paper's typical-key approximation (s = d_k, N for N - 1). Required feature dimensions solve
SNR^-1 <= eps for d_k.

Arguments are Python/NumPy numbers or ``mpmath.mpf``; if any argument is an mpf the computation runs in mpmath at
the working precision (``spec.precision.workdps``), otherwise in float64. Counts (N, p) are ints; dimensions
(d_k, d_v) may be real, as the closed forms extend to real values.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import mpmath
import numpy as np

from spec import _validate, precision
from spec._types import Array

__all__ = [
    "EXP_TAU_MIN",
    "kappa_sq_mean_exp",
    "kappa_sq_mean_linear",
    "kappa_sq_mean_relu_power",
    "required_dk_exp_sqrt",
    "required_dk_exp_sqrt_exact",
    "required_dk_exp_tau2",
    "required_dk_exp_tau2_exact",
    "required_dk_linear",
    "required_dk_linear_exact",
    "snr_inv",
    "snr_inv_exp_conditional",
    "snr_inv_exp_scaling",
    "snr_inv_exp_unconditional",
    "snr_inv_kernel",
    "snr_inv_kernel_paper",
    "snr_inv_linear_conditional",
    "snr_inv_linear_scaling",
    "snr_inv_linear_unconditional",
    "snr_inv_linear_unconditional_ratio",
    "snr_inv_relu_conditional",
    "snr_inv_relu_power_conditional",
    "snr_inv_relu_power_scaling",
    "snr_inv_relu_power_unconditional",
    "snr_inv_relu_scaling",
    "value_ratio_factor",
]

Real = Any
"""A real scalar: float (or NumPy float) or mpmath.mpf."""

EXP_TAU_MIN = 2 * (math.sqrt(2) - 1)
"""SNR.19 diverges for tau <= 2 (sqrt 2 - 1) ~ 0.8284: there E_{k_i}[exp(2 (1 - tau) ||k_i||^2 / tau^2)] = inf."""


def _elementary(fn: Callable[[Array], Array], x: Real) -> Real:
    """Apply a ``spec.precision`` function (exp, log, sqrt) to one scalar, keeping its number type."""
    return fn(np.asarray(x))[()]


def _reals(*pairs: tuple[str, Any]) -> list[Real]:
    """Validate positive real scalars; lift all of them to mpmath if any is an mpf (float64 converts exactly)."""
    values = [_validate.scalar(name, x, positive=True) for name, x in pairs]
    if any(isinstance(x, mpmath.mpf) for x in values):
        return [mpmath.mpf(x) for x in values]
    return values


def _count(name: str, x: Any) -> int:
    return _validate.positive_int(name, x)


def _double_factorial_odd(p: int) -> int:
    """(2p - 1)!! = 1 * 3 * ... * (2p - 1), exactly."""
    return math.prod(range(1, 2 * p, 2))


def _above(name: str, x: Real, lower: Real, why: str) -> None:
    if not x > lower:
        raise ValueError(f"{name} must be > {lower} ({why}), got {x}")


# --- general definitions


def snr_inv(noise_energy: Any, c: Any, value_energy: Any) -> Real:
    """SNR.1 [derived]: SNR^-1 = E||r||^2 / (c^2 ||v_i||^2), the noise energy over the signal energy.

    Our formalisation of the paper's retrieval SNR: the source documents name the metric, not its formula.
    noise_energy = E_{v_j, k_j}||r||^2 >= 0, c = kappa(k_i, k_i) != 0 (AM.7), value_energy = ||v_i||^2 > 0
    (or E||v_i||^2 = d_v for the value-averaged normalisation). Scalars -> scalar.
    """
    noise = _validate.scalar("noise_energy", noise_energy)
    if noise < 0:
        raise ValueError(f"noise_energy must be >= 0 (it is E||r||^2), got {noise}")
    c = _validate.scalar("c", c)
    if c == 0:
        raise ValueError("c must be nonzero (the signal coefficient kappa(k_i, k_i)), got 0")
    (energy,) = _reals(("value_energy", value_energy))
    return noise / (c**2 * energy)


def snr_inv_kernel_paper(N: Any, kappa_sq_mean: Any, c: Any) -> Real:
    """SNR.2 [derived]: SNR^-1_kappa = N E_{k_j}[kappa^2(k_j, k_i)] / kappa^2(k_i, k_i), any kernel.

    The paper-style form with N noise terms (an approximation; SNR.3 is exact): from SNR.1 with zero-mean values;
    the source documents state only its N/d_k and N/exp(...) scalings. kappa_sq_mean = E_k[kappa^2(k, k_i)]
    (SNR.9-11 or ``spec.snr_estimators.kappa_sq_mean_quadrature``), c = kappa(k_i, k_i).
    """
    N = _count("N", N)
    m2, c = _reals(("kappa_sq_mean", kappa_sq_mean), ("c", c))
    return N * m2 / c**2


def snr_inv_kernel(N: Any, kappa_sq_mean: Any, c: Any) -> Real:
    """SNR.3 [derived]: SNR^-1(k_i) = (N - 1) E_{k_j}[kappa^2(k_j, k_i)] / kappa^2(k_i, k_i), exactly.

    Exact for i.i.d. zero-mean values independent of the keys, normalised by E||v_i||^2 = d_v: then
    E||r||^2 = (N - 1) d_v E[kappa^2] (cross terms vanish). N >= 1 (N = 1: no noise).
    """
    N = _count("N", N)
    m2, c = _reals(("kappa_sq_mean", kappa_sq_mean), ("c", c))
    return (N - 1) * m2 / c**2


def value_ratio_factor(d_v: Any) -> Real:
    """SNR.4 [derived]: E[d_v / ||v_i||^2] = d_v / (d_v - 2) for v_i ~ N(0, I_{d_v}), d_v > 2.

    Multiplies any value-averaged SNR^-1 into the ratio normalisation (||v_i||^2 in the denominator, averaged over
    v_i). Infinite for d_v <= 2 (E[1/chi^2_{d_v}] diverges), so those raise ValueError.
    """
    (d_v,) = _reals(("d_v", d_v))
    _above("d_v", d_v, 2, "E[1/||v_i||^2] diverges for d_v <= 2")
    return d_v / (d_v - 2)


# --- second moments of the kernel under a Gaussian key


def kappa_sq_mean_linear(key_sq_norm: Any) -> Real:
    """SNR.9 [derived]: E_k[(k^T x)^2] = ||x||^2 for k ~ N(0, I). key_sq_norm = ||x||^2 > 0."""
    (s,) = _reals(("key_sq_norm", key_sq_norm))
    return s


def kappa_sq_mean_relu_power(key_sq_norm: Any, p: Any) -> Real:
    """SNR.10 [derived]: E_k[relu(k^T x)^{2p}] = (2p - 1)!! / 2 * ||x||^{2p} for k ~ N(0, I), p >= 1.

    k^T x ~ N(0, s): half the even Gaussian moment E[z^{2p}] = (2p - 1)!! s^p, by symmetry.
    """
    p = _count("p", p)
    (s,) = _reals(("key_sq_norm", key_sq_norm))
    return _double_factorial_odd(p) * s**p / 2


def kappa_sq_mean_exp(key_sq_norm: Any, tau: Any) -> Real:
    """SNR.11 [derived]: E_k[exp(2 k^T x / tau)] = exp(2 ||x||^2 / tau^2) for k ~ N(0, I) (Gaussian MGF)."""
    s, tau = _reals(("key_sq_norm", key_sq_norm), ("tau", tau))
    return _elementary(precision.exp, 2 * s / tau**2)


# --- linear kernel


def snr_inv_linear_conditional(N: Any, key_sq_norm: Any) -> Real:
    """SNR.5 [derived]: SNR^-1(k_i) = (N - 1) / ||k_i||^2, linear kernel, value-averaged, exact.

    Given k_i and ||v_i||^2, the ratio normalisation is (N - 1) d_v / (||k_i||^2 ||v_i||^2).
    """
    N = _count("N", N)
    (s,) = _reals(("key_sq_norm", key_sq_norm))
    return (N - 1) / s


def snr_inv_linear_scaling(N: Any, d_k: Any) -> Real:
    """SNR.6 [paper]: SNR^-1 ~ N / d_k, linear kernel (typical key ||k_i||^2 = d_k, N for N - 1)."""
    N = _count("N", N)
    (d_k,) = _reals(("d_k", d_k))
    return N / d_k


def snr_inv_linear_unconditional(N: Any, d_k: Any) -> Real:
    """SNR.7 [derived]: E_{k_i}[(N - 1) / ||k_i||^2] = (N - 1) / (d_k - 2), linear kernel, value-averaged.

    E[1/chi^2_{d_k}] = 1/(d_k - 2); needs d_k > 2 (real d_k allowed).
    """
    N = _count("N", N)
    (d_k,) = _reals(("d_k", d_k))
    _above("d_k", d_k, 2, "E[1/||k_i||^2] diverges for d_k <= 2")
    return (N - 1) / (d_k - 2)


def snr_inv_linear_unconditional_ratio(N: Any, d_k: Any, d_v: Any) -> Real:
    """SNR.8 [derived]: E[||r||^2 / (c^2 ||v_i||^2)] = (N - 1) / (d_k - 2) * d_v / (d_v - 2), linear kernel.

    The ratio normalisation averaged over k_i and v_i too (equations.md's unconditional mean; the factor
    d_v/(d_v - 2) belongs exactly when ||v_i||^2 stays inside the expectation). d_k > 2, d_v > 2.
    """
    N = _count("N", N)
    d_k, d_v = _reals(("d_k", d_k), ("d_v", d_v))
    _above("d_k", d_k, 2, "E[1/||k_i||^2] diverges for d_k <= 2")
    _above("d_v", d_v, 2, "E[1/||v_i||^2] diverges for d_v <= 2")
    return (N - 1) / (d_k - 2) * d_v / (d_v - 2)


# --- ReLU and ReLU^p


def snr_inv_relu_conditional(N: Any, key_sq_norm: Any) -> Real:
    """SNR.12 [derived]: SNR^-1(k_i) = (N - 1) / (2 ||k_i||^2), kappa(x, y) = relu(x^T y), value-averaged, exact."""
    N = _count("N", N)
    (s,) = _reals(("key_sq_norm", key_sq_norm))
    return (N - 1) / (2 * s)


def snr_inv_relu_scaling(N: Any, d_k: Any) -> Real:
    """SNR.13 [derived]: SNR^-1 ~ N / (2 d_k), ReLU kernel (typical key ||k_i||^2 = d_k, N for N - 1)."""
    N = _count("N", N)
    (d_k,) = _reals(("d_k", d_k))
    return N / (2 * d_k)


def snr_inv_relu_power_conditional(N: Any, key_sq_norm: Any, p: Any) -> Real:
    """SNR.14 [derived]: SNR^-1(k_i) = (N - 1) (2p - 1)!! / (2 ||k_i||^{2p}), kappa = relu(x^T y)^p, exact.

    From SNR.3 with SNR.10 and c = ||k_i||^{2p}. p = 1 is SNR.12.
    """
    N = _count("N", N)
    p = _count("p", p)
    (s,) = _reals(("key_sq_norm", key_sq_norm))
    return (N - 1) * _double_factorial_odd(p) / (2 * s**p)


def snr_inv_relu_power_scaling(N: Any, d_k: Any, p: Any) -> Real:
    """SNR.15 [derived]: SNR^-1 ~ (2p - 1)!! N / (2 d_k^p), ReLU^p (typical key ||k_i||^2 = d_k, N for N - 1)."""
    N = _count("N", N)
    p = _count("p", p)
    (d_k,) = _reals(("d_k", d_k))
    return _double_factorial_odd(p) * N / (2 * d_k**p)


def snr_inv_relu_power_unconditional(N: Any, d_k: Any, p: Any) -> Real:
    """SNR.16 [derived]: E_{k_i} SNR^-1 = (N - 1) (2p - 1)!! / 2 * prod_{m=1}^{p} 1 / (d_k - 2m), ReLU^p.

    E[(chi^2_{d_k})^{-p}] = Gamma(d_k/2 - p) / (2^p Gamma(d_k/2)) = prod_{m=1}^{p} 1/(d_k - 2m); needs d_k > 2p.
    """
    N = _count("N", N)
    p = _count("p", p)
    (d_k,) = _reals(("d_k", d_k))
    _above("d_k", d_k, 2 * p, f"E[||k_i||^(-2p)] diverges for d_k <= 2p = {2 * p}")
    product = d_k * 0 + 1
    for m in range(1, p + 1):
        product = product * (d_k - 2 * m)
    return (N - 1) * _double_factorial_odd(p) / (2 * product)


# --- exponential kernel


def snr_inv_exp_conditional(N: Any, key_sq_norm: Any, tau: Any) -> Real:
    """SNR.17 [derived]: SNR^-1(k_i) = (N - 1) exp(2 (1 - tau) ||k_i||^2 / tau^2), kappa = exp(x^T y / tau), exact.

    SNR.3 with E[kappa^2] = exp(2 s / tau^2) (SNR.11) and c^2 = exp(2 s / tau). The paper's form (SNR.18) has N
    for N - 1 [reconstructed]. At tau = 1 it is N - 1 for every k_i; it decreases in s for tau > 1.
    """
    N = _count("N", N)
    s, tau = _reals(("key_sq_norm", key_sq_norm), ("tau", tau))
    return (N - 1) * _elementary(precision.exp, 2 * (1 - tau) * s / tau**2)


def snr_inv_exp_scaling(N: Any, d_k: Any, tau: Any) -> Real:
    """SNR.18 [reconstructed]: SNR^-1_exp ~ N exp(2 (1 - tau) d_k / tau^2) (typical key ||k_i||^2 = d_k).

    tau = sqrt(d_k) gives N exp(2 - 2 sqrt(d_k)); tau = 2 (the minimiser of (1 - tau)/tau^2) gives N exp(-d_k/2).
    """
    N = _count("N", N)
    d_k, tau = _reals(("d_k", d_k), ("tau", tau))
    return N * _elementary(precision.exp, 2 * (1 - tau) * d_k / tau**2)


def snr_inv_exp_unconditional(N: Any, d_k: Any, tau: Any) -> Real:
    """SNR.19 [derived]: E_{k_i} SNR^-1_exp = (N - 1) (1 - 4 (tau^-2 - tau^-1))^{-d_k/2}, tau > 2 (sqrt 2 - 1).

    The chi^2_{d_k} MGF E[exp(a s)] = (1 - 2a)^{-d_k/2} at a = 2 (1 - tau) / tau^2, finite iff a < 1/2, i.e.
    tau > 2 (sqrt 2 - 1) ~ 0.828 (``EXP_TAU_MIN``); at and below it the average is infinite (ValueError).
    tau = 1 gives N - 1, tau = 2 gives (N - 1) 2^{-d_k/2}.
    """
    N = _count("N", N)
    d_k, tau = _reals(("d_k", d_k), ("tau", tau))
    base = 1 - 4 * (1 / tau**2 - 1 / tau)
    _above("tau", tau, EXP_TAU_MIN, "the average over k_i diverges for tau <= 2 (sqrt 2 - 1)")
    if not base > 0:
        raise ValueError(f"tau must be > 2 (sqrt 2 - 1) (the average over k_i diverges), got {tau}")
    return (N - 1) * _elementary(precision.exp, -d_k / 2 * _elementary(precision.log, base))


# --- required feature dimension


def required_dk_linear(N: Any, eps: Any) -> Real:
    """SNR.20 [derived]: SNR^-1 <= eps needs d_k >= N / eps (linear kernel, from the scaling SNR.6)."""
    N = _count("N", N)
    (eps,) = _reals(("eps", eps))
    return N / eps


def required_dk_exp_sqrt(N: Any, eps: Any) -> Real:
    """SNR.21 [derived]: SNR^-1 <= eps needs d_k >= (1 + ln(N / eps) / 2)^2 (exp, tau = sqrt(d_k), from SNR.18).

    N exp(2 - 2 sqrt(d_k)) <= eps <=> sqrt(d_k) >= 1 + ln(N/eps)/2 (for N >= eps): O(log^2 N).
    """
    N = _count("N", N)
    (eps,) = _reals(("eps", eps))
    return (1 + _elementary(precision.log, N / eps) / 2) ** 2


def required_dk_exp_tau2(N: Any, eps: Any) -> Real:
    """SNR.22 [derived]: SNR^-1 <= eps needs d_k >= 2 ln(N / eps) (exp, tau = 2, from SNR.18): O(log N)."""
    N = _count("N", N)
    (eps,) = _reals(("eps", eps))
    return 2 * _elementary(precision.log, N / eps)


def required_dk_linear_exact(N: Any, eps: Any) -> Real:
    """SNR.23 [derived]: E_{k_i} SNR^-1 <= eps needs d_k >= 2 + (N - 1) / eps (linear, from SNR.7, exact)."""
    N = _count("N", N)
    (eps,) = _reals(("eps", eps))
    return 2 + (N - 1) / eps


def required_dk_exp_tau2_exact(N: Any, eps: Any) -> Real:
    """SNR.24 [derived]: E_{k_i} SNR^-1 <= eps needs d_k >= 2 log2((N - 1) / eps) (exp, tau = 2, from SNR.19).

    (N - 1) 2^{-d_k/2} <= eps. The constant is 2/ln 2 ~ 2.885 per nat, not SNR.22's 2: averaging exp(-s/2) over
    s ~ chi^2_{d_k} gives 2^{-d_k/2} > e^{-d_k/2} (Jensen). A value <= 0 means every d_k > 0 suffices. N >= 2.
    """
    N = _count("N", N)
    _above("N", N, 1, "N = 1 has no noise")
    (eps,) = _reals(("eps", eps))
    return 2 * _elementary(precision.log, (N - 1) / eps) / _elementary(precision.log, eps * 0 + 2)


def required_dk_exp_sqrt_exact(N: Any, eps: Any) -> Real:
    """SNR.25 [derived]: min{d_k >= 1 : (N - 1) (1 + 4/sqrt(d_k) - 4/d_k)^{-d_k/2} <= eps} (exp, tau = sqrt(d_k)).

    SNR.19 with tau = sqrt(d_k), solved for real d_k by bisection to the working precision (the left side
    decreases in d_k >= 1, and equals N - 1 at d_k = 1). With L = ln((N - 1)/eps): sqrt(d_k) = 3 + L/2 - O(1/L),
    against SNR.21's 1 + ln(N/eps)/2: the same O(log^2 N), a larger constant. Returns 1 when N - 1 <= eps.
    """
    N = _count("N", N)
    (eps,) = _reals(("eps", eps))
    one = eps * 0 + 1

    def excess(d: Real) -> Real:
        """ln SNR^-1(d) - ln eps, decreasing in d."""
        base = 1 + 4 / _elementary(precision.sqrt, d) - 4 / d
        return _elementary(precision.log, (N - 1) / eps) - d / 2 * _elementary(precision.log, base)

    if eps >= N - 1:
        return one
    low, high = one, 16 * one
    while excess(high) > 0:
        low, high = high, 4 * high
    tolerance = high * (mpmath.eps if isinstance(one, mpmath.mpf) else np.finfo(np.float64).eps) * 4
    while high - low > tolerance:
        middle = (low + high) / 2
        if excess(middle) > 0:
            low = middle
        else:
            high = middle
    return high
