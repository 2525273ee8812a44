"""The spec's number backend: float64 NumPy, mpmath at any precision, or mpmath.iv intervals, through the same code.

Every spec function is written once, with NumPy operators (``+ - * / @``, ``.sum``, slicing) that work on
``float64`` arrays and on ``object`` arrays of ``mpmath.mpf`` or of ``mpmath.iv.mpf`` intervals. The few
operations NumPy cannot apply to such elements (transcendental functions, rounding, relu, the softmax shift, linear
solves) go through this module, which dispatches on the dtype and, for object arrays, on the element type. So the
high-precision oracle is literally the readable code, not a second copy.

Intervals make the oracle certified: every interval operation rounds outward, so the spec run on ``to_interval``
inputs returns an enclosure of the exact real result for those inputs (the certified oracle, Moore's inclusion
property). The operations that must decide a comparison are made interval-safe here: the softmax shift takes the
largest midpoint (any shift is exact, so none needs a comparison of intervals), ``relu`` maps [a, b] to
[max(a, 0), max(b, 0)] (monotone, so exact), ``solve`` pivots on midpoints and refuses a pivot that may be 0, and
``nint`` raises ``IntervalAmbiguityError`` when an interval contains a half-integer instead of guessing.

Usage::

    >>> import numpy as np, mpmath
    >>> from spec.precision import to_mp, workdps
    >>> from spec.deltaformer import deltaformer_u
    >>> w = k = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]); v = np.eye(3)[:, :2]
    >>> with workdps(60):
    ...     u = deltaformer_u(to_mp(w), to_mp(k), to_mp(v))
    >>> u.dtype, type(u[0, 0]).__name__
    (dtype('O'), 'mpf')

The same call on intervals returns enclosures (an interval per entry) whose width bounds the oracle's own error::

    >>> from spec.precision import to_interval
    >>> with workdps(60):
    ...     u_iv = deltaformer_u(to_interval(w), to_interval(k), to_interval(v))
    >>> type(u_iv[0, 0]).__name__, bool(u_iv[2, 0].delta < 1e-50)
    ('ivmpf', True)

Precision is always scoped (``workdps`` sets both ``mpmath.mp`` and ``mpmath.iv``); nothing here assigns
``mpmath.mp.dps`` globally.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import mpmath
import numpy as np
from mpmath import iv

from spec._types import Array

__all__ = [
    "Interval",
    "IntervalAmbiguityError",
    "absolute",
    "exp",
    "eye",
    "is_finite",
    "is_interval",
    "is_mp",
    "log",
    "nint",
    "relu",
    "scalar",
    "softmax_shift",
    "solve",
    "sqrt",
    "to_float64",
    "to_interval",
    "to_mp",
    "workdps",
    "zeros",
]

Interval = type(iv.mpf(0))
"""The element type of interval arrays, ``mpmath.iv.mpf`` (class ``ivmpf``): a closed interval [a, b]."""


def _defer_to_numpy(operator: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def apply(interval: Any, other: Any) -> Any:
        if isinstance(other, np.ndarray):
            return NotImplemented
        return operator(interval, other)

    return apply


# mpmath.iv reads any length-2 operand as the endpoints [a, b]: ``interval * np.array([x, y])`` silently returns an
# interval, not an array. Deferring to NumPy for arrays makes ``beta[t] * row`` broadcast elementwise, as it does
# for float and mpf. Only the mpmath.iv context's own class is changed (not mpmath.ctx_iv.ivmpf), and only for
# ndarray operands.
for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__", "__rtruediv__",
              "__pow__", "__rpow__"):
    setattr(Interval, _name, _defer_to_numpy(getattr(Interval, _name)))


class IntervalAmbiguityError(ValueError):
    """An interval cannot decide a discontinuous operation (round at a half-integer, a pivot that may be 0)."""


def is_mp(*arrays: Array) -> bool:
    """True when any argument is an object array (mpmath numbers or intervals); such a computation runs in mpmath."""
    return any(a.dtype == object for a in arrays)


def is_interval(*arrays: Array) -> bool:
    """True when any argument is an object array holding an ``mpmath.iv`` interval (the certified oracle)."""
    return any(a.dtype == object and any(isinstance(value, Interval) for value in a.flat) for a in arrays)


@contextmanager
def workdps(dps: int) -> Iterator[None]:
    """Run the enclosed spec calls with mpmath and mpmath.iv at ``dps`` decimal digits (both restored on exit)."""
    saved = iv.prec
    try:
        iv.dps = dps
        with mpmath.workdps(dps):
            yield
    finally:
        iv.prec = saved


def to_mp(x: Array | float) -> Array:
    """Convert a real array to an object array of ``mpmath.mpf``. float64 values convert exactly."""
    a = np.asarray(x)
    if a.dtype == object:
        return np.asarray(np.frompyfunc(mpmath.mpf, 1, 1)(a), dtype=object).reshape(a.shape)
    if a.dtype.kind not in "fiu":
        raise TypeError(f"to_mp needs a real numeric array, got dtype {a.dtype}")
    out = np.empty(a.shape, dtype=object)
    for index, value in np.ndenumerate(a.astype(np.float64)):
        out[index] = mpmath.mpf(float(value))
    return out


def to_interval(x: Array | float) -> Array:
    """Convert a real array to an object array of ``mpmath.iv`` intervals enclosing each value.

    float64 and integer values convert exactly (point intervals) at 53 bits or more; mpmath numbers are enclosed
    at the working ``mpmath.iv`` precision (outward rounding); intervals are kept.
    """
    a = np.asarray(x)
    if a.dtype != object and a.dtype.kind not in "fiu":
        raise TypeError(f"to_interval needs a real numeric array, got dtype {a.dtype}")
    source = a if a.dtype == object else a.astype(np.float64)
    out = np.empty(a.shape, dtype=object)
    for index, value in np.ndenumerate(source):
        out[index] = value if isinstance(value, Interval) else iv.mpf(_python_number(value))
    return out


def _python_number(value: Any) -> Any:
    """A value ``mpmath.iv.mpf`` accepts: NumPy scalars become Python float/int; mpmath numbers pass through."""
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def to_float64(x: Array) -> Array:
    """Round an array (float64, mpmath, or intervals: their midpoints) to float64."""
    if x.dtype != object:
        return np.asarray(x, dtype=np.float64)
    rounded: Array = np.vectorize(lambda v: float(v.mid) if isinstance(v, Interval) else float(v),
                                  otypes=[np.float64])(x)
    return rounded


def scalar(x: Any, like: Array) -> Any:
    """The real number ``x`` in the number type of ``like``: float, ``mpmath.mpf``, or an ``mpmath.iv`` interval.

    Floats and ints convert exactly; an interval is kept (only an interval ``like`` accepts one).
    """
    if not is_mp(like):
        return float(x)
    if is_interval(like):
        return x if isinstance(x, Interval) else iv.mpf(_python_number(x))
    return mpmath.mpf(_python_number(x))


def is_finite(value: Any) -> bool:
    """True for a finite real number (float, int, ``mpmath.mpf``) or an interval with two finite endpoints."""
    if isinstance(value, Interval):
        return bool(mpmath.isfinite(mpmath.mpf(value.a)) and mpmath.isfinite(mpmath.mpf(value.b)))
    return bool(mpmath.isfinite(value))


def _elementwise(numpy_fn: Callable[[Array], Array], mp_fn: Callable[[Any], Any],
                 iv_fn: Callable[[Any], Any]) -> Callable[[Array], Array]:
    mp_ufunc = np.frompyfunc(mp_fn, 1, 1)
    iv_ufunc = np.frompyfunc(iv_fn, 1, 1)

    def apply(x: Array) -> Array:
        if x.dtype == object:
            ufunc = iv_ufunc if is_interval(x) else mp_ufunc
            return np.asarray(ufunc(x), dtype=object).reshape(x.shape)
        return numpy_fn(x)

    return apply


def _interval_nint(x: Any) -> Any:
    """round(x) for an interval that lies strictly between two half-integers; IntervalAmbiguityError otherwise."""
    x = iv.mpf(x)
    candidate = iv.mpf(mpmath.nint(mpmath.mpf(x.mid)))
    if (x > candidate - 0.5) is True and (x < candidate + 0.5) is True:
        return candidate
    raise IntervalAmbiguityError(
        f"round (spec.precision.nint, the round write kernel) cannot decide the interval {x}: it contains a "
        f"half-integer (a tie included), where round is discontinuous; the certified oracle does not guess")


def _interval_relu(x: Any) -> Any:
    """max(x, 0) on [a, b]: [max(a, 0), max(b, 0)], exact because max(., 0) is monotone."""
    x = iv.mpf(x)
    low = x.a if (x.a > 0) is True else 0
    high = x.b if (x.b > 0) is True else 0
    return iv.mpf([low, high])


exp = _elementwise(np.exp, mpmath.exp, iv.exp)
"""Elementwise e^x."""
log = _elementwise(np.log, mpmath.log, iv.log)
"""Elementwise natural logarithm."""
sqrt = _elementwise(np.sqrt, mpmath.sqrt, iv.sqrt)
"""Elementwise square root."""
absolute = _elementwise(np.abs, abs, abs)
"""Elementwise |x|."""
nint = _elementwise(np.rint, mpmath.nint, _interval_nint)
"""Round to the nearest integer, ties to even (NumPy ``rint``, mpmath ``nint``); intervals: IntervalAmbiguityError
when an interval contains a half-integer."""


def relu(x: Array) -> Array:
    """Elementwise max(x, 0), keeping the dtype (0 is an exact zero of the same number type; intervals map
    [a, b] to [max(a, 0), max(b, 0)])."""
    if x.dtype == object and is_interval(x):
        return np.asarray(np.frompyfunc(_interval_relu, 1, 1)(x), dtype=object).reshape(x.shape)
    return np.where(x > 0, x, x * 0)


def softmax_shift(x: Array, axis: int | None = None, keepdims: bool = False) -> Array | Any:
    """The value a softmax subtracts before exponentiating: max(x) along ``axis`` (float64 and mpmath).

    Any shift gives the same softmax exactly (it cancels in the ratio); the maximum keeps float64 from overflowing.
    For intervals the maximum may be undecidable, so the shift is the largest midpoint, a point interval: no
    comparison of intervals, and the result stays an enclosure.
    """
    if x.dtype != object or not is_interval(x):
        return np.max(x, axis=axis, keepdims=keepdims)
    midpoints = np.frompyfunc(lambda value: iv.mpf(_python_number(value)).mid, 1, 1)(x)
    return np.max(np.asarray(midpoints, dtype=object).reshape(x.shape), axis=axis, keepdims=keepdims)


def zeros(shape: tuple[int, ...], like: Array) -> Array:
    """Zeros of the given shape in the number type of ``like``."""
    if like.dtype == object:
        out = np.empty(shape, dtype=object)
        out.fill(iv.mpf(0) if is_interval(like) else mpmath.mpf(0))
        return out
    return np.zeros(shape, dtype=np.float64)


def eye(n: int, like: Array) -> Array:
    """The n x n identity in the number type of ``like``."""
    out = zeros((n, n), like)
    for i in range(n):
        out[i, i] = out[i, i] + 1
    return out


def solve(A: Array, B: Array) -> Array:
    """Solve A X = B for square A [n, n], B [n, m] by LU with partial pivoting.

    float64: LAPACK ``gesv`` via ``numpy.linalg.solve``. mpmath: ``mpmath.lu_solve`` at the working precision.
    Intervals: Gaussian elimination in interval arithmetic, pivoting on the largest midpoint (an enclosure of the
    exact solution; IntervalAmbiguityError if a pivot interval contains 0). A general LU solve on purpose: it shares
    nothing with the token recurrences it is compared against.
    """
    if not is_mp(A, B):
        return np.linalg.solve(A, B)
    if is_interval(A, B):
        return _interval_solve(to_interval(A), to_interval(B))
    # One LU factorisation (mpmath's LU_decomp, partial pivoting), then a forward and a back substitution per column.
    LU, pivots = mpmath.mp.LU_decomp(mpmath.matrix(A.tolist()))
    X = np.empty(B.shape, dtype=object)
    for col in range(B.shape[1]):
        y = mpmath.mp.L_solve(LU, mpmath.matrix(B[:, col].tolist()), pivots)
        x = mpmath.mp.U_solve(LU, y)
        for row in range(B.shape[0]):
            X[row, col] = x[row]
    return X


def _interval_solve(A: Array, B: Array) -> Array:
    """Enclosure of A^-1 B: Gaussian elimination on [A | B], then back substitution, all in interval arithmetic.

    Each interval operation encloses its exact result, so X encloses the exact solution for every A, B in the
    intervals. The pivot is the diagonal entry unless its interval contains 0; then the row with the largest
    midpoint (any pivot order is exact, so choosing one needs no interval comparison). Row swaps that floating point
    gets for free widen intervals (each elimination mixes the rows' rounding), and the spec's systems are unit lower
    triangular, where this elimination is a forward substitution and needs none.
    """
    n = A.shape[0]
    M = np.concatenate([A, B], axis=1)
    for col in range(n):
        pivot = col
        if 0 in M[col, col]:
            pivot = max(range(col, n), key=lambda row: abs(M[row, col].mid))
        if 0 in M[pivot, col]:
            raise IntervalAmbiguityError(f"solve: the pivot interval {M[pivot, col]} in column {col} contains 0 "
                                         f"(the matrix is singular or too wide to decide)")
        M[[col, pivot]] = M[[pivot, col]]
        for row in range(col + 1, n):
            M[row, col:] = M[row, col:] - (M[row, col] / M[col, col]) * M[col, col:]
    X = M[:, n:].copy()
    for row in range(n - 1, -1, -1):
        X[row] = (X[row] - M[row, row + 1:n] @ X[row + 1:]) / M[row, row]
    return X
