"""Adapters from flash-linear-attention 0.6.0 (``pip install --no-deps fla-core==0.6.0 einops==0.8.2``, the ``fla``
extra) to the harness's signature, so ``python -m proofs_checks.differential examples.fla_adapters:<name> --op ...``
validates FLA's ops against the spec on CPU. Each adapter only translates: layout and names already match
(``[B, T, H, D]``, ``beta [B, T, H]``, ``cu_seqlens``, state ``[N, H, K, V]``); what FLA does not support raises
NotImplementedError (run with ``--skip-unsupported``), and the declared capabilities in
docs/differential_harness.md keep the draws inside what it does support.

- ``naive_deltaformer_attn``: ``fla.ops.deltaformer.naive_deltaformer_attn``, FLA's reference DeltaFormer (write
  with q, softmax write, scale 1/sqrt(D) for write and read-out, K == V, no cu_seqlens: the adapter runs packed
  sequences one by one; another scale is applied by rescaling q, which both scores share).
- ``parallel_deltaformer_u``: the u of FLA's chunked Triton DeltaFormer (``ParallelDeltaformerFunction``, forward and
  backward kernels; its read-out needs flash-attn on CUDA, so op ``deltaformer_u`` with w = q is checked instead).
  Runs in Triton's interpreter (``TRITON_INTERPRET=1``).
- ``chunk_delta_rule``: ``fla.ops.delta_rule.chunk_delta_rule`` (Triton; chunk sizes 16, 32, 64; no float32).

fla-core 0.6.0's ``fla/ops/deltaformer/parallel.py`` imports ``fla.layers.utils`` (padding helpers for its
``attention_mask`` path), which is not part of fla-core; ``_fla`` installs a stub for it so the module imports. Under
the interpreter two things the compiler accepts fail, and ``_fla`` works around them without touching the
arithmetic: FLA's ``@triton.autotune`` kernels keep their first config only (the interpreter has no driver to
benchmark configs on), and a kernel loop index is a Python int there, so ``i.to(tl.int64)`` fails: ``range`` in
FLA's op modules yields ints with a ``.to`` that returns the same value as a scalar tensor.
"""

from __future__ import annotations

import importlib
import itertools
import math
import sys
import types
from typing import Any

import torch
from torch import Tensor

from impl.triton_ops._runtime import interpreting

__all__ = ["chunk_delta_rule", "naive_deltaformer_attn", "parallel_deltaformer_u"]


def _unavailable(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError("fla.layers.utils is not part of fla-core (attention_mask padding)")


def _fla(module: str) -> Any:
    """Import ``module`` of fla-core, with the fla.layers.utils stub and single-config autotuners (interpreter)."""
    if importlib.util.find_spec("fla") is None:
        raise ModuleNotFoundError("fla-core is not installed: pip install --no-deps fla-core==0.6.0 einops==0.8.2")
    if "fla.layers.utils" not in sys.modules and importlib.util.find_spec("fla.layers") is None:
        stub = types.ModuleType("fla.layers.utils")
        stub.pad_input = stub.unpad_input = _unavailable  # type: ignore[attr-defined]
        sys.modules["fla.layers"] = types.ModuleType("fla.layers")
        sys.modules["fla.layers.utils"] = stub
    loaded = importlib.import_module(module)
    if interpreting():
        from triton.runtime.autotuner import Autotuner

        for name in list(sys.modules):
            if name.startswith("fla.ops."):
                sys.modules[name].range = _loop_range  # type: ignore[attr-defined]
                for value in vars(sys.modules[name]).values():
                    wrapped = value
                    while hasattr(wrapped, "fn"):  # through @triton.heuristics and other wrappers
                        if isinstance(wrapped, Autotuner) and len(wrapped.configs) > 1:
                            wrapped.configs = wrapped.configs[:1]
                        wrapped = wrapped.fn
    return loaded


class _LoopIndex(int):
    """An interpreter loop index that, like a compiled one, has ``.to(dtype)``."""

    def to(self, dtype: Any, **kwargs: Any) -> Any:
        import triton.language as tl

        return tl.full((), int(self), dtype)


def _loop_range(*bounds: Any) -> Any:
    return map(_LoopIndex, range(*(int(b) for b in bounds)))


def _deltaformer_options(q: Tensor, v: Tensor, kernel: str, write: str, scale: float | None) -> Tensor:
    """FLA's DeltaFormer: softmax write with q, K == V, scale 1/sqrt(D); returns q rescaled for another scale."""
    if kernel != "softmax" or write != "q":
        raise NotImplementedError(f"FLA's DeltaFormer has kernel='softmax', write='q' only, got {kernel!r}, {write!r}")
    if q.shape[-1] != v.shape[-1]:
        raise NotImplementedError(f"FLA's DeltaFormer needs K == V, got {q.shape[-1]} and {v.shape[-1]}")
    return q if scale is None else q * (scale * math.sqrt(q.shape[-1]))


def _per_sequence(fn: Any, cu_seqlens: Tensor | None, *tensors: Tensor) -> Tensor:
    if cu_seqlens is None:
        out: Tensor = fn(*tensors)
        return out
    bounds = [int(c) for c in cu_seqlens.tolist()]
    return torch.cat([fn(*(t[:, a:b] for t in tensors)) for a, b in itertools.pairwise(bounds)],
                     dim=1)


def naive_deltaformer_attn(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, *, write: str = "q",
                           kernel: str = "softmax", scale: float | None = None, chunk_size: int | None = None,
                           cu_seqlens: Tensor | None = None) -> Tensor:
    naive = _fla("fla.ops.deltaformer.naive").naive_deltaformer_attn
    q = _deltaformer_options(q, v, kernel, write, scale)
    return _per_sequence(naive, cu_seqlens, q, k, v, beta)


def parallel_deltaformer_u(w: Tensor, k: Tensor, v: Tensor, beta: Tensor, *, kernel: str = "softmax",
                           scale: float | None = None, chunk_size: int = 64,
                           cu_seqlens: Tensor | None = None) -> Tensor:
    parallel = _fla("fla.ops.deltaformer.parallel")
    w = _deltaformer_options(w, v, kernel, "q", scale)
    u: Tensor = parallel.ParallelDeltaformerFunction.apply(w, k, v, beta, chunk_size, cu_seqlens)
    return u


def chunk_delta_rule(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, *, scale: float | None = None,
                     initial_state: Tensor | None = None, output_final_state: bool = False, chunk_size: int = 64,
                     cu_seqlens: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    if q.dtype == torch.float32:
        raise NotImplementedError("FLA's chunk_delta_rule does not support float32")
    chunk = _fla("fla.ops.delta_rule").chunk_delta_rule
    o, state = chunk(q, k, v, beta, scale=scale, initial_state=initial_state, output_final_state=output_final_state,
                     cu_seqlens=cu_seqlens, chunk_size=chunk_size)
    return o, state
