"""Every documented bad input to the public DeltaFormer spec raises, with a message naming the argument."""

from __future__ import annotations

from typing import Any

import mpmath
import numpy as np
import pytest

from spec import deltaformer as df

RNG = np.random.default_rng(0)
Q, K = RNG.standard_normal((2, 5, 3))
V = RNG.standard_normal((5, 2))
BETA = np.ones(5)


def _u(**overrides: Any) -> Any:
    args: dict[str, Any] = {"w": K, "k": K, "v": V, "beta": BETA} | overrides
    kwargs = {name: args.pop(name) for name in ("kernel", "scale") if name in args}
    return df.deltaformer_u(args["w"], args["k"], args["v"], args["beta"], **kwargs)


def _attn(**overrides: Any) -> Any:
    args: dict[str, Any] = {"q": Q, "k": K, "v": V, "beta": BETA} | overrides
    kwargs = {name: args.pop(name) for name in ("kernel", "scale", "write") if name in args}
    return df.deltaformer_attn(args["q"], args["k"], args["v"], args["beta"], **kwargs)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: _u(w=K[0]), ValueError, r"w must be a 2-D array"),
        (lambda: _u(k=K[None]), ValueError, r"k must be a 2-D array"),
        (lambda: _u(v=V[:4]), ValueError, r"v must have 5 rows \(T of w\), got 4"),
        (lambda: _u(k=K[:, :2]), ValueError, r"k must have 3 columns \(d of w\), got 2"),
        (lambda: _u(k=K[:4]), ValueError, r"k must have 5 rows"),
        (lambda: _u(beta=np.ones(4)), ValueError, r"beta must have length 5"),
        (lambda: _u(beta=np.ones((5, 1))), ValueError, r"beta must be a 1-D array"),
        (lambda: _u(w=np.zeros((0, 3)), k=np.zeros((0, 3)), v=np.zeros((0, 2)), beta=None), ValueError,
         r"w is an empty sequence"),
        (lambda: _u(v=np.zeros((5, 0))), ValueError, r"v has feature dimension 0"),
        (lambda: _u(v=np.where(np.eye(5, 2) > 0, np.nan, V)), ValueError, r"v contains NaN or Inf"),
        (lambda: _u(k=np.full((5, 3), np.inf)), ValueError, r"k contains NaN or Inf"),
        (lambda: _u(beta=np.array([1, 1, np.nan, 1, 1])), ValueError, r"beta contains NaN or Inf"),
        (lambda: _u(kernel="relu"), ValueError, r"unknown kernel 'relu'; expected one of 'softmax', 'exp'"),
        (lambda: _u(scale="big"), TypeError, r"scale \(of deltaformer_u\) must be a real number"),
        (lambda: _u(scale=float("nan")), ValueError, r"scale \(of deltaformer_u\) must be finite"),
        (lambda: _u(v=V.astype(complex)), TypeError, r"v must be a real floating array, got dtype complex128"),
        (lambda: _u(w=np.array([["a"]])), TypeError, r"w must be a real floating array"),
        (lambda: _u(w=None), TypeError, r"w must be an array, got None"),
        (lambda: _u(v=np.array([[object()]], dtype=object)), TypeError, r"v must hold real numbers"),
        (lambda: _attn(q=Q[:, :2]), ValueError, r"q must have 3 columns \(d of k\)"),
        (lambda: _attn(q=Q[:4]), ValueError, r"q must have 5 rows \(T of k\)"),
        (lambda: _attn(write="v"), ValueError, r"unknown write 'v'; expected one of 'k', 'q'"),
        (lambda: _attn(kernel=3), ValueError, r"unknown kernel 3"),
        (lambda: df.deltaformer_decode_step(np.zeros((2, 3)), np.zeros((1, 2)), Q[0], K[0], V[0]), ValueError,
         r"cache_u must have 2 rows \(T of cache_k\)"),
        (lambda: df.deltaformer_decode_step(np.zeros((0, 3)), np.zeros((0, 2)), Q[0], K[0, :2], V[0]), ValueError,
         r"k_t must have length 3"),
        (lambda: df.deltaformer_decode_step(np.zeros((0, 3)), np.zeros((0, 2)), Q[0], K[0], V[0], np.ones(2)),
         ValueError, r"beta_t must have length 1"),
        # found by probing (issue 12): each was accepted silently or failed inside range()
        (lambda: _attn(q=None), TypeError, r"q must be an array, got None"),
        (lambda: df.deltaformer_decode_step(np.zeros((0, 5)), np.zeros((0, 2)), Q[0], K[0], V[0]), ValueError,
         r"cache_k must have 3 columns \(d of q_t\), got 5"),
        (lambda: df.deltaformer_decode_step(np.zeros((0, 3)), np.zeros((0, 7)), Q[0], K[0], V[0]), ValueError,
         r"cache_u must have 2 columns \(d of v_t\), got 7"),
        (lambda: df.deltaformer_u_chunked(df.write_scores(K, K, kernel="softmax", scale=1.0), V, BETA, -1),
         ValueError, r"chunk_size must be >= 1, got -1"),
        (lambda: df.deltaformer_u_chunked(df.write_scores(K, K, kernel="softmax", scale=1.0), V, BETA, 0),
         ValueError, r"chunk_size must be >= 1, got 0"),
        (lambda: df.deltaformer_u_chunked(df.write_scores(K, K, kernel="softmax", scale=1.0), V, BETA, 2.5),
         TypeError, r"chunk_size must be an int, got float"),
    ],
)
def test_bad_input_raises_an_error_naming_the_argument(call: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()


def test_lower_precision_and_integer_inputs_are_promoted_exactly_to_float64() -> None:
    u32 = df.deltaformer_u(K.astype(np.float32), K.astype(np.float32), V.astype(np.float32))
    u64 = df.deltaformer_u(K.astype(np.float32).astype(np.float64), K.astype(np.float32).astype(np.float64),
                           V.astype(np.float32).astype(np.float64))
    assert u32.dtype == np.float64
    np.testing.assert_array_equal(u32, u64)
    assert df.deltaformer_u(np.eye(2, dtype=int), np.eye(2, dtype=int), np.eye(2, dtype=int)).dtype == np.float64


@pytest.mark.skipif(np.dtype(np.longdouble).itemsize <= 8, reason="longdouble is float64 on this platform")
def test_a_float_wider_than_float64_is_refused_not_rounded() -> None:
    """The policy promises exact promotion; longdouble would be rounded by float64, so it is refused."""
    with pytest.raises(TypeError, match=r"v has dtype float128, wider than float64"):
        _u(v=V.astype(np.longdouble))


def test_one_mpmath_argument_lifts_the_whole_computation_to_mpmath() -> None:
    v_mp = np.array([[mpmath.mpf(x) for x in row] for row in V], dtype=object)
    u = df.deltaformer_u(K, K, v_mp)
    assert u.dtype == object and all(isinstance(x, mpmath.mpf) for x in u.flat)
