"""Backend selection: explicit, and never a silent fallback (a user who asked for Triton and silently got the
PyTorch path would measure the wrong thing).

``"torch"`` runs ``impl.torch_ops`` (any device); ``"triton"`` runs ``impl.triton_ops`` (imported lazily, only
when requested); ``"auto"`` picks Triton for CUDA tensors and torch otherwise. ``interpreter_enabled`` is the one
reading of ``TRITON_INTERPRET`` in impl (``impl.triton_ops`` uses it too).
"""

from __future__ import annotations

import importlib
import os
from enum import StrEnum
from types import ModuleType

import torch

__all__ = ["BACKENDS", "INTERPRETER_ON", "Backend", "backend_module", "interpreter_enabled", "resolve_backend"]


class Backend(StrEnum):
    """A concrete backend (``"auto"`` is resolved to one of these before dispatch)."""

    TORCH = "torch"
    TRITON = "triton"


BACKENDS: tuple[str, ...] = ("auto", "torch", "triton")


INTERPRETER_ON: tuple[str, ...] = ("1", "true", "on", "yes", "y")
"""The TRITON_INTERPRET values (compared case-insensitively, unstripped) that turn Triton's interpreter on, as
``triton.knobs.runtime.interpret`` reads them (checked against the installed Triton by tests/test_impl_backend.py)."""


def interpreter_enabled() -> bool:
    """True when TRITON_INTERPRET makes Triton run kernels in its CPU interpreter (``INTERPRETER_ON``)."""
    return os.environ.get("TRITON_INTERPRET", "").lower() in INTERPRETER_ON


def _interpret_setting() -> str:
    return f"TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '<unset>')!r}"


def resolve_backend(backend: object, device: torch.device, dtype: torch.dtype) -> Backend:
    """The backend to run for inputs of ``dtype`` on ``device``.

    Raises:
        ValueError: ``backend`` is not one of "auto", "torch", "triton".
        RuntimeError: "triton" was requested but cannot run: no CUDA tensor and Triton's interpreter is off, or
            bfloat16 inputs under the interpreter (its bf16 ``tl.dot`` returns wrong values, relative error ~1e8).
    """
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(map(repr, BACKENDS))}")
    if backend == "auto":
        return Backend.TRITON if device.type == "cuda" else Backend.TORCH
    if backend == "triton" and device.type != "cuda" and not interpreter_enabled():
        raise RuntimeError(
            f"backend='triton' needs CUDA tensors or TRITON_INTERPRET=1 (Triton's CPU interpreter); "
            f"the inputs are on {device} and {_interpret_setting()}"
        )
    if backend == "triton" and dtype == torch.bfloat16 and interpreter_enabled():
        raise RuntimeError(
            f"backend='triton' cannot compute bfloat16 inputs in Triton's interpreter ({_interpret_setting()}): "
            f"its bf16 tl.dot returns wrong values; use float16, float32 or float64 there, or run on a CUDA device"
        )
    return Backend(backend)


def backend_module(backend: Backend, op: str) -> ModuleType:
    """``impl.torch_ops.<op>`` or ``impl.triton_ops.<op>``; RuntimeError if the backend does not provide ``op``."""
    package = "impl.torch_ops" if backend is Backend.TORCH else "impl.triton_ops"
    try:
        return importlib.import_module(f"{package}.{op}")
    except ImportError as error:
        raise RuntimeError(f"backend={backend.value!r} cannot run {op}: importing {package}.{op} failed "
                           f"({error})") from error
