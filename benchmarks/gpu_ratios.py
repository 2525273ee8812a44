"""The GPU benchmark: the Triton DeltaFormer against causal SDPA (flash), gated on correctness, in one command.

    PYTHONPATH=. python -m benchmarks.ratios --device cuda [--out gpu_ratios.json] [--repeats N]

On a CUDA machine: first the correctness gate (``impl.deltaformer_attn(..., backend="triton")`` on the GPU against
the float64 spec through the public harness, outputs and gradients, fp32 and bf16, D = 64 and 128; no timing if any
case fails), then for T in {2048, 8192, 32768}, H = 16, D in {64, 128}, B = 1, bf16: the Triton forward and
forward+backward against ``torch.nn.functional.scaled_dot_product_attention(is_causal=True)`` restricted to its
flash kernel, each pair timed in interleaved rounds with CUDA events (median of the per-round ratios, as on CPU),
the fraction of the roofline estimate of impl/triton_ops/README.md ("Performance model") each reaches, and next to
each measured Triton time the cost model's prediction (``impl.triton_ops.cost_model.predict``: the driver's launches
recorded, H100 assumptions) and the measured / predicted ratio, so the first GPU run also measures the model's error.
Prints a table and writes every figure (with the torch / triton / GPU versions) to a JSON file. Without CUDA it exits
with a message saying so (exit code 1).

Written for the machine that may be lent (Python 3.12, torch 2.11, triton 3.6, no network, run from the checkout
with PYTHONPATH=.): no version asserts, optional APIs feature-detected. One ``Row`` per timed shape: add a field to
add a column (the table and the JSON follow the dataclass). Everything except the CUDA timer runs on CPU too (the
Triton interpreter, small shapes, fp16): tests/test_benchmarks_gpu.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional

import impl

SHAPES: tuple[tuple[int, int], ...] = tuple((T, D) for T in (2048, 8192, 32768) for D in (64, 128))
"""(T, D) pairs timed on the GPU, H = 16, B = 1."""

HEADS = 16

PEAK_FLOPS: dict[torch.dtype, float] = {torch.bfloat16: 989e12, torch.float16: 989e12, torch.float32: 67e12}
"""Dense tensor-core peak of an H100 / H200 SXM (FLOP/s), the roofline of impl/triton_ops/README.md; fp32 runs on
the CUDA cores (no TF32 in the kernels' fp32 policy)."""

Timer = Callable[[Callable[[], object]], float]
"""Seconds one call of a function takes."""


def read_value_blocks(D: int) -> int:
    """NV: the read-out's value column blocks (all of V up to 128 in one block, blocks of 64 above)."""
    return 1 if D <= 128 else math.ceil(D / 64)


def roofline_seconds(T: int, H: int, D: int, dtype: torch.dtype, *, backward: bool) -> float:
    """The README's performance model at the tensor-core peak: forward 2 T^2 D (the write prefix and in-chunk
    products) plus 2 T^2 D NV (the read-out) FLOPs per head, 4 T^2 D at D <= 128; forward + backward adds the
    read-out backward 7 T^2 D and the u backward 8 T^2 D (K = V = D, causal halves included)."""
    flops = 2 * T * T * D * (1 + read_value_blocks(D))
    if backward:
        flops += 15 * T * T * D
    return H * flops / PEAK_FLOPS[dtype]


def model_seconds(T: int, H: int, D: int, dtype: torch.dtype, *, backward: bool) -> float:
    """The cost model's time for one call at B = 1 (``impl.triton_ops.cost_model.predict``: the launches the driver
    issues, recorded on meta tensors, under its H100 assumptions; the inference forward, or the autograd forward
    plus the backward). NaN, with a message, where the model cannot run (it patches Triton's launch hook, which
    another Triton version may lay out differently): the timing goes on without it."""
    try:
        from impl.triton_ops import cost_model

        return cost_model.predict(1, T, H, D, dtype=dtype, backward=backward)
    except Exception as exc:  # a benchmark on a lent machine must not stop for the model
        print(f"  cost model unavailable here ({type(exc).__name__}: {exc}); model columns are NaN", flush=True)
        return math.nan


@dataclass
class Row:
    """One timed shape. Times in seconds (median over rounds); ratios are medians of per-round ratios."""

    T: int
    H: int
    D: int
    dtype: str
    fwd_s: float
    model_fwd_s: float
    sdpa_fwd_s: float
    fwd_ratio: float
    fwdbwd_s: float
    model_fwdbwd_s: float
    sdpa_fwdbwd_s: float
    fwdbwd_ratio: float
    roofline_fwd_s: float
    roofline_fwdbwd_s: float
    fwd_roofline_fraction: float
    fwdbwd_roofline_fraction: float
    fwd_measured_over_model: float
    fwdbwd_measured_over_model: float


def table(rows: list[Row]) -> str:
    """A markdown table with one column per ``Row`` field."""
    names = [f.name for f in dataclasses.fields(Row)]

    def cell(x: object) -> str:
        return f"{x:.4g}" if isinstance(x, float) else str(x)

    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    lines += ["| " + " | ".join(cell(getattr(r, n)) for n in names) + " |" for r in rows]
    return "\n".join(lines)


def cuda_seconds(fn: Callable[[], object]) -> float:
    """One call's GPU time from CUDA events (the kernels' time, not Python's launch overhead between calls)."""
    start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
    end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
    start.record()
    fn()
    end.record()
    end.synchronize()
    return float(start.elapsed_time(end)) / 1e3


def wall_seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def paired(fns: dict[str, Callable[[], object]], repeats: int, timer: Timer) -> dict[str, list[float]]:
    """Times of each function in each of ``repeats`` rounds, the functions run one after another in every round
    (after two untimed warm-up calls each: compilation and the launch tuner's first-call timing)."""
    for fn in fns.values():
        fn()
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timer(fn))
    return times


def median_ratio(numerator: list[float], denominator: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


@contextlib.contextmanager
def flash_only(device: torch.device) -> Iterator[None]:
    """SDPA restricted to its flash kernel on CUDA (feature-detected: torch.nn.attention.sdpa_kernel); elsewhere,
    or without that API, SDPA's own choice."""
    attention = getattr(torch.nn, "attention", None)
    sdpa_kernel = getattr(attention, "sdpa_kernel", None)
    backend = getattr(getattr(attention, "SDPBackend", None), "FLASH_ATTENTION", None)
    if device.type != "cuda" or sdpa_kernel is None or backend is None:
        yield
        return
    with sdpa_kernel(backend):
        yield


def time_shape(T: int, H: int, D: int, dtype: torch.dtype, device: torch.device, repeats: int,
               timer: Timer) -> Row:
    """Triton forward and forward+backward vs causal SDPA at one shape (inputs [1, T, H, D], unit-norm keys)."""
    gen = torch.Generator(device=device).manual_seed(T + D)
    q, k, v = (torch.randn(1, T, H, D, generator=gen, device=device) for _ in range(3))
    k = functional.normalize(k, dim=-1)
    beta = torch.rand(1, T, H, generator=gen, device=device)
    q, k, v, beta = (x.to(dtype) for x in (q, k, v, beta))
    qs, ks, vs = (x.transpose(1, 2).contiguous() for x in (q, k, v))
    leaves = [x.detach().clone().requires_grad_(True) for x in (q, k, v, beta)]
    s_leaves = [x.detach().clone().requires_grad_(True) for x in (qs, ks, vs)]
    cot = torch.randn(1, T, H, D, generator=gen, device=device).to(dtype)
    cot_s = cot.transpose(1, 2).contiguous()
    triton_attn = partial(impl.deltaformer_attn, backend="triton")

    def fwd() -> object:
        with torch.no_grad():
            return triton_attn(q, k, v, beta)

    def sdpa_fwd() -> object:
        with torch.no_grad(), flash_only(device):
            return functional.scaled_dot_product_attention(qs, ks, vs, is_causal=True)

    def fwdbwd() -> object:
        return torch.autograd.grad(triton_attn(*leaves), leaves, cot)

    def sdpa_fwdbwd() -> object:
        with flash_only(device):
            o = functional.scaled_dot_product_attention(s_leaves[0], s_leaves[1], s_leaves[2], is_causal=True)
            return torch.autograd.grad(o, s_leaves, cot_s)

    f = paired({"fwd": fwd, "sdpa": sdpa_fwd}, repeats, timer)
    b = paired({"fwdbwd": fwdbwd, "sdpa": sdpa_fwdbwd}, repeats, timer)
    roof_f = roofline_seconds(T, H, D, dtype, backward=False)
    roof_b = roofline_seconds(T, H, D, dtype, backward=True)
    model_f = model_seconds(T, H, D, dtype, backward=False)
    model_b = model_seconds(T, H, D, dtype, backward=True)
    fwd_s, fwdbwd_s = statistics.median(f["fwd"]), statistics.median(b["fwdbwd"])
    return Row(T=T, H=H, D=D, dtype=str(dtype).removeprefix("torch."), fwd_s=fwd_s, model_fwd_s=model_f,
               sdpa_fwd_s=statistics.median(f["sdpa"]), fwd_ratio=median_ratio(f["fwd"], f["sdpa"]),
               fwdbwd_s=fwdbwd_s, model_fwdbwd_s=model_b, sdpa_fwdbwd_s=statistics.median(b["sdpa"]),
               fwdbwd_ratio=median_ratio(b["fwdbwd"], b["sdpa"]), roofline_fwd_s=roof_f, roofline_fwdbwd_s=roof_b,
               fwd_roofline_fraction=roof_f / fwd_s, fwdbwd_roofline_fraction=roof_b / fwdbwd_s,
               fwd_measured_over_model=fwd_s / model_f, fwdbwd_measured_over_model=fwdbwd_s / model_b)


def on_device(fn: Callable[..., Tensor], device: torch.device) -> Callable[..., Tensor]:
    """``fn`` with its tensor arguments (and cu_seqlens) moved to ``device`` and its output back to the CPU, so the
    harness (which builds CPU tensors) checks a GPU kernel; gradients flow through both moves."""

    def call(*args: Tensor, **kwargs: Any) -> Tensor:
        if kwargs.get("cu_seqlens") is not None:
            kwargs["cu_seqlens"] = kwargs["cu_seqlens"].to(device)
        return fn(*(a.to(device) for a in args), **kwargs).to("cpu")

    return call


def gate_problems(dtypes: tuple[str, ...], dims: tuple[int, ...], T: int) -> list[Any]:
    """The correctness gate's cases: deltaformer_attn, every dtype and head dim, several chunks of the default
    size (T not a multiple of 64), one softmax case with write q and one linear case with write k each."""
    from proofs_checks.differential import Problem

    return [Problem("deltaformer_attn", B=1, T=T, H=2, K=D, V=D, dtype=dtype, chunk_size=64, kernel=kernel,
                    write=write, seed=D + i)
            for dtype in dtypes for D in dims for i, (kernel, write) in enumerate((("softmax", "q"), ("linear", "k")))]


def correctness_gate(device: torch.device, problems: list[Any]) -> list[str]:
    """Run the harness (outputs and gradients) on each problem with the Triton backend on ``device``; returns the
    report of every failing or skipped case (empty: the gate is green)."""
    from proofs_checks.differential import Precision, check_case

    # the backend's declared policy: u and the backward's dO are stored in the input dtype and matmul operands are
    # rounded to it (FlashAttention-style), so bf16 cases are budgeted as FLA-style kernels (no effect on fp32)
    precision = Precision(intermediates="input")
    fn = on_device(partial(impl.deltaformer_attn, backend="triton"), device)
    failures = []
    for problem in problems:
        result = check_case(fn, problem, grads=True, precision=precision)
        name, ratio = result.worst()
        print(f"  gate {problem.dtype} D={problem.K} {problem.kernel}/{problem.write}: worst {name} error/budget "
              f"{ratio:.3g} {'ok' if result.passed and result.skipped is None else 'FAIL'}", flush=True)
        if not result.passed or result.skipped is not None:
            failures.append(result.report())
    return failures


def environment(device: torch.device) -> dict[str, str]:
    import triton

    return {"python": sys.version.split()[0], "torch": torch.__version__, "triton": triton.__version__,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)}


def run(device: torch.device, shapes: tuple[tuple[int, int], ...], heads: int, dtype: torch.dtype, repeats: int,
        timer: Timer, gate: list[Any], out: str) -> list[Row]:
    """Gate, then time every shape; writes {"environment", "gate", "rows"} to ``out`` and returns the rows.
    SystemExit (code 1) with the failing reports when the gate is red."""
    print(f"correctness gate ({len(gate)} cases, Triton on {device} vs the float64 spec):", flush=True)
    failures = correctness_gate(device, gate)
    record: dict[str, Any] = {"environment": environment(device), "gate": {"cases": len(gate), "failures": failures}}
    if failures:
        with open(out, "w") as f:
            json.dump(record, f, indent=2)
        raise SystemExit("correctness gate failed; no speed figure from a red kernel:\n" + "\n".join(failures))
    rows: list[Row] = []
    print(table(rows), flush=True)
    for T, D in shapes:
        rows.append(time_shape(T, heads, D, dtype, device, repeats, timer))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
        record["rows"] = [dataclasses.asdict(r) for r in rows]
        with open(out, "w") as f:
            json.dump(record, f, indent=2)
    return rows


def main(out: str, repeats: int) -> None:
    """``python -m benchmarks.ratios --device cuda``: the whole benchmark on the first CUDA device."""
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks.ratios --device cuda needs a CUDA GPU: torch.cuda.is_available() is False on "
                         "this machine (torch " + torch.__version__ + "). Nothing was timed.")
    device = torch.device("cuda")
    gate = gate_problems(("float32", "bfloat16"), (64, 128), T=200)
    rows = run(device, SHAPES, HEADS, torch.bfloat16, repeats, cuda_seconds, gate, out)
    print(f"\nwritten to {out} ({len(rows)} rows)")
