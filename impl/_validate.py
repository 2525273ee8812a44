"""Backend-independent input checks, run by every public op before dispatch.

Each error names the argument, what was expected and what was received. ``TypeError`` for a wrong kind of value
(not a tensor, wrong dtype, dtype mismatch, non-integer option), ``ValueError`` for a wrong shape, device, value
(NaN, Inf, empty sequence, bad ``cu_seqlens``) or option name. Any memory layout is accepted (transposed views,
``unbind`` / ``chunk`` slices of a fused projection, expanded tensors): a validated tensor is returned contiguous
(a copy only when it is not already), so the backends see one layout and gradients flow back to the view.
``RuntimeError`` (an unavailable backend) comes from ``impl._backend``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

import torch
from torch import Tensor

__all__ = [
    "FLOAT_DTYPES",
    "all_finite",
    "check_choice",
    "check_chunk_size",
    "check_cu_seqlens",
    "check_flag",
    "check_positive_int",
    "check_qkv",
    "check_same_device",
    "check_scale",
    "check_state",
    "check_tensor",
]

FLOAT_DTYPES: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_tensor(name: str, x: object, *, ndim: int, layout: str, dtype: torch.dtype | None = None,
                 dtype_of: str = "", shape: tuple[int | None, ...] | None = None, shape_of: str = "",
                 finite: bool = True) -> Tensor:
    """A floating tensor of rank ``ndim``, returned contiguous; matching ``dtype`` and ``shape`` (None = any size).

    ``layout`` names the axes for messages (e.g. "[B, T, H, K]"); ``dtype_of`` / ``shape_of`` name the argument the
    expectation comes from.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {layout}, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have a floating dtype (float16, bfloat16, float32, float64), got {x.dtype}")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(f"{name} must have the dtype of {dtype_of} ({dtype}), got {x.dtype} (dtype mismatch)")
    if x.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D tensor {layout}, got {x.ndim}-D with shape {tuple(x.shape)}")
    if shape is not None:
        for size, want in zip(x.shape, shape, strict=True):
            if want is not None and size != want:
                expected = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
                raise ValueError(f"{name} must have shape {layout} = {expected} (from {shape_of}), "
                                 f"got {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); every dimension, including T, must be >= 1")
    if finite and not all_finite(x):
        raise ValueError(f"{name} contains NaN or Inf; the op needs finite inputs")
    return x.contiguous()


def all_finite(x: Tensor) -> bool:
    """True when x has no NaN or Inf: min and max both finite (NaN propagates through both; one pass, one device
    kernel: the two scalars are checked on the host)."""
    low, high = torch.aminmax(x)
    return math.isfinite(low.item()) and math.isfinite(high.item())


def check_same_device(**tensors: Tensor | None) -> torch.device:
    """All given tensors on one device; returns it. ValueError naming the first argument on another device."""
    present = [(name, t) for name, t in tensors.items() if t is not None]
    first_name, first = present[0]
    for name, t in present[1:]:
        if t.device != first.device:
            raise ValueError(f"{name} must be on the device of {first_name} ({first.device}), got {t.device} "
                             f"(device mismatch)")
    return first.device


def check_choice(name: str, x: object, options: Iterable[str]) -> str:
    """One of the named options (ValueError listing them otherwise)."""
    valid = tuple(options)
    if not isinstance(x, str) or x not in valid:
        raise ValueError(f"unknown {name} {x!r}; expected one of {', '.join(map(repr, valid))}")
    return x


def check_positive_int(name: str, x: object, *, none_means: str = "") -> int:
    """An integer >= 1 (Python or NumPy integer, not a bool), returned as a Python int. ``none_means``: when not
    empty, the message says None is accepted too (the caller handles it)."""
    kind = f"None ({none_means}) or an int >= 1" if none_means else "an int >= 1"
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        raise TypeError(f"{name} must be {kind}, got {type(x).__name__}")
    if x < 1:
        raise ValueError(f"{name} must be >= 1, got {x}")
    return int(x)


def check_chunk_size(x: object) -> int | None:
    """None (the backend picks its best), or an integer >= 1 (always honoured)."""
    return None if x is None else check_positive_int("chunk_size", x, none_means="the backend's choice")


def check_scale(x: object) -> float | None:
    """None, or a finite real number (Python or NumPy; returned as a Python float)."""
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise TypeError(f"scale must be None or a real number, got {type(x).__name__}")
    value = float(x)
    if not math.isfinite(value):
        raise ValueError(f"scale must be finite, got {x}")
    return value


def check_flag(name: str, x: object) -> bool:
    """A Python bool."""
    if not isinstance(x, bool):
        raise TypeError(f"{name} must be a bool, got {type(x).__name__}")
    return x


def check_cu_seqlens(cu_seqlens: object, *, batch: int, total: int, device: torch.device) -> Tensor | None:
    """None, or a 1-D int32/int64 tensor [N + 1]: 0 = c_0 < c_1 < ... < c_N = T, with batch size B == 1.

    Every sequence has length >= 1 (a zero-length sequence has no output rows and is rejected). Returned as int64.
    """
    if cu_seqlens is None:
        return None
    if not isinstance(cu_seqlens, Tensor):
        raise TypeError(f"cu_seqlens must be None or an int tensor [N + 1], got {type(cu_seqlens).__name__}")
    if cu_seqlens.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"cu_seqlens must have dtype int32 or int64, got {cu_seqlens.dtype}")
    if cu_seqlens.ndim != 1 or cu_seqlens.shape[0] < 2:
        raise ValueError(f"cu_seqlens must be a 1-D tensor [N + 1] with N >= 1, got shape {tuple(cu_seqlens.shape)}")
    if cu_seqlens.device != device:
        raise ValueError(f"cu_seqlens must be on the device of q ({device}), got {cu_seqlens.device} "
                         f"(device mismatch)")
    if batch != 1:
        raise ValueError(f"with cu_seqlens the batch size B must be 1 (sequences are packed along T), got B = {batch}")
    bounds = [int(c) for c in cu_seqlens.tolist()]
    if bounds[0] != 0:
        raise ValueError(f"cu_seqlens must start at 0, got {bounds[0]}")
    if bounds[-1] != total:
        raise ValueError(f"cu_seqlens must end at T = {total} (the packed length), got {bounds[-1]}")
    for i in range(1, len(bounds)):
        if bounds[i] <= bounds[i - 1]:
            raise ValueError(f"cu_seqlens must be strictly increasing (every sequence has length >= 1), got "
                             f"cu_seqlens[{i - 1}] = {bounds[i - 1]} and cu_seqlens[{i}] = {bounds[i]}")
    return cu_seqlens.to(torch.int64).contiguous()


def check_state(name: str, x: object, *, shape: tuple[int, int, int, int], dtype: torch.dtype,
                device: torch.device) -> Tensor | None:
    """None, or a finite [N, H, K, V] tensor in the inputs' dtype and device (returned contiguous)."""
    if x is None:
        return None
    state = check_tensor(name, x, ndim=4, layout="[N, H, K, V]", dtype=dtype, dtype_of="q", shape=shape,
                         shape_of="N sequences and q, v")
    if state.device != device:
        raise ValueError(f"{name} must be on the device of q ({device}), got {state.device} (device mismatch)")
    return state


def check_qkv(q: object, k: object, v: object, beta: object = None, *, q_name: str = "q",
              beta_required: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """q (named ``q_name``), k [B, T, H, K], v [B, T, H, V], beta [B, T, H] or None; one dtype, one device, finite.

    Order of checks: types, dtypes and shapes, then devices, then NaN/Inf (which needs the data on one device).
    """
    qt = check_tensor(q_name, q, ndim=4, layout="[B, T, H, K]", finite=False)
    B, T, H, K = qt.shape
    kt = check_tensor("k", k, ndim=4, layout="[B, T, H, K]", dtype=qt.dtype, dtype_of=q_name, shape=(B, T, H, K),
                      shape_of=q_name, finite=False)
    vt = check_tensor("v", v, ndim=4, layout="[B, T, H, V]", dtype=qt.dtype, dtype_of=q_name,
                      shape=(B, T, H, None), shape_of=q_name, finite=False)
    if beta is None:
        if beta_required:
            raise TypeError("beta must be a torch.Tensor [B, T, H], got NoneType")
        bt = None
    else:
        bt = check_tensor("beta", beta, ndim=3, layout="[B, T, H]", dtype=qt.dtype, dtype_of=q_name,
                          shape=(B, T, H), shape_of=q_name, finite=False)
    check_same_device(**{q_name: qt, "k": kt, "v": vt, "beta": bt})
    for name, t in ((q_name, qt), ("k", kt), ("v", vt), ("beta", bt)):
        if t is not None and not all_finite(t):
            raise ValueError(f"{name} contains NaN or Inf; the op needs finite inputs")
    return qt, kt, vt, bt
