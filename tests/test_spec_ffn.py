"""spec.ffn (FFN.1-FFN.3): the FFN's matrix form equals its reading as a kernel memory with ReLU^p keys.

Error model (float64, u = 2^-53): both forms sum the same d_ff products v_m sigma(k_m^T x) in different orders, and
sigma(k_m^T x) itself sums d_model products; they differ by at most 2 (d_ff + d_model) u sum_m |v_m| |sigma_m|
times p (the power adds p roundings); we allow a factor 4 over that. mpmath at 60 digits: 10^-50 relative.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spec import ffn, precision

U = 2.0**-53


@st.composite
def ffn_problems(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(X [T, d_model], W1 [d_ff, d_model], W2 [d_out, d_ff], p)."""
    T, d_model, d_ff, d_out = (draw(st.integers(1, n)) for n in (5, 6, 16, 4))
    p = draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return (rng.uniform(-2, 2, (T, d_model)), rng.uniform(-1, 1, (d_ff, d_model)), rng.uniform(-1, 1, (d_out, d_ff)),
            p)


def _bound(X: np.ndarray, W1: np.ndarray, W2: np.ndarray, p: int) -> np.ndarray:
    magnitudes = (np.abs(X) @ np.abs(W1).T) ** p @ np.abs(W2).T
    return 8 * p * (W1.shape[0] + W1.shape[1]) * U * magnitudes + 1e-300


@given(ffn_problems())
def test_ffn_matrix_form_equals_the_kernel_memory_read(problem: tuple[np.ndarray, np.ndarray, np.ndarray, int]) -> None:
    # Catches keys taken from columns of W1, values from rows of W2, or the wrong power.
    X, W1, W2, p = problem
    matrix_form = ffn.ffn(X, W1, W2, p)
    memory_form = ffn.ffn_as_memory(X, W1, W2, p)
    assert matrix_form.shape == (X.shape[0], W2.shape[0])
    assert np.all(np.abs(matrix_form - memory_form) <= _bound(X, W1, W2, p))
    single = ffn.ffn_as_memory(X[0], W1, W2, p)
    assert single.shape == (W2.shape[0],)
    assert np.all(np.abs(single - matrix_form[0]) <= _bound(X[:1], W1, W2, p)[0])


def test_ffn_memory_form_equals_an_explicit_sum_over_stored_pairs() -> None:
    # The oracle is Python's scalar math with math.fsum (correctly rounded sums), term by term.
    rng = np.random.default_rng(7)
    W1, W2, x = rng.standard_normal((11, 4)), rng.standard_normal((3, 11)), rng.standard_normal(4)
    for p in (1, 2, 3):
        expected = [math.fsum(W2[a, m] * max(math.fsum(W1[m] * x), 0.0) ** p for m in range(11)) for a in range(3)]
        assert np.allclose(ffn.ffn_as_memory(x, W1, W2, p), expected, rtol=0,
                           atol=float(_bound(x[None], W1, W2, p).max()))


def test_ffn_keys_are_rows_of_w1_and_values_are_columns_of_w2() -> None:
    W1 = np.arange(6.0).reshape(3, 2)
    W2 = np.arange(12.0).reshape(4, 3)
    K, V = ffn.ffn_keys_values(W1, W2)
    assert np.array_equal(K, W1)
    assert np.array_equal(V[1], W2[:, 1])
    assert V.shape == (3, 4)


def test_ffn_forms_agree_at_60_digits() -> None:
    rng = np.random.default_rng(8)
    X, W1, W2 = (precision.to_mp(rng.standard_normal(shape)) for shape in ((3, 4), (9, 4), (2, 9)))
    with precision.workdps(60):
        difference = ffn.ffn(X, W1, W2, 2) - ffn.ffn_as_memory(X, W1, W2, 2)
        size = max(abs(value) for value in ffn.ffn(X, W1, W2, 2).flat)
        assert max(abs(value) for value in difference.flat) <= size * mpmath.mpf(10) ** -50


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda: ffn.ffn(np.ones(3), np.ones((4, 3)), np.ones((2, 5))), ValueError, "W2 must have 4 columns"),
    (lambda: ffn.ffn(np.ones(2), np.ones((4, 3)), np.ones((2, 4))), ValueError, "x must have length 3"),
    (lambda: ffn.ffn_as_memory(np.ones((2, 2)), np.ones((4, 3)), np.ones((2, 4))), ValueError,
     "x must have 3 columns"),
    (lambda: ffn.ffn(np.ones(3), np.ones((4, 3)), np.ones((2, 4)), p=0), ValueError, "p must be >= 1"),
    (lambda: ffn.ffn_as_memory(np.ones(3), np.ones((4, 3)), np.ones((2, 4)), p=1.5), TypeError, "p must be an int"),
    (lambda: ffn.ffn_keys_values(np.ones(4), np.ones((2, 4))), ValueError, "W1 must be a 2-D"),
])
def test_bad_inputs_raise_errors_naming_the_argument(call, error: type[Exception], match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=match):
        call()
