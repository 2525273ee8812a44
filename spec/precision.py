"""The spec's number backend: float64 NumPy, or mpmath at any precision, through the same code.

Every spec function is written once, with NumPy operators (``+ - * / @``, ``.sum``, slicing) that work on both
``float64`` arrays and ``object`` arrays of ``mpmath.mpf``. The few operations NumPy cannot apply to ``mpf``
elements (transcendental functions, rounding, linear solves) go through this module, which dispatches on the
dtype. So the high-precision oracle is literally the readable code, not a second copy.

Usage::

    >>> import numpy as np, mpmath
    >>> from spec.precision import to_mp, workdps
    >>> from spec.deltaformer import deltaformer_u
    >>> w = k = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]); v = np.eye(3)[:, :2]
    >>> with workdps(60):
    ...     u = deltaformer_u(to_mp(w), to_mp(k), to_mp(v))
    >>> u.dtype, type(u[0, 0]).__name__
    (dtype('O'), 'mpf')

Precision is always scoped (``workdps``); nothing here assigns ``mpmath.mp.dps`` globally.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import mpmath
import numpy as np

from spec._types import Array

__all__ = [
    "absolute",
    "exp",
    "eye",
    "is_mp",
    "log",
    "nint",
    "relu",
    "solve",
    "sqrt",
    "to_float64",
    "to_mp",
    "workdps",
    "zeros",
]


def is_mp(*arrays: Array) -> bool:
    """True when any argument is an object array (mpmath numbers); such a computation runs in mpmath."""
    return any(a.dtype == object for a in arrays)


@contextmanager
def workdps(dps: int) -> Iterator[None]:
    """Run the enclosed spec calls with mpmath at ``dps`` decimal digits (restored on exit)."""
    with mpmath.workdps(dps):
        yield


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


def to_float64(x: Array) -> Array:
    """Round an array (float64 or mpmath) to float64."""
    return np.asarray(x, dtype=np.float64) if x.dtype != object else np.vectorize(float, otypes=[np.float64])(x)


def _elementwise(numpy_fn: Callable[[Array], Array], mp_fn: Callable[[Any], Any]) -> Callable[[Array], Array]:
    mp_ufunc = np.frompyfunc(mp_fn, 1, 1)

    def apply(x: Array) -> Array:
        if x.dtype == object:
            return np.asarray(mp_ufunc(x), dtype=object).reshape(x.shape)
        return numpy_fn(x)

    return apply


exp = _elementwise(np.exp, mpmath.exp)
"""Elementwise e^x."""
log = _elementwise(np.log, mpmath.log)
"""Elementwise natural logarithm."""
sqrt = _elementwise(np.sqrt, mpmath.sqrt)
"""Elementwise square root."""
absolute = _elementwise(np.abs, abs)
"""Elementwise |x|."""
nint = _elementwise(np.rint, mpmath.nint)
"""Round to the nearest integer, ties to even (NumPy ``rint``, mpmath ``nint``)."""


def relu(x: Array) -> Array:
    """Elementwise max(x, 0), keeping the dtype (0 is an exact zero of the same number type)."""
    return np.where(x > 0, x, x * 0)


def zeros(shape: tuple[int, ...], like: Array) -> Array:
    """Zeros of the given shape in the number type of ``like``."""
    if like.dtype == object:
        out = np.empty(shape, dtype=object)
        out.fill(mpmath.mpf(0))
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
    A general LU solve on purpose: it shares nothing with the token recurrences it is compared against.
    """
    if not is_mp(A, B):
        return np.linalg.solve(A, B)
    # One LU factorisation (mpmath's LU_decomp, partial pivoting), then a forward and a back substitution per column.
    LU, pivots = mpmath.mp.LU_decomp(mpmath.matrix(A.tolist()))
    X = np.empty(B.shape, dtype=object)
    for col in range(B.shape[1]):
        y = mpmath.mp.L_solve(LU, mpmath.matrix(B[:, col].tolist()), pivots)
        x = mpmath.mp.U_solve(LU, y)
        for row in range(B.shape[0]):
            X[row, col] = x[row]
    return X
