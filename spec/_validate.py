"""Input checks shared by every public spec function. Each error names the argument, what was expected and what
was received. ``TypeError`` for a wrong kind of value (complex, string, non-array), ``ValueError`` for a wrong
shape, length, value (NaN, Inf, empty) or option name.

Precision policy: real float and integer arrays are promoted to float64 (exact for float16, float32 and float64;
a wider float such as longdouble is refused rather than rounded: pass mpmath numbers for more precision); object
arrays must hold real mpmath numbers (or ``mpmath.iv`` intervals) and stay mpmath (or intervals). ``unify`` lifts
every argument to intervals when any is an interval array, else to mpmath when any is mpmath, so a call computes in
exactly one number type.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import mpmath
import numpy as np

from spec._types import Array
from spec.precision import Interval, is_finite, is_interval, to_interval, to_mp


def _real_array(name: str, x: Any) -> Array:
    if x is None:
        raise TypeError(f"{name} must be an array, got None")
    a = np.asarray(x)
    if a.dtype == object:
        for value in a.flat:
            if not isinstance(value, mpmath.mpf | Interval | int | float):
                raise TypeError(f"{name} must hold real numbers (float, mpmath.mpf or mpmath.iv.mpf), found "
                                f"{type(value).__name__}")
        return to_interval(a) if is_interval(a) else to_mp(a)
    if a.dtype.kind == "b" or a.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a real floating array, got dtype {a.dtype}")
    if a.dtype.kind == "f" and a.dtype.itemsize > 8:
        raise TypeError(f"{name} has dtype {a.dtype}, wider than float64, which would round it; pass float64, or "
                        f"mpmath numbers (an object array) for more precision")
    return a.astype(np.float64)


def require_finite(name: str, a: Array) -> None:
    """ValueError if ``a`` holds NaN or Inf."""
    finite = (
        all(is_finite(value) for value in a.flat) if a.dtype == object else bool(np.isfinite(a).all())
    )
    if not finite:
        raise ValueError(f"{name} contains NaN or Inf; the spec needs finite inputs")


def matrix(name: str, x: Any, *, rows: int | None = None, rows_of: str = "", cols: int | None = None,
           cols_of: str = "", allow_empty: bool = False) -> Array:
    """A finite [rows, cols] real array (float64 or mpmath), non-empty unless ``allow_empty`` (T = 0 rows).

    ``rows_of`` / ``cols_of`` name the argument the expected size comes from, for the error message.
    """
    a = _real_array(name, x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [T, d], got {a.ndim}-D with shape {a.shape}")
    if a.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name} is an empty sequence (T = 0); the spec needs T >= 1")
    if a.shape[1] == 0:
        raise ValueError(f"{name} has feature dimension 0; the spec needs d >= 1")
    if rows is not None and a.shape[0] != rows:
        raise ValueError(f"{name} must have {rows} rows (T of {rows_of}), got {a.shape[0]}")
    if cols is not None and a.shape[1] != cols:
        raise ValueError(f"{name} must have {cols} columns (d of {cols_of}), got {a.shape[1]}")
    require_finite(name, a)
    return a


def vector(name: str, x: Any, *, length: int | None = None, length_of: str = "") -> Array:
    """A finite [length] real array (float64 or mpmath)."""
    a = _real_array(name, x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got {a.ndim}-D with shape {a.shape}")
    if length is not None and a.shape[0] != length:
        raise ValueError(f"{name} must have length {length} (T of {length_of}), got {a.shape[0]}")
    require_finite(name, a)
    return a


def scalar(name: str, x: Any, *, positive: bool = False) -> float:
    """A finite real Python float (an mpmath scalar or an interval keeps its value).

    An interval counts as > 0 only if all of it is (an undecidable sign is rejected).
    """
    if isinstance(x, bool) or not isinstance(x, int | float | np.floating | np.integer | mpmath.mpf | Interval):
        raise TypeError(f"{name} must be a real number, got {type(x).__name__}")
    if not is_finite(x):
        raise ValueError(f"{name} must be finite, got {x}")
    if positive and not ((x > 0) is True if isinstance(x, Interval) else x > 0):
        raise ValueError(f"{name} must be > 0, got {x}")
    return x if isinstance(x, mpmath.mpf | Interval) else float(x)


def positive_int(name: str, x: Any) -> int:
    """A Python int >= 1."""
    if isinstance(x, bool) or not isinstance(x, int | np.integer):
        raise TypeError(f"{name} must be an int, got {type(x).__name__}")
    if x < 1:
        raise ValueError(f"{name} must be >= 1, got {x}")
    return int(x)


def choice(name: str, x: Any, options: Iterable[str]) -> str:
    """One of the named options."""
    valid = tuple(options)
    if not isinstance(x, str) or x not in valid:
        raise ValueError(f"unknown {name} {x!r}; expected one of {', '.join(map(repr, valid))}")
    return x


def unify(*arrays: Array) -> tuple[Array, ...]:
    """Lift every array to intervals if any is an interval array, else to mpmath if any is mpmath; otherwise return
    them unchanged (float64)."""
    if is_interval(*arrays):
        return tuple(to_interval(a) for a in arrays)
    if any(a.dtype == object for a in arrays):
        return tuple(to_mp(a) for a in arrays)
    return arrays
