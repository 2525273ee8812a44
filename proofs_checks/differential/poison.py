"""NaN-poisoned allocation: while active, ``torch.empty`` and its relatives return NaN-filled floating tensors.

A kernel that leaves rows of its output (or of a gradient) unwritten then returns NaN there instead of whatever the
allocator handed back (often the right values of an earlier call, which hides the bug). ``compare`` runs every
kernel call and backward pass under it; the tests use it for their own calls.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

__all__ = ["poisoned_empty"]


def _poison(t: torch.Tensor) -> torch.Tensor:
    if t.is_floating_point() or t.is_complex():
        t.fill_(math.nan)
    return t


@contextmanager
def poisoned_empty() -> Iterator[None]:
    """torch.empty, torch.empty_like, torch.empty_strided and Tensor.new_empty return NaN-filled floating tensors
    while active (integer tensors are left alone). Not re-entrant across threads that start inside it."""
    empty, empty_like, empty_strided = torch.empty, torch.empty_like, torch.empty_strided
    new_empty = torch.Tensor.new_empty

    def fake_empty(*args: Any, **kwargs: Any) -> torch.Tensor:
        return _poison(empty(*args, **kwargs))

    def fake_empty_like(*args: Any, **kwargs: Any) -> torch.Tensor:
        return _poison(empty_like(*args, **kwargs))

    def fake_empty_strided(*args: Any, **kwargs: Any) -> torch.Tensor:
        return _poison(empty_strided(*args, **kwargs))

    def fake_new_empty(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return _poison(new_empty(self, *args, **kwargs))

    torch.empty, torch.empty_like, torch.empty_strided = fake_empty, fake_empty_like, fake_empty_strided
    torch.Tensor.new_empty = fake_new_empty  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        torch.empty, torch.empty_like, torch.empty_strided = empty, empty_like, empty_strided
        torch.Tensor.new_empty = new_empty  # type: ignore[method-assign]
