"""What the harness draws: ``Problem`` (one reproducible case), its distribution ``draw_problem`` with two
front-ends (the Hypothesis strategy ``problems`` for tests, the seeded ``sample_problems`` for the harness's search),
the pinned ``explicit_problems``, and the ``Capabilities`` a kernel declares.

A ``Problem`` is a complete, reproducible case: op, sizes, dtype, options, input regimes and seed. The draw fixes
the *structure* (so shrinking moves toward short sequences and simple regimes, not toward denormal arrays); the
values come from ``numpy.random.default_rng(seed)``. ``Problem.repro()`` prints a self-contained reproducer. The
simplest draw of every choice comes first (T short, one sequence, "random" values, beta in (0, 1]).

Regimes drawn (the bug classes they target):
- T = 1 (nothing to subtract), primes, T < chunk, chunk not dividing T, long sequences spanning several chunks
  (a tile straddling the chunk boundary, a backward walking chunks from T - C, rows of a last partial chunk left
  unwritten: the harness poisons ``torch.empty`` with NaN during the kernel call, see ``compare``);
- packed varlen ``cu_seqlens`` (B = 1) with at least one cut, often with a length-1 segment (sequences that see
  each other's keys or state);
- beta in (0, 1], in (0, 2), exactly 1, in [1.9, 1.99], unconstrained (normal, either sign; DeltaFormer's softmax
  write only); the delta rule stays in (0, 2) with unit keys (the step I - beta k k^T is then a contraction;
  outside it the recurrence itself diverges);
- value regimes (``ops.Op.value_regimes``):
  "random": standard normal values;
  "gap": large score gaps: keys of one norm R in random directions, queries (and DeltaFormer write vectors) along
  the *next* key's direction, so every row's largest score is a future key (or, for k-k writes, the diagonal),
  ``gap`` nats above every score the row may attend to (up to 120 nats for float32 arithmetic, 800 for float64):
  a softmax shifted by a maximum that includes future keys underflows to 0 / 0 there;
  "cancel": catastrophic cancellation in the residual: the values are built from chosen residuals r (rows of size
  1 and rows of size 2^-12, ``ops.Op.residual``) so that u_t = v_t - beta_t acc_t (the delta rule's v_t - S k_t)
  is tiny on half the rows; keys repeat earlier keys on some rows; for DeltaFormer attention with k-k writes the
  read-out query is aligned with its own key (o_t ~ u_t, so the cancellation reaches the output). A residual
  rounded to a low-precision dtype before the subtraction is wrong by many units in the last place there;
- adversarial scales: None (defaults), tiny (near-uniform softmax), large (near-argmax softmax);
- the round kernel on integer inputs with scale p / q, q odd (``ops.round_scale``), so no score is near a
  half-integer: round is discontinuous there, and a comparison across a rounding boundary would test nothing;
- dtypes float64, float32, float16, bfloat16 (values whose exact result does not fit the dtype are skipped and
  counted by ``compare``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Protocol, TypeVar

import numpy as np
from hypothesis import strategies as st

from proofs_checks.differential.bridge import heads
from proofs_checks.differential.ops import KERNELS, OPS, WRITES, record, round_scale
from proofs_checks.differential.tolerances import round_to_dtype
from spec._types import F64

__all__ = ["DTYPES", "EVERYTHING", "KERNELS", "OPS", "WRITES", "Capabilities", "Chooser", "Problem", "draw_problem",
           "explicit_problems", "problems", "round_scale", "round_to_dtype", "sample_problems"]

X = TypeVar("X")
DTYPES: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16")
SHORT_CHUNKS: tuple[int, ...] = (1, 2, 3, 4, 5, 8, 16, 31, 64)
"""Chunk sizes drawn with short sequences (most do not divide T)."""
LONG_CHUNKS: tuple[int, ...] = (16, 31, 64, 100)
"""Chunk sizes drawn with long sequences (several chunks, the last one partial unless T happens to divide)."""
HEAD_SIZES: tuple[int, ...] = (1, 2, 3, 4, 8, 16)
"""Key sizes K drawn (the "gap" regime draws from those >= 8: well-separated random directions need room)."""
VALUE_SIZES: tuple[int, ...] = (1, 2, 5, 8)
"""Value sizes V drawn when V != K (half the time)."""
BETA_REGIMES: tuple[str, ...] = ("unit", "two", "one", "near_two", "free")
"""beta in (0.05, 1), (0.05, 1.95), exactly 1, in (1.9, 1.99), standard normal."""
CANCEL_SMALL = 2.0**-12
"""The size of the small residual rows of the "cancel" regime: below float16's unit roundoff (2^-11)."""
READOUT_GAP = 30.0
"""The "cancel" regime's read-out score of a row with its own key (nats): the read-out then returns u_t."""


@dataclass(frozen=True)
class Capabilities:
    """What a kernel declares it supports; the harness draws only such cases and says what it left out.

    ``chunk_sizes`` / ``head_sizes`` None: the harness's own pools (``SHORT_CHUNKS``, ``LONG_CHUNKS``;
    ``HEAD_SIZES``, ``VALUE_SIZES``). ``same_head_size``: V = K always (kernels with one head size D).
    ``skip_unsupported``: a kernel that raises NotImplementedError on a case is counted as unsupported (listed in
    the summary), not failed.
    """

    kernels: tuple[str, ...] = KERNELS
    writes: tuple[str, ...] = WRITES
    varlen: bool = True
    state: bool = True
    chunk_sizes: tuple[int, ...] | None = None
    head_sizes: tuple[int, ...] | None = None
    same_head_size: bool = False
    skip_unsupported: bool = False

    def __post_init__(self) -> None:
        for name, chosen, known in (("kernels", self.kernels, KERNELS), ("writes", self.writes, WRITES)):
            unknown = [c for c in chosen if c not in known]
            if unknown or not chosen:
                raise ValueError(f"{name} must be a non-empty subset of {', '.join(known)}, got {chosen!r}")
        for name, sizes in (("chunk_sizes", self.chunk_sizes), ("head_sizes", self.head_sizes)):
            if sizes is not None and (not sizes or min(sizes) < 1):
                raise ValueError(f"{name} must be positive integers, got {sizes!r}")

    def not_checked(self, op: str) -> list[str]:
        """What these capabilities leave out of ``op``'s cases, one phrase each (empty: nothing)."""
        options = record(op).options
        out = []
        if "kernel" in options and self.kernels != KERNELS:
            out.append(f"write kernels {', '.join(k for k in KERNELS if k not in self.kernels)}")
        if "write" in options and self.writes != WRITES:
            out.append(f"write={', '.join(w for w in WRITES if w not in self.writes)}")
        if not self.varlen:
            out.append("packed sequences (cu_seqlens)")
        if record(op).stateful and not self.state:
            out.append("initial_state")
        if self.chunk_sizes is not None:
            out.append(f"chunk sizes other than {', '.join(map(str, self.chunk_sizes))}")
        if self.head_sizes is not None:
            out.append(f"head sizes other than {', '.join(map(str, self.head_sizes))}")
        if self.same_head_size:
            out.append("V != K")
        return out


EVERYTHING = Capabilities()
"""The default: every kernel, write, varlen, state and the harness's chunk pools."""


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
    values: str = "random"
    gap: float = 0.0
    """The "gap" regime's score gap in nats (0 otherwise)."""
    input_names: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        op_record = record(self.op)
        regimes = op_record.value_regimes(self.kernel)
        if self.values not in regimes:
            raise ValueError(f"values must be one of {', '.join(regimes)} for {self.op} with kernel "
                             f"{self.kernel!r}, got {self.values!r}")
        if self.beta_regime not in BETA_REGIMES:
            raise ValueError(f"beta_regime must be one of {', '.join(BETA_REGIMES)}, got {self.beta_regime!r}")
        names = op_record.inputs
        object.__setattr__(self, "input_names", (*names, "initial_state") if self.with_state else names)

    def options(self) -> dict[str, object]:
        """Keyword options of the public call besides tensors, chunk_size and cu_seqlens."""
        return {name: getattr(self, name) for name in record(self.op).options}

    def sequence_lengths(self) -> list[int]:
        """The length of every sequence (B of length T, or the packed lengths)."""
        if self.cu_seqlens is None:
            return [self.T] * self.B
        return [b - a for a, b in zip(self.cu_seqlens[:-1], self.cu_seqlens[1:], strict=True)]

    def arrays(self) -> dict[str, F64]:
        """The inputs in the impl layout, float64 holding values representable in ``dtype``."""
        op_record = record(self.op)
        rng = np.random.default_rng(self.seed)
        B, T, H, K, V = self.B, self.T, self.H, self.K, self.V
        first = op_record.inputs[0]
        pattern = op_record.keys(self.kernel)
        if pattern == "integer":
            out = {first: _round_inputs(rng, (B, T, H, K)), "k": _round_inputs(rng, (B, T, H, K))}
        else:
            out = {first: rng.standard_normal((B, T, H, K)), "k": rng.standard_normal((B, T, H, K))}
            if pattern == "unit":
                out["k"] = _unit(out["k"])
                if op_record.write is not None:
                    out[first] = _unit(out[first])
        out["v"] = rng.standard_normal((B, T, H, V))
        if "beta" in op_record.inputs:
            out["beta"] = _beta(rng, self.beta_regime, (B, T, H))
        if self.with_state:
            N = B if self.cu_seqlens is None else len(self.cu_seqlens) - 1
            out["initial_state"] = rng.standard_normal((N, H, K, V)) / math.sqrt(K)
        if self.values == "gap":
            self._gap(rng, out)
        out = {name: round_to_dtype(x, self.dtype) for name, x in out.items()}
        if self.values == "cancel":
            self._cancel(rng, out)
            out["v"] = round_to_dtype(out["v"], self.dtype)
        return out

    def _gap(self, rng: np.random.Generator, out: dict[str, F64]) -> None:
        """Keys R e_j, queries R e_{j+1} (next key's direction): see the module docstring ("gap")."""
        first = record(self.op).inputs[0]
        scale = 1.0 / math.sqrt(self.K) if self.scale is None else self.scale
        for head in heads(out, (first, "k"), self.cu_seqlens):
            n = head.rows.stop - head.rows.start
            directions = _unit(rng.standard_normal((n + 1, self.K)))
            cosines = directions @ directions.T - 2.0 * np.eye(n + 1)
            # every score a row may attend to is <= D c, the dominant one is D: gap D (1 - c) >= self.gap; c is
            # capped at 0.9 (scores at most 10 x the gap), so with few dimensions a few rows get less than the gap
            c = min(float(cosines.max()), 0.9) if n > 0 else 0.0
            radius = math.sqrt(self.gap / (1.0 - c) / scale)
            head.inputs["k"][:] = radius * directions[:n]
            head.inputs[first][:] = radius * directions[1:]

    def _cancel(self, rng: np.random.Generator, out: dict[str, F64]) -> None:
        """Residuals r of size 1 or CANCEL_SMALL and v built from them: see the module docstring ("cancel")."""
        op_record = record(self.op)
        residual = op_record.residual
        if residual is None:  # excluded by __post_init__: "cancel" is a value regime only of ops with a residual
            raise RuntimeError(f"{self.op} has no residual to cancel")
        aligned = self.op == "deltaformer_attn" and self.write == "k"
        for head in heads(out, op_record.inputs, self.cu_seqlens):
            x = head.inputs
            n = len(x["v"])
            if aligned:
                read_scale = 1.0 / math.sqrt(self.K) if self.scale is None else self.scale
                norms = np.maximum(np.sum(x["k"] ** 2, axis=-1, keepdims=True), 1e-300)
                x["q"][:] = round_to_dtype(x["k"] * (READOUT_GAP / read_scale) / norms, self.dtype)
            else:
                for t in range(1, n):
                    if rng.uniform() < 0.25:
                        x["k"][t] = x["k"][rng.integers(0, t)]
            small = rng.uniform(size=(n, 1)) < 0.5
            small[0] = False
            r = rng.standard_normal(x["v"].shape) * np.where(small, CANCEL_SMALL, 1.0)
            x["v"][:] = residual(x, head.state, r, **self.options())

    def repro(self, target: str | None = None, *, grads: bool = True, precision: str | None = None) -> str:
        """A self-contained reproducer: the Problem and the calls that compare a kernel with the spec."""
        module, _, name = (target or "").partition(":")
        head = f"from {module} import {name} as my_fn\n" if module and name and "." not in name else ""
        extra = ("" if grads else ", grads=False") + (f", precision={precision}" if precision else "")
        return (f"{head}from proofs_checks.differential import Problem, check_case{', Precision' if precision else ''}"
                f"\nproblem = {self!r}\n"
                f"result = check_case(my_fn, problem{extra})  # my_fn: the kernel; the spec side is the bridge\n"
                f"print(result.report())")

    def __repr__(self) -> str:
        defaults = {f.name: f.default for f in fields(self) if f.init}
        shown = [name for name in defaults if name not in ("values", "gap") or getattr(self, name) != defaults[name]]
        return "Problem(" + ", ".join(f"{name}={getattr(self, name)!r}" for name in shown) + ")"


def _unit(x: F64) -> F64:
    unit: F64 = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-300)
    return unit


def _beta(rng: np.random.Generator, regime: str, shape: tuple[int, ...]) -> F64:
    if regime == "unit":
        return rng.uniform(0.05, 1.0, shape)
    if regime == "two":
        return rng.uniform(0.05, 1.95, shape)
    if regime == "one":
        return np.ones(shape)
    if regime == "near_two":
        return rng.uniform(1.9, 1.99, shape)
    return rng.standard_normal(shape)


def _round_inputs(rng: np.random.Generator, shape: tuple[int, ...]) -> F64:
    """Integer entries in {-1, 0, 1} (zero with probability 1/2): integer dot products for the round kernel."""
    return rng.choice(np.array([-1.0, 0.0, 0.0, 1.0]), size=shape)


def gaps(dtype: str) -> tuple[float, ...]:
    """The score gaps drawn (nats): up to 120 where the arithmetic is float32 (exp underflows below -104 there),
    up to 800 in float64 (below -745)."""
    return (20.0, 120.0, 800.0) if dtype == "float64" else (20.0, 60.0, 120.0)


class Chooser(Protocol):
    """The two primitive choices a ``Problem`` is drawn from; the first option (the low end) is the simplest."""

    def pick(self, options: Sequence[X]) -> X: ...

    def integer(self, low: int, high: int) -> int: ...


class _HypothesisChooser:
    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw

    def pick(self, options: Sequence[X]) -> X:
        return self.draw(st.sampled_from(options))

    def integer(self, low: int, high: int) -> int:
        return self.draw(st.integers(low, high))


class _RandomChooser:
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def pick(self, options: Sequence[X]) -> X:
        return options[int(self.rng.integers(len(options)))]

    def integer(self, low: int, high: int) -> int:
        return int(self.rng.integers(low, high + 1))


def _varlen(choose: Chooser, T: int) -> tuple[int, ...]:
    """Up to 6 cuts, at least one; with probability 1/2 a length-1 segment is forced in."""
    cuts = {choose.integer(1, T - 1) for _ in range(choose.integer(1, min(6, T - 1)))}
    if T > 2 and choose.integer(0, 1):
        start = choose.integer(1, T - 2)
        cuts |= {start, start + 1}
    return (0, *sorted(cuts), T)


PRIMES = (2, 3, 5, 7, 11, 13, 17, 23, 31, 37)


def draw_problem(choose: Chooser, op: str, *, dtypes: tuple[str, ...] = ("float64", "float32"), max_t: int = 40,
                 long_t: int = 0, capabilities: Capabilities = EVERYTHING) -> Problem:
    """One ``Problem`` for ``op`` within ``capabilities`` (the distribution both front-ends share).

    T: with probability 1/4, when ``long_t`` > max_t, in [max_t, long_t] (several chunks); else 1 (1/8), a prime
    (3/8) or any in [1, max_t] (1/2). Chunk sizes from ``SHORT_CHUNKS`` / ``LONG_CHUNKS`` (or the declared ones),
    most of which do not divide T. Packed sequences 1/4, values "random" 1/2 (the rest split among the op's other
    value regimes), every beta regime, scale and dtype equally likely."""
    op_record = record(op)
    dtype = choose.pick(dtypes)
    declared = capabilities.chunk_sizes
    if long_t > max_t and choose.integer(0, 3) == 3:
        T = choose.integer(max_t, long_t)
        chunk = choose.pick(declared or LONG_CHUNKS)
    else:
        branch = choose.integer(0, 7)
        T = 1 if branch == 0 else choose.pick(PRIMES) if branch <= 3 else choose.integer(1, max_t)
        chunk = choose.pick(declared or SHORT_CHUNKS)
    packed = capabilities.varlen and T > 1 and choose.integer(0, 3) == 3
    cu = _varlen(choose, T) if packed else None
    kernel = choose.pick(capabilities.kernels) if "kernel" in op_record.options else "softmax"
    write = choose.pick(capabilities.writes) if "write" in op_record.options else "k"
    special = tuple(r for r in op_record.value_regimes(kernel) if r != "random")
    values = choose.pick(("random",) * max(1, len(special)) + special)
    B = 1 if cu is not None else choose.integer(1, 2)
    H = choose.integer(1, 3)
    keys = capabilities.head_sizes or HEAD_SIZES
    K = choose.pick(tuple(k for k in keys if k >= 8) or keys if values == "gap" else keys)
    same = capabilities.same_head_size or choose.integer(0, 1)
    V = K if same else choose.pick(capabilities.head_sizes or VALUE_SIZES)
    betas = op_record.beta_regimes(kernel)
    beta_regime = choose.pick(betas) if betas else "unit"
    scale = choose.pick(op_record.scales(kernel, K, choose.integer(1, max(1, K // 2))))
    with_state = op_record.stateful and capabilities.state and bool(choose.integer(0, 1))
    gap = choose.pick(gaps(dtype)) if values == "gap" else 0.0
    seed = choose.integer(0, 2**32 - 1)
    return Problem(op=op, B=B, T=T, H=H, K=K, V=V, dtype=dtype, chunk_size=chunk, cu_seqlens=cu, kernel=kernel,
                   write=write, beta_regime=beta_regime, scale=scale, with_state=with_state, seed=seed,
                   values=values, gap=gap)


@st.composite
def problems(draw: st.DrawFn, op: str, *, dtypes: tuple[str, ...] = ("float64", "float32"), max_t: int = 40,
             long_t: int = 0, capabilities: Capabilities = EVERYTHING) -> Problem:
    """The Hypothesis strategy of ``draw_problem`` (tests: Hypothesis shrinks toward its simplest choices)."""
    return draw_problem(_HypothesisChooser(draw), op, dtypes=dtypes, max_t=max_t, long_t=long_t,
                        capabilities=capabilities)


def sample_problems(op: str, count: int, *, seed: int = 0, dtypes: tuple[str, ...] = ("float64", "float32"),
                    max_t: int = 40, long_t: int = 0, capabilities: Capabilities = EVERYTHING) -> list[Problem]:
    """``count`` independent draws of ``draw_problem`` from ``numpy.random.default_rng(seed)`` (the harness's
    search: unlike Hypothesis's generation, which at a budget of 50 repeats near-identical structures and T = 1,
    every case is a fresh draw)."""
    choose = _RandomChooser(np.random.default_rng(seed))
    return [draw_problem(choose, op, dtypes=dtypes, max_t=max_t, long_t=long_t, capabilities=capabilities)
            for _ in range(count)]


def explicit_problems(op: str, *, dtypes: tuple[str, ...] = ("float64", "float32"),
                      capabilities: Capabilities = EVERYTHING) -> list[Problem]:
    """Cases every run checks first, one per bug class and dtype (within ``capabilities``):

    - several chunks, the last one partial (T = 2C + 3): chunk-boundary and last-chunk bugs, a backward that starts
      its walk at T - C;
    - packed sequences of lengths 2C + 1, 1 and C + 2 (a length-1 segment between two multi-chunk ones): sequences
      that see each other's keys or state;
    - the "gap" regime at the dtype's largest gap (softmax scores): a shift by a maximum over future keys;
    - the "cancel" regime with beta = 1 (u cancels) and, for the stateful ops, near 2: a residual rounded before the
      subtraction.
    """
    op_record = record(op)
    chunks = sorted(capabilities.chunk_sizes or (4,))
    C = next((c for c in chunks if c >= 2), chunks[0])
    kernel, write = capabilities.kernels[0], capabilities.writes[0]
    D = max(capabilities.head_sizes or (16,))

    def case(dtype: str, T: int, seed: int, *, B: int = 1, cu: tuple[int, ...] | None = None, beta: str = "unit",
             values: str = "random", gap: float = 0.0) -> Problem:
        return Problem(op=op, B=B, T=T, H=2, K=D, V=D, dtype=dtype, chunk_size=C, cu_seqlens=cu, kernel=kernel,
                       write=write, beta_regime=beta, scale=op_record.scales(kernel, D, 1)[0],
                       with_state=op_record.stateful and capabilities.state, seed=seed, values=values, gap=gap)

    lengths = (2 * C + 1, 1, C + 2)
    cu = tuple(int(c) for c in np.cumsum((0, *lengths)))
    out = []
    for dtype in dtypes:
        out.append(case(dtype, 2 * C + 3, 1, B=2))
        if capabilities.varlen:
            out.append(case(dtype, cu[-1], 2, cu=cu))
        if "gap" in op_record.value_regimes(kernel):
            out.append(case(dtype, 2 * C + 3, 3, values="gap", gap=max(gaps(dtype))))
        if "cancel" in op_record.value_regimes(kernel):
            out.extend(case(dtype, 2 * C + 3, 4, beta=beta, values="cancel") for beta in ("one", "near_two"))
    return out
