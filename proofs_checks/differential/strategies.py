"""Hypothesis strategies for differential tests: sizes and regimes from Hypothesis, values from a seeded generator.

A ``Problem`` is a complete, reproducible case: op, sizes, dtype, options, input regime and seed. Hypothesis draws
the *structure* (so shrinking moves toward small shapes and simple regimes, not toward denormal arrays); the values
come from ``numpy.random.default_rng(seed)``. ``Problem.repro()`` prints a self-contained reproducer.

Regimes drawn (the bug classes they target):
- T = 1 (nothing to subtract), primes, T < chunk, chunk not dividing T, long sequences spanning several chunks
  (the FLA boundary bugs: a tile straddling the chunk boundary, a backward walking chunks from T - C);
- packed varlen ``cu_seqlens`` with length-1 segments (B = 1);
- beta in (0, 1], in (0, 2), unconstrained (normal, either sign) for DeltaFormer; (0, 1] and (0, 2) for the delta
  rule (unit keys: the step I - beta k k^T is then a contraction; outside (0, 2) the recurrence itself diverges);
- adversarial scales: None (defaults), tiny (near-uniform softmax), large (near-argmax softmax);
- the round kernel on integer inputs with scale p / q, q odd (see ``_round_inputs``), so no score is near a
  half-integer: round is discontinuous there, and a comparison across a rounding boundary would test nothing;
- dtypes float64, float32, and float16/bfloat16 (for those, beta in (0, 1] and moderate sizes, so outputs stay
  inside fp16's range).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from hypothesis import strategies as st

from spec._types import F64

__all__ = ["OPS", "Problem", "problems", "round_to_dtype"]

OPS: tuple[str, ...] = ("deltaformer_u", "deltaformer_attn", "delta_rule", "linear_attn", "softmax_attn")
KERNELS: tuple[str, ...] = ("softmax", "exp", "linear", "round")
DTYPES: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16")


def round_to_dtype(x: F64, dtype: str) -> F64:
    """Round float64 values to ``dtype`` and back (exactly representable in float64); what the kernel receives."""
    return torch.from_numpy(np.ascontiguousarray(x)).to(getattr(torch, dtype)).to(torch.float64).numpy()


@dataclass(frozen=True)
class Problem:
    """One differential case. ``arrays()`` gives the inputs (float64, already rounded to ``dtype``)."""

    op: str
    B: int
    T: int
    H: int
    K: int
    V: int
    dtype: str = "float64"
    chunk_size: int = 64
    cu_seqlens: tuple[int, ...] | None = None
    kernel: str = "softmax"
    write: str = "k"
    beta_regime: str = "unit"
    scale: float | None = None
    with_state: bool = False
    seed: int = 0
    input_names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        names = {"deltaformer_u": ("w", "k", "v", "beta"), "deltaformer_attn": ("q", "k", "v", "beta"),
                 "delta_rule": ("q", "k", "v", "beta"), "linear_attn": ("q", "k", "v"),
                 "softmax_attn": ("q", "k", "v")}[self.op]
        if self.with_state:
            names = (*names, "initial_state")
        object.__setattr__(self, "input_names", names)

    def options(self) -> dict[str, object]:
        """Keyword options of the public call besides tensors, chunk_size and cu_seqlens."""
        opts: dict[str, object] = {"scale": self.scale}
        if self.op.startswith("deltaformer"):
            opts["kernel"] = self.kernel
        if self.op == "deltaformer_attn":
            opts["write"] = self.write
        return opts

    def arrays(self) -> dict[str, F64]:
        """The inputs in the impl layout, float64 holding values representable in ``dtype``."""
        rng = np.random.default_rng(self.seed)
        B, T, H, K, V = self.B, self.T, self.H, self.K, self.V
        first = "w" if self.op == "deltaformer_u" else "q"
        if self.op.startswith("deltaformer") and self.kernel == "round":
            out = {first: _round_inputs(rng, (B, T, H, K)), "k": _round_inputs(rng, (B, T, H, K))}
        else:
            out = {first: rng.standard_normal((B, T, H, K)), "k": rng.standard_normal((B, T, H, K))}
            if self.op == "delta_rule" or (self.op.startswith("deltaformer") and self.kernel in ("linear", "exp")):
                # unit keys (and write vectors): DeltaNet's convention, and what keeps linear/exp writes bounded
                out["k"] = out["k"] / np.linalg.norm(out["k"], axis=-1, keepdims=True)
                if self.op.startswith("deltaformer"):
                    out[first] = out[first] / np.linalg.norm(out[first], axis=-1, keepdims=True)
        out["v"] = rng.standard_normal((B, T, H, V))
        if "beta" in self.input_names:
            if self.beta_regime == "unit":
                out["beta"] = rng.uniform(0.05, 1.0, (B, T, H))
            elif self.beta_regime == "two":
                out["beta"] = rng.uniform(0.05, 1.95, (B, T, H))
            else:
                out["beta"] = rng.standard_normal((B, T, H))
        if self.with_state:
            N = B if self.cu_seqlens is None else len(self.cu_seqlens) - 1
            out["initial_state"] = rng.standard_normal((N, H, K, V)) / math.sqrt(K)
        return {name: round_to_dtype(x, self.dtype) for name, x in out.items()}

    def repro(self) -> str:
        """A self-contained reproducer: the Problem and the calls that compare a kernel with the spec."""
        return (f"from proofs_checks.differential import Problem, check_case\n"
                f"problem = {self!r}\n"
                f"result = check_case(my_fn, problem)  # my_fn: your callable; the spec side is the bridge\n"
                f"print(result.report())")

    def __repr__(self) -> str:
        fields = ("op", "B", "T", "H", "K", "V", "dtype", "chunk_size", "cu_seqlens", "kernel", "write",
                  "beta_regime", "scale", "with_state", "seed")
        return "Problem(" + ", ".join(f"{name}={getattr(self, name)!r}" for name in fields) + ")"


def round_scale(K: int, p: int) -> float:
    """The round kernel's scale p / (2K + 1): an odd denominator, so integer dot products never land on a
    half-integer (2 p n = (2m + 1)(2K + 1) is impossible: even = odd); every score is >= 1 / (2 (2K + 1)) from one.
    """
    return p / (2 * K + 1)


def _round_inputs(rng: np.random.Generator, shape: tuple[int, ...]) -> F64:
    """Integer entries in {-1, 0, 1} (zero with probability 1/2): integer dot products for the round kernel."""
    return rng.choice(np.array([-1.0, 0.0, 0.0, 1.0]), size=shape)


def _varlen(draw: st.DrawFn, T: int) -> tuple[int, ...]:
    cuts = sorted(draw(st.sets(st.integers(1, T - 1), max_size=min(6, T - 1))))
    return (0, *cuts, T)


@st.composite
def problems(draw: st.DrawFn, op: str, *, dtypes: tuple[str, ...] = ("float64", "float32"),
             max_t: int = 40, long_t: int = 0, kernels: tuple[str, ...] = KERNELS,
             allow_state: bool = True, allow_varlen: bool = True) -> Problem:
    """A ``Problem`` for ``op``. T is mostly in [1, max_t] (primes and T = 1 pinned often); with probability 1/4,
    when ``long_t`` > 0, T is in [max_t, long_t] (several chunks). chunk_size in {1, 2, 3, 4, 5, 8, 16, 31, 64}
    (any of which may not divide T)."""
    dtype = draw(st.sampled_from(dtypes))
    low = dtype in ("float16", "bfloat16")
    if long_t > max_t and draw(st.integers(0, 3)) == 0:
        T = draw(st.integers(max_t, long_t))
        chunk = draw(st.sampled_from((16, 31, 64, 100)))
    else:
        T = draw(st.one_of(st.just(1), st.sampled_from((2, 3, 5, 7, 11, 13, 17, 23, 31, 37)), st.integers(1, max_t)))
        chunk = draw(st.sampled_from((1, 2, 3, 4, 5, 8, 16, 31, 64)))
    cu = _varlen(draw, T) if allow_varlen and T > 1 and draw(st.booleans()) and draw(st.booleans()) else None
    B = 1 if cu is not None else draw(st.integers(1, 2))
    H = draw(st.integers(1, 3))
    K = draw(st.sampled_from((1, 2, 3, 4, 8, 16)))
    V = K if draw(st.booleans()) else draw(st.sampled_from((1, 2, 5, 8)))
    kernel, write, beta_regime, scale, with_state = "softmax", "k", "unit", None, False
    if op.startswith("deltaformer"):
        kernel = draw(st.sampled_from(kernels))
        write = draw(st.sampled_from(("k", "q"))) if op == "deltaformer_attn" else "k"
        regimes = ("unit",) if low else ("unit", "two", "free") if kernel == "softmax" else ("unit", "two")
        beta_regime = draw(st.sampled_from(regimes))
        if kernel == "round":
            scale = round_scale(K, draw(st.integers(1, max(1, K // 2))))
        elif kernel == "softmax":
            scale = draw(st.sampled_from((None, None, 0.01, 2.0)))
    elif op == "delta_rule":
        beta_regime = draw(st.sampled_from(("unit",) if low else ("unit", "two")))
    if op in ("softmax_attn",):
        scale = draw(st.sampled_from((None, None, 0.01, 2.0)))
    if op in ("delta_rule", "linear_attn") and allow_state:
        with_state = draw(st.booleans())
    seed = draw(st.integers(0, 2**32 - 1))
    return Problem(op=op, B=B, T=T, H=H, K=K, V=V, dtype=dtype, chunk_size=chunk, cu_seqlens=cu, kernel=kernel,
                   write=write, beta_regime=beta_regime, scale=scale, with_state=with_state, seed=seed)
