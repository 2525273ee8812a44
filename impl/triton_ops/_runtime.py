"""Runtime helpers for the Triton backend: interpreter detection, dtype policy and a small launch tuner.

The tuner replaces ``triton.autotune`` because the latter needs an active GPU driver to benchmark several
configurations (it fails with "0 active drivers" under ``TRITON_INTERPRET=1``). Here every kernel has an explicit,
ordered list of candidate launch configurations per head dimension (``configs``); on a GPU the first call for a
given key times each candidate with ``triton.testing.do_bench`` and keeps the fastest; under the interpreter the
first candidate is used without timing. ``impl.kernel_report`` compiles every candidate ahead of time, so a
configuration that spills or fails to compile cannot be selected unseen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from triton.testing import do_bench

from impl._backend import interpreter_enabled

__all__ = ["CHUNK_SIZE", "HEAD_DIMS", "LOW_PRECISION", "AotVariant", "LaunchConfig", "Tuner", "dot_precisions",
           "gpu_arch", "interpreting", "next_power_of_2", "planning_for_gpu", "tf32_precision"]


CHUNK_SIZE = 64
"""The chunk the linear-attention and delta-rule ops use when ``chunk_size`` is None (FLA's convention; no GPU was
available to measure another choice). The DeltaFormer ops use ``deltaformer.default_chunk_size`` instead."""

_PLANNING: list[bool] = [False]


@contextmanager
def planning_for_gpu() -> Iterator[None]:
    """While active, launch decisions are made as on a GPU (an H100) even under the interpreter: ``interpreting()``
    is False, ``gpu_arch`` is 90 and every ``Tuner`` returns its first GPU candidate without timing it. Used by the
    launch recorder (``impl.triton_ops.launch_recorder``), which replaces the launches themselves, so nothing runs,
    and by tests that run the GPU tiles in the interpreter."""
    _PLANNING[0] = True
    try:
        yield
    finally:
        _PLANNING[0] = False


def interpreting() -> bool:
    """True when Triton runs kernels through its CPU interpreter (``impl._backend.interpreter_enabled``) and no GPU
    launch plan is being recorded (``planning_for_gpu``)."""
    return not _PLANNING[0] and interpreter_enabled()


def next_power_of_2(n: int) -> int:
    """Smallest power of two >= n (n >= 1)."""
    return 1 << (max(1, n) - 1).bit_length()


def dot_precisions(dtype: torch.dtype) -> tuple[str, str]:
    """(input precision of the kernels' matmuls, input precision of the in-chunk solve) for an input dtype.

    fp32 and fp64 inputs: "ieee" for both, i.e. TF32 off (TF32 keeps 10 mantissa bits, a relative error of ~5e-4
    per product: the fp32 result would be no better than bf16, and the write stage's triangular solve amplifies it
    by the conditioning of I + diag(beta) P). fp16/bf16 inputs: the matmuls run on the tensor cores in the input
    type with fp32 accumulation; the solve's operands are fp32 (the residual v - beta * acc is kept in fp32), so it
    uses "tf32x3" (three TF32 products, about fp32 accuracy, still on the tensor cores).
    """
    if dtype in (torch.float16, torch.bfloat16):
        return "ieee", "tf32x3"
    return "ieee", "ieee"


def tf32_precision(dtype: torch.dtype) -> str:
    """Input precision of the fp32 products that must stay in registers at 64-row tiles (DeltaFormer backward: the
    in-chunk inverse and X = Ai^T rhs; delta rule: the WY kernels, forward and backward) for an input dtype: "tf32"
    for fp16/bf16 (one TF32 product; tf32x3 spilled there), "ieee" otherwise.

    Error argument: the other operands these results meet are rounded to the input dtype (DeltaFormer backward:
    dO = -beta X and P; delta rule: W = A K is stored in it, the state and v_new are rounded to it as operands;
    unit roundoff 2^-11 for fp16, 2^-8 for bf16), and the outputs are returned in it; a TF32 operand (unit
    roundoff 2^-11; bf16 and fp16 inputs are exact in TF32) adds an error of the same order for fp16 and well
    below it for bf16. fp32/fp64 inputs keep "ieee" (TF32 off), as everywhere."""
    return "tf32" if dtype in (torch.float16, torch.bfloat16) else "ieee"


def gpu_arch(device: torch.device) -> int:
    """The tile family for ``device``: 90 on Hopper or newer (64-row tiles reach wgmma), 80 below, 90 while a GPU
    launch plan is recorded (``planning_for_gpu``: the cost model assumes an H100)."""
    if _PLANNING[0] or device.type != "cuda":
        return 90
    major, _ = torch.cuda.get_device_capability(device)
    return 90 if major >= 9 else 80


@dataclass(frozen=True)
class LaunchConfig:
    """One candidate launch: constexpr block sizes plus ``num_warps`` / ``num_stages``."""

    blocks: dict[str, int]
    num_warps: int = 4
    num_stages: int = 2

    def kwargs(self) -> dict[str, int]:
        return {**self.blocks, "num_warps": self.num_warps, "num_stages": self.num_stages}


@dataclass
class Tuner:
    """Picks one ``LaunchConfig`` per key: the fastest candidate on a GPU; ``interpreter`` under the interpreter.

    The interpreter configuration uses 16-row tiles so that small test sequences span several tiles and chunks.
    """

    name: str
    candidates: Callable[..., Sequence[LaunchConfig]]
    interpreter: LaunchConfig
    cache: dict[tuple[Any, ...], LaunchConfig] = field(default_factory=dict)

    def pick(self, key: tuple[Any, ...], launch: Callable[[LaunchConfig], object], *cand_args: Any) -> LaunchConfig:
        """Return the configuration for ``key``; ``launch(cfg)`` must be idempotent (it may run several times)."""
        options = list(self.candidates(*cand_args))
        if _PLANNING[0]:
            return options[0]
        if key in self.cache:
            return self.cache[key]
        if interpreting():
            best = self.interpreter
        elif len(options) == 1:
            best = options[0]
        else:
            timings = [(float(do_bench(lambda c=c: launch(c), warmup=5, rep=20)), i) for i, c in enumerate(options)]
            best = options[min(timings)[1]]
        self.cache[key] = best
        return best


@dataclass(frozen=True)
class AotVariant:
    """One compilation the backend can launch: kernel, pointer/scalar signature, constexprs and launch options."""

    kernel: str
    fn: Any
    signature: dict[str, str]
    constexprs: dict[str, Any]
    num_warps: int
    num_stages: int
    archs: tuple[int, ...] = (80, 90)
    """the architectures that launch this variant (``impl.kernel_report`` compiles it for these only)"""

    def label(self) -> str:
        hidden = ("H", "ACC", "DOT_PRECISION", "SOLVE_PRECISION")
        shown = ",".join(f"{k}={getattr(v, 'name', v)}" for k, v in self.constexprs.items() if k not in hidden)
        return f"{shown},w{self.num_warps}s{self.num_stages}"


HEAD_DIMS: tuple[int, ...] = (16, 32, 64, 128, 256)
"""Head dimensions compiled ahead of time; other sizes in 16..256 pad to the same blocks (masked loads)."""

LOW_PRECISION: tuple[str, ...] = ("fp16", "bf16")
