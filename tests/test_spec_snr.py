"""spec.snr (SNR.1-25) and spec.snr_estimators (SNR.30-40): closed forms against quadrature and Monte Carlo.

Error models:
- mpmath quadrature at DPS digits of an analytic integrand split at its kinks/peaks is accurate to about DPS
  digits; closed forms evaluated at DPS digits likewise. We allow 8 digits of margin: relative error <= 10^(8-DPS).
- float64 closed forms: a handful of operations (<= 10 roundings, one exp/log of an argument of size A amplifies
  by A), so relative error <= 64 u (1 + A) against the same form evaluated in mpmath.
- Monte Carlo: the closed form must lie within Z = 4 standard errors of the estimate (two-sided level 6.3e-5 per
  comparison; seeds are fixed, so the tests are deterministic). Each MC test also checks that a 10% error or N for
  N - 1 would be detected: the relative standard error is small enough that 4 se < the gap.
"""

from __future__ import annotations

import functools
import math

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spec import kernels, memory, precision, snr
from spec import snr_estimators as est

U = 2.0**-53
DPS = 30
Z = 4.0


def _rel(a: object, b: object) -> float:
    return float(abs(mpmath.mpf(a) - mpmath.mpf(b)) / abs(mpmath.mpf(b)))


QUAD_TOL = 10.0 ** (8 - DPS)


# --- closed forms against mpmath quadrature


@settings(max_examples=6)
@given(s=st.floats(0.5, 60.0), p=st.integers(1, 4), N=st.integers(1, 1000))
def test_relu_power_closed_forms_equal_quadrature_over_the_gaussian_projection(s: float, p: int, N: int) -> None:
    # Catches a wrong double factorial, a missing 1/2 (the ReLU's half line), or N for N - 1.
    with precision.workdps(DPS):
        s_mp = mpmath.mpf(s)
        kernel = kernels.relu_kernel if p == 1 else functools.partial(kernels.relu_power_kernel, p=p)
        m2 = est.kappa_sq_mean_quadrature(kernel, s_mp)
        assert _rel(snr.kappa_sq_mean_relu_power(s_mp, p), m2) <= QUAD_TOL
        assert _rel(snr.snr_inv_relu_power_conditional(max(N, 2), s_mp, p),
                    snr.snr_inv_kernel(max(N, 2), m2, s_mp**p)) <= QUAD_TOL
        if p == 1:
            relu_form = snr.snr_inv_relu_conditional(max(N, 2), s_mp)
            assert _rel(relu_form, snr.snr_inv_kernel(max(N, 2), m2, s_mp)) <= QUAD_TOL


@settings(max_examples=6)
@given(s=st.floats(0.5, 40.0), tau=st.floats(0.9, 8.0))
def test_exp_closed_forms_equal_quadrature_over_the_gaussian_projection(s: float, tau: float) -> None:
    # The integrand peaks at t = 2 sqrt(s) / tau standard deviations; the quadrature is told where.
    with precision.workdps(DPS):
        s_mp, tau_mp = mpmath.mpf(s), mpmath.mpf(tau)
        m2 = est.kappa_sq_mean_quadrature(functools.partial(kernels.exp_kernel, tau=tau_mp), s_mp,
                                        points=[2 * mpmath.sqrt(s_mp) / tau_mp])
        assert _rel(snr.kappa_sq_mean_exp(s_mp, tau_mp), m2) <= QUAD_TOL
        c = mpmath.exp(s_mp / tau_mp)
        assert _rel(snr.snr_inv_exp_conditional(17, s_mp, tau_mp), snr.snr_inv_kernel(17, m2, c)) <= QUAD_TOL


def test_linear_second_moment_equals_quadrature() -> None:
    with precision.workdps(DPS):
        for s in (0.25, 3.0, 77.5):
            m2 = est.kappa_sq_mean_quadrature(kernels.linear_kernel, mpmath.mpf(s))
            assert _rel(snr.kappa_sq_mean_linear(mpmath.mpf(s)), m2) <= QUAD_TOL
            assert _rel(snr.snr_inv_linear_conditional(9, mpmath.mpf(s)), snr.snr_inv_kernel(9, m2, s)) <= QUAD_TOL


@pytest.mark.parametrize("d_k", [3, 5, 16, 41])
def test_linear_unconditional_forms_equal_chi_square_quadrature(d_k: int) -> None:
    with precision.workdps(DPS):
        average = est.chi2_average_quadrature(lambda s: snr.snr_inv_linear_conditional(12, s), d_k)
        assert _rel(snr.snr_inv_linear_unconditional(12, mpmath.mpf(d_k)), average) <= QUAD_TOL
        value_factor = est.chi2_average_quadrature(lambda s: mpmath.mpf(7) / s, 7)
        assert _rel(snr.value_ratio_factor(mpmath.mpf(7)), value_factor) <= QUAD_TOL
        assert _rel(snr.snr_inv_linear_unconditional_ratio(12, mpmath.mpf(d_k), 7), average * value_factor) <= QUAD_TOL


@pytest.mark.parametrize(("d_k", "p"), [(3, 1), (7, 3), (24, 2), (30, 5)])
def test_relu_power_unconditional_form_equals_chi_square_quadrature(d_k: int, p: int) -> None:
    with precision.workdps(DPS):
        average = est.chi2_average_quadrature(lambda s: snr.snr_inv_relu_power_conditional(5, s, p), d_k)
        assert _rel(snr.snr_inv_relu_power_unconditional(5, mpmath.mpf(d_k), p), average) <= QUAD_TOL


@pytest.mark.parametrize(("d_k", "tau"), [(1, 1.0), (16, 2.0), (16, 4.0), (64, 8.0), (9, 0.9), (4, 30.0)])
def test_exp_unconditional_form_equals_chi_square_quadrature(d_k: int, tau: float) -> None:
    with precision.workdps(DPS):
        tau_mp = mpmath.mpf(tau)
        average = est.chi2_average_quadrature(lambda s: snr.snr_inv_exp_conditional(5, s, tau_mp), d_k)
        assert _rel(snr.snr_inv_exp_unconditional(5, mpmath.mpf(d_k), tau_mp), average) <= QUAD_TOL


def test_exp_unconditional_average_diverges_at_the_stated_temperature() -> None:
    # Below tau = 2 (sqrt 2 - 1) the integrand exp((a - 1/2) s) s^{d/2 - 1} grows: the spec must refuse, and just
    # above it the average must be huge (it blows up like (1 - 2a)^{-d/2}).
    assert pytest.approx(0.8284271247461903, rel=4 * U) == snr.EXP_TAU_MIN
    with pytest.raises(ValueError, match=r"tau must be > 0\.828"):
        snr.snr_inv_exp_unconditional(10, 4, 0.8)
    near = snr.snr_inv_exp_unconditional(10, 4, snr.EXP_TAU_MIN + 1e-3)
    assert near > 1e4 * snr.snr_inv_exp_unconditional(10, 4, 1.0)


# --- identities between the forms


@given(N=st.integers(2, 10**6), d_k=st.floats(1.0, 200.0), tau=st.floats(0.9, 50.0))
def test_scaling_forms_are_the_conditional_forms_at_a_typical_key_with_n_for_n_minus_1(
        N: int, d_k: float, tau: float) -> None:
    ratio = N / (N - 1)
    argument = abs(2 * (1 - tau) * d_k / tau**2)
    assert snr.snr_inv_exp_scaling(N, d_k, tau) == pytest.approx(ratio * snr.snr_inv_exp_conditional(N, d_k, tau),
                                                                rel=64 * U * (1 + argument), abs=1e-300)
    assert snr.snr_inv_linear_scaling(N, d_k) == pytest.approx(ratio * snr.snr_inv_linear_conditional(N, d_k),
                                                                rel=16 * U)
    assert snr.snr_inv_relu_scaling(N, d_k) == pytest.approx(ratio * snr.snr_inv_relu_conditional(N, d_k), rel=16 * U)
    for p in (1, 2, 3):
        assert snr.snr_inv_relu_power_scaling(N, d_k, p) == pytest.approx(
            ratio * snr.snr_inv_relu_power_conditional(N, d_k, p), rel=32 * U)


def test_exp_scaling_special_temperatures_match_the_paper() -> None:
    for d_k in (4.0, 16.0, 64.0, 100.0):
        assert snr.snr_inv_exp_scaling(50, d_k, math.sqrt(d_k)) == pytest.approx(
            50 * math.exp(2 - 2 * math.sqrt(d_k)), rel=64 * U * d_k)
        assert snr.snr_inv_exp_scaling(50, d_k, 2.0) == pytest.approx(50 * math.exp(-d_k / 2), rel=64 * U * d_k)
    # tau = 2 minimises (1 - tau) / tau^2, hence SNR^-1 at a typical key, for every d_k.
    taus = np.linspace(0.5, 10, 951)
    values = [snr.snr_inv_exp_scaling(10, 16.0, t) for t in taus]
    assert taus[int(np.argmin(values))] == pytest.approx(2.0, abs=1e-2)


def test_exp_at_unit_temperature_is_n_minus_1_for_every_key() -> None:
    for s in (0.1, 5.0, 300.0):
        assert snr.snr_inv_exp_conditional(33, s, 1.0) == 32.0
    assert snr.snr_inv_exp_unconditional(33, 16, 1.0) == 32.0


def test_general_kernel_forms_differ_only_by_n_versus_n_minus_1() -> None:
    assert snr.snr_inv_kernel_paper(10, 3.0, 2.0) == 7.5
    assert snr.snr_inv_kernel(10, 3.0, 2.0) == 6.75
    assert snr.snr_inv(6.0, 2.0, 3.0) == 0.5
    assert snr.snr_inv_kernel(1, 3.0, 2.0) == 0.0


def test_closed_forms_run_in_mpmath_and_agree_with_float64() -> None:
    cases = [
        (snr.snr_inv_exp_conditional, (9, 14.5, 1.7)), (snr.snr_inv_exp_unconditional, (9, 14.5, 1.7)),
        (snr.snr_inv_relu_power_unconditional, (9, 14.5, 3)), (snr.snr_inv_linear_unconditional_ratio, (9, 14.5, 6)),
        (snr.required_dk_exp_sqrt, (1000, 0.01)), (snr.required_dk_exp_tau2_exact, (1000, 0.01)),
    ]
    with precision.workdps(40):
        for fn, args in cases:
            lifted = tuple(mpmath.mpf(a) if isinstance(a, float) else a for a in args)
            exact = fn(*lifted)
            assert isinstance(exact, mpmath.mpf), fn.__name__
            assert _rel(fn(*args), exact) <= 256 * U, fn.__name__


# --- required dimensions


@given(N=st.integers(2, 10**9), eps=st.floats(1e-4, 0.5))
def test_required_dimensions_meet_the_target_exactly(N: int, eps: float) -> None:
    # Each required d_k, put back into the form it was solved from, must give SNR^-1 = eps.
    d = snr.required_dk_linear(N, eps)
    assert snr.snr_inv_linear_scaling(N, d) == pytest.approx(eps, rel=8 * U)
    d = snr.required_dk_exp_sqrt(N, eps)
    assert snr.snr_inv_exp_scaling(N, d, math.sqrt(d)) == pytest.approx(eps, rel=64 * U * d)
    d = snr.required_dk_exp_tau2(N, eps)
    assert snr.snr_inv_exp_scaling(N, d, 2.0) == pytest.approx(eps, rel=64 * U * d)
    d = snr.required_dk_linear_exact(N, eps)
    assert snr.snr_inv_linear_unconditional(N, d) == pytest.approx(eps, rel=16 * U)
    if eps < N - 1:
        d = snr.required_dk_exp_tau2_exact(N, eps)
        assert snr.snr_inv_exp_unconditional(N, d, 2.0) == pytest.approx(eps, rel=64 * U * d)
        d = snr.required_dk_exp_sqrt_exact(N, eps)
        assert snr.snr_inv_exp_unconditional(N, d, math.sqrt(d)) == pytest.approx(eps, rel=256 * U * d)


def test_required_dimension_for_exp_at_sqrt_dk_matches_an_independent_root_finder() -> None:
    # mpmath.findroot (secant) on the same equation, at 40 digits, from the paper's approximation as a start.
    with precision.workdps(40):
        for N in (10, 1000, 10**8):
            eps = mpmath.mpf("0.01")
            ours = snr.required_dk_exp_sqrt_exact(N, eps)
            def excess(d: mpmath.mpf, N: int = N, eps: mpmath.mpf = eps) -> mpmath.mpf:
                return mpmath.log(N - 1) - d / 2 * mpmath.log(1 + 4 / mpmath.sqrt(d) - 4 / d) - mpmath.log(eps)

            theirs = mpmath.findroot(excess, snr.required_dk_exp_sqrt(N, eps))
            assert _rel(ours, theirs) <= 1e-35
    assert snr.required_dk_exp_sqrt_exact(2, 5.0) == 1.0


def test_exact_required_dimensions_exceed_the_papers_by_the_derived_constants() -> None:
    # tau = 2: the exact/paper ratio tends to 1/ln 2; tau = sqrt(d_k): sqrt(exact) - sqrt(paper) tends to 2.
    N = 10**30
    assert snr.required_dk_exp_tau2_exact(N, 1e-2) / snr.required_dk_exp_tau2(N, 1e-2) == pytest.approx(
        1 / math.log(2), rel=1e-3)
    gap = math.sqrt(snr.required_dk_exp_sqrt_exact(N, 1e-2)) - math.sqrt(snr.required_dk_exp_sqrt(N, 1e-2))
    assert 1.5 < gap < 2.0


# --- Monte Carlo


def _assert_estimate_matches(estimate: est.MonteCarloEstimate, formula: float, wrong: float) -> None:
    assert estimate.contains(formula), (estimate, formula)
    assert not estimate.contains(wrong), f"the test cannot tell {formula} from {wrong}: {estimate}"


def test_monte_carlo_matches_the_linear_conditional_form_and_can_tell_n_from_n_minus_1() -> None:
    rng = np.random.default_rng(11)
    k_i = rng.standard_normal(12)
    s = float(k_i @ k_i)
    estimate = est.monte_carlo_snr_inv(kernels.linear_kernel, k_i, 8, 6, 20000, rng)
    _assert_estimate_matches(estimate, snr.snr_inv_linear_conditional(8, s), 8 / s)


def test_monte_carlo_with_a_given_value_uses_its_norm() -> None:
    rng = np.random.default_rng(12)
    k_i, v_i = rng.standard_normal(10), rng.standard_normal(5)
    formula = snr.snr_inv_linear_conditional(9, float(k_i @ k_i)) * 5 / float(v_i @ v_i)
    estimate = est.monte_carlo_snr_inv(kernels.linear_kernel, k_i, 9, 5, 20000, rng, v_i=v_i)
    _assert_estimate_matches(estimate, formula, 1.1 * formula)


def test_monte_carlo_ratio_average_includes_the_value_factor() -> None:
    # The unconditional ratio form (N-1)/(d_k-2) * d_v/(d_v-2): without the d_v factor it is 5/3 smaller here.
    estimate = est.monte_carlo_snr_inv_unconditional(kernels.linear_kernel, 12, 9, 5, 20000, np.random.default_rng(13),
                                                   ratio=True)
    _assert_estimate_matches(estimate, snr.snr_inv_linear_unconditional_ratio(9, 12, 5),
                             snr.snr_inv_linear_unconditional(9, 12))


@pytest.mark.parametrize("p", [1, 2])
def test_monte_carlo_matches_the_relu_power_unconditional_form(p: int) -> None:
    kernel = kernels.relu_kernel if p == 1 else functools.partial(kernels.relu_power_kernel, p=p)
    estimate = est.monte_carlo_snr_inv_unconditional(kernel, 20, 12, 4, 10000, np.random.default_rng(14 + p))
    formula = snr.snr_inv_relu_power_unconditional(12, 20, p)
    _assert_estimate_matches(estimate, formula, 12 / 11 * 1.1 * formula)


@pytest.mark.parametrize("tau", [1.0, 2.0, 4.0])
def test_importance_sampling_matches_the_exp_forms(tau: float) -> None:
    rng = np.random.default_rng(20)
    k_i = rng.standard_normal(16)
    s = float(k_i @ k_i)
    conditional = snr.snr_inv_exp_conditional(8, s, tau)
    _assert_estimate_matches(est.importance_snr_inv_exp(k_i, 8, 4, tau, 20000, rng), conditional, conditional * 8 / 7)
    unconditional = snr.snr_inv_exp_unconditional(8, 16, tau)
    _assert_estimate_matches(est.importance_snr_inv_exp_unconditional(16, 8, 4, tau, 20000, rng), unconditional,
                             unconditional * 8 / 7)


def test_importance_sampling_is_unbiased_for_every_tilt_and_exact_at_full_tilt() -> None:
    rng = np.random.default_rng(21)
    k_i = rng.standard_normal(9)
    formula = snr.snr_inv_exp_conditional(6, float(k_i @ k_i), 3.0)
    for tilt in (0.0, 0.5, None):
        assert est.importance_snr_inv_exp(k_i, 6, 3, 3.0, 20000, rng, tilt=tilt).contains(formula)
    # tilt = 1: kappa^2 w / c^2 is the constant E[kappa^2]/c^2 for every key, so a sample is exactly
    # formula / (N - 1) * sum_j ||v_j||^2 / d_v with the values it drew (replayed: keys first, then values).
    samples = est.importance_snr_inv_exp_samples(k_i, 6, 3, 3.0, 50, np.random.default_rng(22), tilt=1.0)
    replay = np.random.default_rng(22)
    replay.standard_normal((50, 5, 9))
    values = replay.standard_normal((50, 5, 3))
    expected = formula / 5 * np.sum(values**2, axis=(1, 2)) / 3
    # The log-terms have size ~ 2 ||k_i||^2 / tau; exp amplifies their rounding by that much.
    assert np.allclose(samples, expected, rtol=64 * U * (1 + 2 * float(k_i @ k_i) / 3.0), atol=0)


def test_plain_sampling_of_the_exp_kernel_at_unit_temperature_underestimates_badly() -> None:
    # Documents why importance sampling exists: the plain estimate at tau = 1, d_k = 16 is far below the truth.
    rng = np.random.default_rng(23)
    k_i = rng.standard_normal(16)
    formula = snr.snr_inv_exp_conditional(16, float(k_i @ k_i), 1.0)
    plain = est.monte_carlo_snr_inv(functools.partial(kernels.exp_kernel, tau=1.0), k_i, 16, 4, 2000, rng)
    assert plain.mean < 0.8 * formula


def test_one_monte_carlo_sample_is_the_empirical_ratio_of_the_memory_it_drew() -> None:
    # The estimator's vectorised noise must equal AM.9's explicit sum on the same memory (same draws, same order).
    k_i = np.random.default_rng(30).standard_normal(5)
    kernel = functools.partial(kernels.exp_kernel, tau=3.0)
    sample = est.snr_inv_samples(kernel, k_i, 7, 3, 1, np.random.default_rng(31))[0]
    replay = np.random.default_rng(31)
    keys, values = replay.standard_normal((1, 6, 5))[0], replay.standard_normal((1, 6, 3))[0]
    K, V = np.vstack([k_i, keys]), np.vstack([np.zeros(3), values])
    r = memory.retrieval_noise(K, V, 0, kernel)
    c = memory.signal_coefficient(k_i, kernel)
    assert sample == pytest.approx(float(r @ r) / (c**2 * 3), rel=64 * U)


def test_empirical_ratio_of_a_linear_memory_equals_read_minus_signal() -> None:
    rng = np.random.default_rng(32)
    K, V = rng.standard_normal((6, 4)), rng.standard_normal((6, 3))
    r = memory.memory_read(memory.memory_write(K, V), K[2]) - (K[2] @ K[2]) * V[2]
    expected = float(r @ r) / ((K[2] @ K[2]) ** 2 * float(V[2] @ V[2]))
    assert est.empirical_snr_inv(K, V, 2, kernels.linear_kernel) == pytest.approx(expected, rel=256 * U)
    with precision.workdps(40):
        exact = est.empirical_snr_inv(precision.to_mp(K), precision.to_mp(V), 2, kernels.linear_kernel)
    assert _rel(exact, expected) <= 1e-13


def test_unconditional_average_of_a_closed_form_matches_the_averaged_form() -> None:
    estimate = est.monte_carlo_unconditional_average(
        lambda k, _rng: snr.snr_inv_exp_conditional(10, float(k @ k), 2.0), 4, 5000, np.random.default_rng(33))
    formula = snr.snr_inv_exp_unconditional(10, 4, 2.0)
    _assert_estimate_matches(estimate, formula, 1.1 * formula)


def test_monte_carlo_estimate_summary() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0])
    estimate = est.monte_carlo_estimate(x, z=2.0)
    assert estimate.mean == 2.5
    assert estimate.stderr == pytest.approx(math.sqrt(5 / 3) / 2, rel=8 * U)
    assert estimate.ci_low == pytest.approx(2.5 - 2 * estimate.stderr)
    assert estimate.z_score(2.5 + estimate.stderr) == pytest.approx(1.0)
    assert est.monte_carlo_estimate(np.ones(3)).z_score(1.0) == 0.0
    assert est.monte_carlo_estimate(np.ones(3)).z_score(2.0) == math.inf


# --- errors


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda: snr.snr_inv_linear_conditional(0, 1.0), ValueError, "N must be >= 1"),
    (lambda: snr.snr_inv_linear_conditional(2.5, 1.0), TypeError, "N must be an int"),
    (lambda: snr.snr_inv_linear_conditional(3, -1.0), ValueError, "key_sq_norm must be > 0"),
    (lambda: snr.snr_inv_linear_unconditional(3, 2.0), ValueError, "d_k must be > 2"),
    (lambda: snr.snr_inv_linear_unconditional_ratio(3, 5.0, 2), ValueError, "d_v must be > 2"),
    (lambda: snr.value_ratio_factor(1), ValueError, "d_v must be > 2"),
    (lambda: snr.snr_inv_relu_power_unconditional(3, 6.0, 3), ValueError, "d_k must be > 6"),
    (lambda: snr.snr_inv_relu_power_conditional(3, 1.0, 0), ValueError, "p must be >= 1"),
    (lambda: snr.snr_inv_exp_conditional(3, 1.0, 0.0), ValueError, "tau must be > 0"),
    (lambda: snr.snr_inv_exp_scaling(3, float("nan"), 1.0), ValueError, "d_k must be finite"),
    (lambda: snr.required_dk_linear(3, 0.0), ValueError, "eps must be > 0"),
    (lambda: snr.required_dk_exp_tau2_exact(1, 0.1), ValueError, "N must be > 1"),
    (lambda: snr.snr_inv(-1.0, 1.0, 1.0), ValueError, "noise_energy must be >= 0"),
    (lambda: snr.snr_inv(1.0, 0.0, 1.0), ValueError, "c must be nonzero"),
    (lambda: snr.snr_inv_kernel(3, "a", 1.0), TypeError, "kappa_sq_mean must be a real number"),
    (lambda: est.monte_carlo_snr_inv(kernels.linear_kernel, np.ones(3), 4, 2, 10, 7), TypeError,
     "rng must be a numpy.random.Generator"),
    (lambda: est.monte_carlo_snr_inv(kernels.linear_kernel, precision.to_mp(np.ones(3)), 4, 2, 10,
                                   np.random.default_rng()), TypeError, "k_i must be float64"),
    (lambda: est.monte_carlo_snr_inv(kernels.linear_kernel, np.ones(3), 4, 2, 10, np.random.default_rng(),
                                   v_i=np.ones(3)), ValueError, "v_i must have length d_v = 2"),
    (lambda: est.monte_carlo_snr_inv(kernels.linear_kernel, np.zeros(3), 4, 2, 10, np.random.default_rng()),
     ValueError, "the signal c v_i is zero"),
    (lambda: est.importance_snr_inv_exp(np.ones(3), 4, 2, 1.0, 10, np.random.default_rng(), tilt=1.5), ValueError,
     "tilt must be in"),
    (lambda: est.monte_carlo_estimate(np.ones(1)), ValueError, "x must hold at least 2 samples"),
    (lambda: est.monte_carlo_unconditional_average(3.0, 4, 10, np.random.default_rng()), TypeError,
     "estimator must be a callable"),
    (lambda: est.kappa_sq_mean_quadrature("linear", 1.0), TypeError, "kernel must be a Gram function"),
    (lambda: est.chi2_average_quadrature(lambda s: s, 0.0), ValueError, "d_k must be > 0"),
    (lambda: est.empirical_snr_inv(np.ones((2, 2)), np.ones((2, 1)), 5, kernels.linear_kernel), ValueError,
     "i must satisfy"),
])
def test_bad_inputs_raise_errors_naming_the_argument(call, error: type[Exception], match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=match):
        call()
