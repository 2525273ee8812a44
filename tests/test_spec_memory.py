"""spec.memory (AM.1-AM.9): the associative memory's write, read, kernel forms and signal/noise split.

Error model (float64, unit roundoff u = 2^-53): every compared quantity is a sum of at most n products; two
summation orders of the same products differ by at most 2 n u sum|terms| (Higham, ch. 3), and we allow a factor 4
over that for the extra roundings in forming the products (kernel evaluation, feature maps). mpmath comparisons
at 60 digits use 10^-50 relative to the same sum of magnitudes.
"""

from __future__ import annotations

import functools

import mpmath
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spec import kernels, precision
from spec import memory as am

U = 2.0**-53


@st.composite
def memories(draw: st.DrawFn, max_n: int = 12, max_d: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Keys K [N, d_k] and values V [N, d_v] with entries in [-3, 3] (seeded from Hypothesis)."""
    N = draw(st.integers(1, max_n))
    d_k = draw(st.integers(1, max_d))
    d_v = draw(st.integers(1, max_d))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return rng.uniform(-3, 3, (N, d_k)), rng.uniform(-3, 3, (N, d_v))


def _sum_bound(n: int, magnitudes: np.ndarray) -> np.ndarray:
    return 8 * n * U * magnitudes + 1e-300


@given(memories())
def test_batch_write_equals_a_sequence_of_single_steps(kv: tuple[np.ndarray, np.ndarray]) -> None:
    # Catches a transposed state (d_k x d_v) or a step that overwrites instead of accumulating.
    K, V = kv
    S = np.zeros((V.shape[1], K.shape[1]))
    for k, v in zip(K, V, strict=True):
        S = am.memory_write_step(S, k, v)
    batch = am.memory_write(K, V)
    assert batch.shape == (V.shape[1], K.shape[1])
    assert np.all(np.abs(batch - S) <= _sum_bound(K.shape[0], np.abs(V).T @ np.abs(K)))


def test_batch_write_equals_steps_exactly_at_60_digits() -> None:
    rng = np.random.default_rng(1)
    K, V = precision.to_mp(rng.standard_normal((7, 4))), precision.to_mp(rng.standard_normal((7, 3)))
    with precision.workdps(60):
        S = precision.zeros((3, 4), K)
        for k, v in zip(K, V, strict=True):
            S = am.memory_write_step(S, k, v)
        difference = max(abs(x) for x in (am.memory_write(K, V) - S).flat)
    assert difference < mpmath.mpf(10) ** -55


@given(st.integers(1, 8), st.integers(0, 4), st.integers(1, 5), st.integers(0, 2**32 - 1))
def test_orthonormal_keys_recall_every_value_exactly(N: int, extra: int, d_v: int, seed: int) -> None:
    # Orthonormal keys make the crosstalk k_j^T k_i vanish: S k_i = v_i up to rounding (catches any read bug).
    rng = np.random.default_rng(seed)
    d_k = N + extra
    Q, _ = np.linalg.qr(rng.standard_normal((d_k, d_k)))
    K = Q[:N]
    V = rng.uniform(-2, 2, (N, d_v))
    recalled = am.memory_read(am.memory_write(K, V), K)
    # QR keys are orthonormal to ~d_k u; the read sums N products of size <= |v|.
    assert np.all(np.abs(recalled - V) <= 16 * N * d_k * U * np.abs(V).max(initial=1.0))
    for i in range(N):
        assert np.allclose(am.memory_read(am.memory_write(K, V), K[i]), recalled[i], rtol=0, atol=1e-15)


@given(memories(), st.integers(1, 3))
def test_kernel_state_form_equals_gram_form_for_linear_and_polynomial_kernels(
        kv: tuple[np.ndarray, np.ndarray], p: int) -> None:
    # The state S = V^T phi(K) read with phi(q) must equal sum_i v_i kappa(k_i, q): catches a wrong feature map
    # ordering or a read that uses kappa(q, q).
    K, V = kv
    Q = np.random.default_rng(int(abs(K).sum() * 1e6) % 2**32).uniform(-3, 3, (3, K.shape[1]))
    if p == 1:
        kernel, phi = kernels.linear_kernel, kernels.linear_feature_map
    else:
        kernel = functools.partial(kernels.polynomial_kernel, p=p)
        phi = functools.partial(kernels.polynomial_feature_map, p=p)
    state = am.kernel_memory_state(K, V, phi)
    via_state = am.kernel_memory_state_read(state, Q, phi)
    via_gram = am.kernel_memory_read(K, V, Q, kernel)
    # The feature-space sum adds d^p products of size up to prod |q_i| |k_i|, which can cancel to a small kernel
    # value: the error scales with (|q|^T |k|)^p, not with |q^T k|^p.
    magnitudes = kernel(np.abs(Q), np.abs(K)) @ np.abs(V)
    assert np.all(np.abs(via_state - via_gram) <= _sum_bound(K.shape[0] * K.shape[1] ** p, magnitudes))


@given(memories())
def test_linear_memory_read_equals_the_kernel_read_with_the_linear_kernel(kv: tuple[np.ndarray, np.ndarray]) -> None:
    K, V = kv
    q = K[0] + 0.5
    magnitudes = np.abs(V).T @ np.abs(K) @ np.abs(q)
    difference = am.memory_read(am.memory_write(K, V), q) - am.kernel_memory_read(K, V, q, kernels.linear_kernel)
    assert np.all(np.abs(difference) <= _sum_bound(K.shape[0] * K.shape[1], magnitudes))


KERNELS = {
    "linear": kernels.linear_kernel,
    "relu": kernels.relu_kernel,
    "relu3": functools.partial(kernels.relu_power_kernel, p=3),
    "exp": functools.partial(kernels.exp_kernel, tau=4.0),
}


@pytest.mark.parametrize("name", sorted(KERNELS))
@given(kv=memories(max_d=4))
def test_read_at_a_stored_key_is_signal_plus_noise(name: str, kv: tuple[np.ndarray, np.ndarray]) -> None:
    # AM.8 + AM.9 (explicit sum over j != i) must rebuild the Gram read AM.4 at q = k_i.
    K, V = kv
    kernel = KERNELS[name]
    for i in range(K.shape[0]):
        read = am.kernel_memory_read(K, V, K[i], kernel)
        split = am.retrieval_signal(K, V, i, kernel) + am.retrieval_noise(K, V, i, kernel)
        magnitudes = np.abs(kernel(K[i][None], K))[0] @ np.abs(V)
        assert np.all(np.abs(read - split) <= _sum_bound(K.shape[0], magnitudes))


def test_signal_coefficient_is_the_squared_norm_for_the_linear_kernel_and_noise_vanishes_for_one_pair() -> None:
    k = np.array([3.0, 4.0])
    assert am.signal_coefficient(k, kernels.linear_kernel) == 25.0
    assert am.signal_coefficient(k, functools.partial(kernels.exp_kernel, tau=25.0)) == pytest.approx(np.e, rel=4 * U)
    assert np.array_equal(am.retrieval_noise(k[None], np.array([[1.0, 2.0]]), 0, kernels.linear_kernel), [0.0, 0.0])


def test_noise_of_the_linear_memory_is_the_read_minus_the_signal() -> None:
    # Independent route: r = S k_i - (k_i^T k_i) v_i from the state form.
    rng = np.random.default_rng(3)
    K, V = rng.standard_normal((9, 5)), rng.standard_normal((9, 2))
    for i in range(9):
        r = am.memory_read(am.memory_write(K, V), K[i]) - (K[i] @ K[i]) * V[i]
        assert np.allclose(am.retrieval_noise(K, V, i, kernels.linear_kernel), r, rtol=0, atol=1e-12)


def test_kernel_read_runs_in_mpmath_and_agrees_with_float64() -> None:
    rng = np.random.default_rng(4)
    K, V = rng.standard_normal((6, 3)), rng.standard_normal((6, 2))
    kernel = functools.partial(kernels.exp_kernel, tau=2.0)
    with precision.workdps(60):
        exact = am.kernel_memory_read(precision.to_mp(K), precision.to_mp(V), precision.to_mp(K[2]), kernel)
        assert exact.dtype == object
    approx = am.kernel_memory_read(K, V, K[2], kernel)
    magnitudes = np.abs(kernel(K[2][None], K))[0] @ np.abs(V)
    assert np.all(np.abs(precision.to_float64(exact) - approx) <= _sum_bound(6 * 3, magnitudes))


def test_softmax_kernel_read_normalises_over_the_stored_keys() -> None:
    # kernel(Q, K) order: the weights of one query sum to 1 over the N keys, so equal values are returned as is.
    rng = np.random.default_rng(5)
    K = rng.standard_normal((5, 3))
    V = np.tile([[2.0, -1.0]], (5, 1))
    out = am.kernel_memory_read(K, V, rng.standard_normal(3), functools.partial(kernels.softmax_kernel, tau=1.0))
    assert np.allclose(out, [2.0, -1.0], rtol=0, atol=1e-15)


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda: am.memory_write(np.ones(3), np.ones((3, 2))), ValueError, "K must be a 2-D"),
    (lambda: am.memory_write(np.ones((3, 2)), np.ones((4, 2))), ValueError, "V must have 3 rows"),
    (lambda: am.memory_write(np.ones((3, 2)), "values"), TypeError, "V must be a real"),
    (lambda: am.memory_write_step(np.zeros((2, 3)), np.ones(2), np.ones(2)), ValueError, "k must have length 3"),
    (lambda: am.memory_write_step(np.zeros((2, 3)), np.ones(3), np.ones(3)), ValueError, "v must have length 2"),
    (lambda: am.memory_read(np.zeros((2, 3)), np.ones(2)), ValueError, "q must have length 3"),
    (lambda: am.memory_read(np.zeros((2, 3)), np.ones((4, 2))), ValueError, "q must have 3 columns"),
    (lambda: am.kernel_memory_read(np.ones((2, 3)), np.ones((2, 1)), np.ones(3), "linear"), TypeError,
     "kernel must be a Gram function"),
    (lambda: am.kernel_memory_read(np.ones((2, 3)), np.ones((2, 1)), np.ones(3), lambda X, Y: X), ValueError,
     "kernel must return a Gram matrix"),
    (lambda: am.kernel_memory_state(np.ones((2, 3)), np.ones((2, 1)), None), TypeError, "feature_map must be"),
    (lambda: am.kernel_memory_state(np.ones((2, 3)), np.ones((2, 1)), lambda X: X[:1]), ValueError,
     "feature_map must return"),
    (lambda: am.kernel_memory_state_read(np.ones((1, 4)), np.ones(3), kernels.linear_feature_map), ValueError,
     "feature_map must return D = 4"),
    (lambda: am.retrieval_noise(np.ones((2, 3)), np.ones((2, 1)), 2, kernels.linear_kernel), ValueError,
     "i must satisfy 0 <= i < N = 2"),
    (lambda: am.retrieval_signal(np.ones((2, 3)), np.ones((2, 1)), True, kernels.linear_kernel), TypeError,
     "i must be an int"),
    (lambda: am.signal_coefficient(np.array([np.nan]), kernels.linear_kernel), ValueError, "k_i contains NaN"),
])
def test_bad_inputs_raise_errors_naming_the_argument(call, error: type[Exception], match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=match):
        call()
