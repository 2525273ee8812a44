"""Retrieval SNR by measurement: one memory, Monte Carlo over memories, importance sampling, and quadrature.

These are the independent evaluations the closed forms of ``spec.snr`` are checked against:

- ``empirical_snr_inv`` (SNR.30): ||r||^2 / (c^2 ||v_i||^2) of one given memory, through ``spec.memory``
  (precision-generic);
- Monte Carlo (SNR.31-34, SNR.40): fresh memories with keys and values ~ N(0, I), the estimate with its standard
  error and a normal confidence interval, for any Gram kernel, conditional on k_i or averaged over k_i;
- importance sampling for the exponential kernel (SNR.35-37), where plain sampling is heavy-tailed;
- mpmath quadrature (SNR.38, SNR.39): the 1-D integrals the closed forms evaluate, computed numerically.

Sampling functions are float64-only (they draw with a seeded ``numpy.random.Generator`` and summarise in float64);
the quadratures are mpmath-only (at the working precision, ``spec.precision.workdps``).

Why plain Monte Carlo fails for exp(x^T y / tau): for fixed k_i, kappa^2(k_j, k_i) = exp(2 z / tau) with
z ~ N(0, s) is log-normal with log-variance 4 s / tau^2; its relative variance exp(4 s / tau^2) - 1 is about
e^64 for s = d_k = 16, tau = 1, so a sample mean sits far below the truth with high probability (the mean is
carried by draws of probability ~e^-32). Tilting the key law to N(lambda 2 k_i / tau, I) and reweighting each
noise term by its likelihood ratio leaves the mean unchanged and reduces the relative variance per term to
exp((1 - lambda)^2 4 s / tau^2) - 1 (docs/derivations/snr.md, section 6); lambda = 1 makes the key part exact.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import mpmath
import numpy as np

from spec import _validate, memory
from spec._types import F64

__all__ = [
    "MonteCarloEstimate",
    "chi2_average_quadrature",
    "empirical_snr_inv",
    "importance_snr_inv_exp",
    "importance_snr_inv_exp_samples",
    "importance_snr_inv_exp_unconditional",
    "kappa_sq_mean_quadrature",
    "monte_carlo_estimate",
    "monte_carlo_snr_inv",
    "monte_carlo_snr_inv_unconditional",
    "monte_carlo_unconditional_average",
    "snr_inv_samples",
]

_BATCH_FLOATS = 2_000_000
"""Random numbers drawn per batch (bounds the memory of a Monte Carlo run, ~16 MB of float64)."""


class MonteCarloEstimate(NamedTuple):
    """A Monte Carlo mean with its standard error and the normal interval mean +- z * stderr."""

    mean: float
    stderr: float
    ci_low: float
    ci_high: float
    samples: int
    z: float

    def contains(self, value: float) -> bool:
        """True when ``value`` lies in [ci_low, ci_high]."""
        return bool(self.ci_low <= value <= self.ci_high)

    def z_score(self, value: float) -> float:
        """|mean - value| / stderr (inf when stderr = 0 and they differ)."""
        gap = abs(self.mean - value)
        if self.stderr == 0:
            return 0.0 if gap == 0 else float("inf")
        return gap / self.stderr


def _generator(rng: Any) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
    return rng


def _float64_vector(name: str, x: Any) -> F64:
    a = _validate.vector(name, x)
    if a.dtype == object:
        raise TypeError(f"{name} must be float64: the Monte Carlo estimators are float64-only, got an mpmath array")
    return np.asarray(a, dtype=np.float64)


def _batches(total: int, floats_per_sample: int) -> Iterator[int]:
    """Batch sizes summing to ``total``, each drawing at most about _BATCH_FLOATS random numbers."""
    size = max(1, _BATCH_FLOATS // max(floats_per_sample, 1))
    done = 0
    while done < total:
        step = min(size, total - done)
        done += step
        yield step


def _z(z: Any) -> float:
    return float(_validate.scalar("z", z, positive=True))


def empirical_snr_inv(K: Any, V: Any, i: Any, kernel: Any) -> Any:
    """SNR.30 [derived]: ||r||^2 / (c^2 ||v_i||^2) of one memory, r = sum_{j != i} v_j kappa(k_j, k_i) (AM.9).

    K [N, d_k], V [N, d_v], i in [0, N), kernel a Gram function -> a scalar. Its average over memories is SNR.1.
    Precision-generic (float64 or mpmath).
    """
    K = _validate.matrix("K", K)
    V = _validate.matrix("V", V, rows=K.shape[0], rows_of="K")
    K, V = _validate.unify(K, V)
    r = memory.retrieval_noise(K, V, i, kernel)
    c = memory.signal_coefficient(K[int(i)], kernel)
    value_energy = V[int(i)] @ V[int(i)]
    if c == 0 or value_energy == 0:
        raise ValueError("the signal c v_i is zero (c = kappa(k_i, k_i) = 0 or v_i = 0): SNR^-1 is undefined")
    return (r @ r) / (c**2 * value_energy)


def monte_carlo_estimate(x: Any, z: Any = 4.0) -> MonteCarloEstimate:
    """SNR.31 [literature]: mean(x) +- z s / sqrt(M), s the sample standard deviation (ddof = 1), M = len(x) >= 2.

    The normal-approximation interval for the mean of i.i.d. samples (z = 4: two-sided level 1 - 6.3e-5).
    float64-only.
    """
    x = _float64_vector("x", x)
    if x.shape[0] < 2:
        raise ValueError(f"x must hold at least 2 samples for a standard error, got {x.shape[0]}")
    z = _z(z)
    mean = float(x.mean())
    stderr = float(x.std(ddof=1) / np.sqrt(x.shape[0]))
    return MonteCarloEstimate(mean, stderr, mean - z * stderr, mean + z * stderr, int(x.shape[0]), z)


def snr_inv_samples(kernel: Any, k_i: Any, N: Any, d_v: Any, samples: Any, rng: Any, *,
                    v_i: Any = None) -> F64:
    """SNR.32 [derived]: ||r||^2 / (c^2 ||v_i||^2) for ``samples`` fresh memories around a fixed k_i (float64).

    Each memory draws N - 1 other pairs, keys k_j ~ N(0, I_{d_k}) and values v_j ~ N(0, I_{d_v}) (keys first,
    then values, per batch of memories), and computes r = sum_j v_j kappa(k_j, k_i) with the Gram ``kernel``.
    ``v_i`` None: value-averaged, divide by c^2 d_v (mean = SNR.3); given: divide by c^2 ||v_i||^2.
    Returns [samples]. float64-only.
    """
    rng = _generator(rng)
    k_i = _float64_vector("k_i", k_i)
    N = _validate.positive_int("N", N)
    d_v = _validate.positive_int("d_v", d_v)
    samples = _validate.positive_int("samples", samples)
    value_energy = float(d_v) if v_i is None else float(np.sum(_float64_vector("v_i", v_i) ** 2))
    if v_i is not None and np.shape(v_i)[0] != d_v:
        raise ValueError(f"v_i must have length d_v = {d_v}, got {np.shape(v_i)[0]}")
    d_k = k_i.shape[0]
    c = float(memory.signal_coefficient(k_i, kernel))
    if c == 0 or value_energy == 0:
        raise ValueError("the signal c v_i is zero (c = kappa(k_i, k_i) = 0 or v_i = 0): SNR^-1 is undefined")
    if N == 1:
        return np.zeros(samples)
    out = []
    for batch in _batches(samples, (N - 1) * (d_k + d_v)):
        keys = rng.standard_normal((batch, N - 1, d_k))
        values = rng.standard_normal((batch, N - 1, d_v))
        weights = np.asarray(kernel(keys.reshape(-1, d_k), k_i[None, :]), dtype=np.float64).reshape(batch, N - 1)
        r = np.einsum("mj,mjd->md", weights, values)
        out.append(np.sum(r**2, axis=1) / (c**2 * value_energy))
    return np.concatenate(out)


def monte_carlo_snr_inv(kernel: Any, k_i: Any, N: Any, d_v: Any, samples: Any, rng: Any, *, v_i: Any = None,
                        z: Any = 4.0) -> MonteCarloEstimate:
    """SNR.33 [derived]: Monte Carlo estimate of SNR^-1 given k_i: the SNR.31 summary of SNR.32's samples.

    Its mean is SNR.3 (value-averaged, ``v_i`` None) or SNR.1 given v_i. Plain sampling: fine for the linear and
    ReLU^p kernels and the exp kernel at large tau; use ``importance_snr_inv_exp`` for the exp kernel at small
    tau. float64-only.
    """
    return monte_carlo_estimate(snr_inv_samples(kernel, k_i, N, d_v, samples, rng, v_i=v_i), z)


def monte_carlo_snr_inv_unconditional(kernel: Any, d_k: Any, N: Any, d_v: Any, samples: Any, rng: Any, *,
                                      ratio: bool = False, z: Any = 4.0) -> MonteCarloEstimate:
    """SNR.34 [derived]: Monte Carlo estimate of E_{k_i} SNR^-1: every memory draws its own k_i (and v_i).

    Per memory: k_i ~ N(0, I_{d_k}), then N - 1 pairs as SNR.32, then ||r||^2 / (c^2 d_v) (value-averaged;
    mean = the unconditional closed forms SNR.7, SNR.16, SNR.19) or, with ``ratio``, v_i ~ N(0, I_{d_v}) too and
    ||r||^2 / (c^2 ||v_i||^2) (mean = SNR.8 for the linear kernel). float64-only.
    """
    rng = _generator(rng)
    d_k = _validate.positive_int("d_k", d_k)
    N = _validate.positive_int("N", N)
    d_v = _validate.positive_int("d_v", d_v)
    samples = _validate.positive_int("samples", samples)
    z = _z(z)
    if N == 1:
        return monte_carlo_estimate(np.zeros(samples), z)
    # The kernel is called once per batch of B memories on all keys against all B probes k_i: a [B (N - 1), B]
    # Gram matrix whose block diagonal holds each memory's weights (any Gram kernel). B = 16 keeps the wasted
    # off-diagonal work small while amortising Python overhead.
    per_batch = 16
    out = []
    done = 0
    while done < samples:
        batch = min(per_batch, samples - done)
        done += batch
        k_i = rng.standard_normal((batch, d_k))
        value_energy = np.sum(rng.standard_normal((batch, d_v)) ** 2, axis=1) if ratio else np.full(batch, d_v)
        keys = rng.standard_normal((batch, N - 1, d_k))
        values = rng.standard_normal((batch, N - 1, d_v))
        own = np.arange(batch)
        c = np.asarray(kernel(k_i, k_i), dtype=np.float64)[own, own]
        gram = np.asarray(kernel(keys.reshape(-1, d_k), k_i), dtype=np.float64).reshape(batch, N - 1, batch)
        weights = gram[own, :, own]
        r = np.einsum("mj,mjd->md", weights, values)
        out.append(np.sum(r**2, axis=1) / (c**2 * value_energy))
    return monte_carlo_estimate(np.concatenate(out), z)


def _importance_ratios(k_i: F64, N: int, d_v: int, tau: float, tilt: F64, rng: np.random.Generator) -> F64:
    """One importance-sampled memory per row of k_i [B, d_k] (tilt [B]); returns [B] samples of SNR.35."""
    batch, d_k = k_i.shape
    mu = tilt[:, None] * 2 * k_i / tau
    keys = mu[:, None, :] + rng.standard_normal((batch, N - 1, d_k))
    values = rng.standard_normal((batch, N - 1, d_v))
    # log of kappa^2(k_j, k_i) w(k_j) / c^2, summed in the exponent so nothing overflows.
    log_terms = (np.einsum("mjd,md->mj", keys, 2 * k_i / tau - mu) + np.sum(mu**2, axis=1)[:, None] / 2
                 - 2 * np.sum(k_i**2, axis=1)[:, None] / tau)
    ratios: F64 = np.sum(np.sum(values**2, axis=2) * np.exp(log_terms), axis=1) / d_v
    return ratios


def _auto_tilt(k_i: F64, tau: float) -> F64:
    """1 - 1/||2 k_i / tau|| clipped at 0, per row: every noise term then has log-weight variance 1."""
    norm = np.linalg.norm(2 * k_i / tau, axis=-1)
    with np.errstate(divide="ignore"):
        tilt: F64 = np.where(norm > 1, 1 - 1 / np.maximum(norm, 1), 0.0)
    return tilt


def importance_snr_inv_exp_samples(k_i: Any, N: Any, d_v: Any, tau: Any, samples: Any, rng: Any, *,
                                   tilt: Any = None) -> F64:
    """SNR.35 [derived]: sum_{j != i} ||v_j||^2 kappa^2(k_j, k_i) w(k_j) / (c^2 d_v), k_j ~ N(mu, I), per memory.

    Importance sampling for kappa(x, y) = exp(x^T y / tau): keys drawn from the tilted law N(mu, I),
    mu = tilt * 2 k_i / tau, each weighted by the likelihood ratio w(k) = exp(-mu^T k + ||mu||^2 / 2); values
    v_j ~ N(0, I_{d_v}). The value cross terms v_j^T v_l (mean zero) are dropped, so each noise term is reweighted
    by its own ratio; the mean is exactly SNR.3's (N - 1) E[kappa^2] / c^2 (value-averaged). ``tilt``: in [0, 1];
    0 is plain sampling, 1 makes the key part exact (zero variance), None picks 1 - 1/||2 k_i / tau|| (clipped at
    0), which gives every term a log-weight variance of 1. Returns [samples]. float64-only.
    """
    rng = _generator(rng)
    k_i = _float64_vector("k_i", k_i)
    N = _validate.positive_int("N", N)
    d_v = _validate.positive_int("d_v", d_v)
    tau = float(_validate.scalar("tau", tau, positive=True))
    samples = _validate.positive_int("samples", samples)
    if tilt is None:
        tilt = float(_auto_tilt(k_i, tau))
    tilt = float(_validate.scalar("tilt", tilt))
    if not 0 <= tilt <= 1:
        raise ValueError(f"tilt must be in [0, 1] (0: plain sampling, 1: exact key moment), got {tilt}")
    if N == 1:
        return np.zeros(samples)
    d_k = k_i.shape[0]
    out = [_importance_ratios(np.broadcast_to(k_i, (batch, d_k)), N, d_v, tau, np.full(batch, tilt), rng)
           for batch in _batches(samples, (N - 1) * (d_k + d_v))]
    return np.concatenate(out)


def importance_snr_inv_exp(k_i: Any, N: Any, d_v: Any, tau: Any, samples: Any, rng: Any, *, tilt: Any = None,
                           z: Any = 4.0) -> MonteCarloEstimate:
    """SNR.36 [derived]: importance-sampling estimate of SNR^-1_exp given k_i (SNR.31 summary of SNR.35).

    Mean: SNR.17 (N - 1) exp(2 (1 - tau) ||k_i||^2 / tau^2) if the closed form is right. float64-only.
    """
    return monte_carlo_estimate(importance_snr_inv_exp_samples(k_i, N, d_v, tau, samples, rng, tilt=tilt), z)


def importance_snr_inv_exp_unconditional(d_k: Any, N: Any, d_v: Any, tau: Any, samples: Any, rng: Any, *,
                                         z: Any = 4.0) -> MonteCarloEstimate:
    """SNR.37 [derived]: importance-sampling estimate of E_{k_i} SNR^-1_exp: a fresh k_i ~ N(0, I) per memory.

    Each memory: k_i ~ N(0, I_{d_k}), then one SNR.35 draw with the automatic tilt 1 - 1/||2 k_i / tau||.
    Mean: SNR.19 (N - 1) (1 - 4 (tau^-2 - tau^-1))^{-d_k/2} if the closed form is right; the spread of this
    estimator includes the spread of the conditional SNR over k_i (large for small d_k / tau). float64-only.
    """
    rng = _generator(rng)
    d_k = _validate.positive_int("d_k", d_k)
    N = _validate.positive_int("N", N)
    d_v = _validate.positive_int("d_v", d_v)
    tau = float(_validate.scalar("tau", tau, positive=True))
    samples = _validate.positive_int("samples", samples)
    z = _z(z)
    if N == 1:
        return monte_carlo_estimate(np.zeros(samples), z)
    out = []
    for batch in _batches(samples, N * (d_k + d_v)):
        k_i = rng.standard_normal((batch, d_k))
        out.append(_importance_ratios(k_i, N, d_v, tau, _auto_tilt(k_i, tau), rng))
    return monte_carlo_estimate(np.concatenate(out), z)


def monte_carlo_unconditional_average(estimator: Any, d_k: Any, samples: Any, rng: Any, *,
                                      z: Any = 4.0) -> MonteCarloEstimate:
    """SNR.40 [derived]: E_{k_i}[g(k_i)] ~ mean of g over ``samples`` keys k_i ~ N(0, I_{d_k}), with its CI.

    ``estimator(k_i, rng) -> float`` is one unbiased draw given k_i: e.g. one importance-sampled memory
    (``lambda k, g: importance_snr_inv_exp_samples(k, N, d_v, tau, 1, g)[0]``) for the unconditional exp SNR,
    or a conditional closed form of ||k_i||^2. The key k_i is drawn before each call. float64-only.
    """
    rng = _generator(rng)
    d_k = _validate.positive_int("d_k", d_k)
    samples = _validate.positive_int("samples", samples)
    if not callable(estimator):
        raise TypeError(f"estimator must be a callable (k_i, rng) -> float, got {type(estimator).__name__}")
    out = np.empty(samples)
    for m in range(samples):
        out[m] = float(estimator(rng.standard_normal(d_k), rng))
    return monte_carlo_estimate(out, z)


def _quad(integrand: Callable[[Any], Any], points: list[Any]) -> Any:
    """mpmath.quad (tanh-sinh) over the consecutive intervals of ``points``, at the working precision."""
    return mpmath.quad(integrand, points)


def kappa_sq_mean_quadrature(kernel: Any, key_sq_norm: Any, *, points: Any = ()) -> Any:
    """SNR.38 [derived]: E_k[kappa^2(k, x)] = int f(sqrt(s) t)^2 exp(-t^2/2) / sqrt(2 pi) dt, by mpmath quadrature.

    For a dot-product kernel kappa(k, x) = f(k^T x), k ~ N(0, I): k^T x ~ N(0, s), s = ||x||^2 = key_sq_norm.
    f is read off the Gram function itself, f(z) = kernel([[z]], [[1]]) (valid for the linear, ReLU^p, exp,
    polynomial and round kernels of ``spec.kernels``; not for the normalised softmax kernel). The integral is
    split at t = 0 (the ReLU kink) and at the extra ``points`` (in units of t; e.g. the exp kernel's peak
    t = 2 sqrt(s) / tau). mpmath at the working precision.
    """
    s = mpmath.mpf(_validate.scalar("key_sq_norm", key_sq_norm, positive=True))
    if not callable(kernel):
        raise TypeError(f"kernel must be a Gram function (X [n, d], Y [m, d]) -> [n, m], got {type(kernel).__name__}")
    sigma = mpmath.sqrt(s)
    one = np.array([[mpmath.mpf(1)]], dtype=object)

    def profile(z: Any) -> Any:
        return np.asarray(kernel(np.array([[z]], dtype=object), one))[0, 0]

    def integrand(t: Any) -> Any:
        return profile(sigma * t) ** 2 * mpmath.exp(-t * t / 2)

    breaks = sorted({mpmath.mpf(0), *(mpmath.mpf(float(p)) if not isinstance(p, mpmath.mpf) else p for p in points)})
    return _quad(integrand, [mpmath.ninf, *breaks, mpmath.inf]) / mpmath.sqrt(2 * mpmath.pi)


def chi2_average_quadrature(g: Any, d_k: Any, *, points: Any = ()) -> Any:
    """SNR.39 [derived]: E_{s ~ chi^2_d}[g(s)] = int_0^inf g(u^2) u^{d-1} e^{-u^2/2} du / (2^{d/2-1} Gamma(d/2)).

    d = d_k.

    The average over k_i ~ N(0, I_{d_k}) of any conditional quantity that depends on k_i through s = ||k_i||^2,
    integrated over the norm u = ||k_i|| (chi law), which keeps the integrand smooth at 0 for every d_k >= 1.
    ``g`` maps an mpf to an mpf. Split at u = sqrt(d_k) and the extra ``points`` (values of s). mpmath at the
    working precision.
    """
    d = mpmath.mpf(_validate.scalar("d_k", d_k, positive=True))
    if not callable(g):
        raise TypeError(f"g must be a callable s -> value, got {type(g).__name__}")
    norm = mpmath.power(2, d / 2 - 1) * mpmath.gamma(d / 2)

    def integrand(u: Any) -> Any:
        return g(u * u) * mpmath.power(u, d - 1) * mpmath.exp(-u * u / 2)

    extra = (mpmath.mpf(float(p)) if not isinstance(p, mpmath.mpf) else p for p in points)
    breaks = sorted({mpmath.sqrt(d), *(mpmath.sqrt(p) for p in extra if p > 0)})
    return _quad(integrand, [mpmath.mpf(0), *breaks, mpmath.inf]) / norm
