"""Backend selection: explicit, and never a silent fallback (a user who asked for Triton and silently got the
PyTorch path would measure the wrong thing).

``"torch"`` runs ``impl.torch_ops`` (any device); ``"triton"`` runs ``impl.triton_ops`` (imported lazily, only
when requested); ``"auto"`` picks Triton for CUDA tensors and torch otherwise.
"""

from __future__ import annotations

import importlib
import os
from enum import StrEnum
from types import ModuleType

import torch

__all__ = ["BACKENDS", "Backend", "backend_module", "resolve_backend"]


class Backend(StrEnum):
    """A concrete backend (``"auto"`` is resolved to one of these before dispatch)."""

    TORCH = "torch"
    TRITON = "triton"


BACKENDS: tuple[str, ...] = ("auto", "torch", "triton")


def _interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve_backend(backend: object, device: torch.device) -> Backend:
    """The backend to run for inputs on ``device``.

    Raises:
        ValueError: ``backend`` is not one of "auto", "torch", "triton".
        RuntimeError: "triton" was requested but cannot run (no CUDA tensor and TRITON_INTERPRET != "1").
    """
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(map(repr, BACKENDS))}")
    if backend == "auto":
        return Backend.TRITON if device.type == "cuda" else Backend.TORCH
    if backend == "triton" and device.type != "cuda" and not _interpreter_enabled():
        raise RuntimeError(
            f"backend='triton' needs CUDA tensors or TRITON_INTERPRET=1 (Triton's CPU interpreter); "
            f"the inputs are on {device} and TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '<unset>')}"
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
