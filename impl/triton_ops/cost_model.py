"""A cost model of the Triton DeltaFormer backend and of its yardsticks, on a GPU this machine does not have.

``python -m impl.triton_ops.cost_model [--T 8192 --H 16 --D 128 --B 1 --chunk-size N]`` prints, side by side:
this backend's forward and backward, flash-linear-attention 0.6.0's (when ``fla-core`` is installed: ``pip install
-e '.[fla]'``) and two causal FlashAttention-3-class forwards (the ideal: DeltaFormer is two attention-like passes).

How a figure is made:
1. **Launches are recorded, not written down**: the driver runs on ``meta`` tensors with every kernel launch replaced
   by a recorder (``launch_recorder.record``), which sees each launch's grid, arguments and constexprs, and the
   PyTorch operators that launch kernels.
2. **Work per launch** from one formula per kernel (``FORMULAS``): tensor-core FLOPs, CUDA-core FLOPs, HBM bytes, the
   largest program's share and the dependent latency-bound steps of the longest program. The formulas count what the
   kernel's loops execute (padded tiles included); tests/test_cost_model.py checks them against hand counts.
   HBM bytes count each tensor a launch touches once (re-reads by other programs of the same launch are assumed to
   hit L2) and every fp32 intermediate written and read back.
3. **Time per launch** = launch overhead + max(throughput bound, critical-program bound), where the throughput bound
   is max(tensor-core time + CUDA-core time, HBM time) over the whole GPU and the critical-program bound is the
   largest program's work on one SM plus its dependent steps times a step latency (``Assumptions``). The total is
   the sum over launches (no overlap between launches).

Limits: fixed-length batches only (``cu_seqlens`` needs host reads of the lengths); the tensor-core kind of a Triton
kernel follows Triton's rule (wgmma on sm_90a for a dot with at least 64 rows per warp group of 4 warps, else
mma.sync), which ``python -m impl.kernel_report`` confirms per compiled variant; achievable fractions of peak are
assumptions, printed with every table. A GPU run settles the numbers (``predict`` gives the model's figure next to a
measured one).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import torch

from impl.triton_ops.launch_recorder import Launch, TensorInfo, record

__all__ = ["FORMULAS", "Assumptions", "Estimate", "Work", "estimate", "fa3_forward_launches", "fla_available",
           "main", "predict", "record_deltaformer", "record_fla", "work"]


@dataclass(frozen=True)
class Assumptions:
    """An H100 SXM5 (the GPU the targets name) and the fractions of peak kernels of each kind achieve."""

    sms: int = 132
    tc_peak: float = 989e12
    """dense fp16/bf16 tensor-core FLOP/s (tf32 is half of it; a tf32x3 product costs three tf32 products)"""
    fp32_peak: float = 67e12
    """CUDA-core fp32 FLOP/s"""
    hbm: float = 3.35e12
    """HBM3 bytes/s"""
    frac_wgmma: float = 0.5
    """Triton kernel whose matmuls are wgmma (Triton's FlashAttention reaches 45-60% of peak on an H100)"""
    frac_mma: float = 0.3
    """kernel on mma.sync (FlashAttention-2 on an H100: about 35% of the wgmma peak)"""
    frac_fa3: float = 0.7
    """FlashAttention-3-class kernel (warp-specialised wgmma; 600-740 TFLOP/s reported at D = 128)"""
    frac_fp32: float = 0.5
    frac_trsm: float = 0.25
    """cuBLAS fp32 triangular solve, of the fp32 peak (blocked: small diagonal solves and fp32 GEMM updates;
    uncertain, the table also prints FLA's forward at 0.1 and 0.5)"""
    trsm_columns: int = 32
    """right-hand-side columns per thread block of a triangular solve (the columns are independent)"""
    frac_hbm: float = 0.8
    launch_us: float = 5.0
    """per launch: launch latency plus the ramp-up and tail of a kernel"""
    step_us: float = 0.3
    """one dependent latency-bound step: a row of an in-register substitution (reductions across warps, a barrier,
    a shared-memory round trip) or a small dot whose result the next step needs"""

    def describe(self) -> str:
        return ", ".join(f"{f.name}={getattr(self, f.name):g}" for f in fields(self))


@dataclass(frozen=True)
class Work:
    """What one launch does. ``tc`` counts fp16/bf16 tensor-core FLOPs (a tf32x3 product counts 6x: tf32 runs at
    half rate and tf32x3 is three tf32 products); ``unit`` names the kind of kernel, which sets the fraction of peak:
    "wgmma", "mma", "fa3", "fp32" (no matmul), "trsm", "memory"."""

    tc: float = 0.0
    fp32: float = 0.0
    hbm: float = 0.0
    program_tc: float = 0.0
    program_fp32: float = 0.0
    steps: int = 0
    unit: str = "wgmma"
    tc_mma: float = 0.0
    """tensor-core FLOPs of a kernel whose other matmuls (``tc``) are wgmma but these are mma.sync (smaller tiles)"""
    program_unit: str = ""
    """the kind of the largest program's matmuls when it differs from ``unit``"""
    side_program_tc: float = 0.0
    """the largest program of another role in the same launch (no dependent steps), at the ``unit`` rate"""


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _tc_unit(rows: int, num_warps: int) -> str:
    """Triton's choice on sm_90a: wgmma when a dot has >= 64 rows (one warp group of 4 warps per 64 rows), else
    mma.sync."""
    return "wgmma" if rows >= 64 and num_warps % 4 == 0 else "mma"


def _softmax_flops(kernel: str) -> int:
    """CUDA-core FLOPs per score element: online softmax (max, subtract, exp, sum, rescale) or the other kernels."""
    return 6 if kernel == "softmax" else 2


def _dims(launch: Launch, name: str) -> tuple[int, int, int]:
    """(sequences N, sequence length L, bytes per input element) from the [B, T, H, *] tensor ``name``."""
    t = launch.args[name]
    assert isinstance(t, TensorInfo)
    return t.shape[0], t.shape[1], t.itemsize


# --- this backend --------------------------------------------------------------------------------------------------

def _fwd_chunk(launch: Launch) -> Work:
    """One launch of the per-chunk schedule: the solver of chunk i_c (one program per sequence and head: merge the
    partials, fold the previous chunk and the earlier row tiles, the diagonal tiles' blocked inverse and products)
    and the partial-statistics programs of chunk i_c + 1 over key splits of KS keys."""
    a = launch.args
    _, L, e = _dims(launch, "w")
    NH = launch.grid[1]
    K, V, BT, BTS, BS, BK, BV = a["K"], a["V"], a["BT"], a["BTS"], a["BS"], a["BK"], a["BV"]
    C, i_c, KS = a["C"], a["i_c"], a["KS"]
    NTC = cdiv(a["CR"], BT)
    ns_write = (launch.grid[0] - 1) // NTC
    solves = 2 if a["STORE_R"] else 1
    sm = _softmax_flops(a["KERNEL"])
    # the solver
    cs = i_c * C
    rows = max(0, min(C, L - cs))
    levels = max(0, (BTS // 16).bit_length() - 1)
    solve = fp32 = steps = 0
    for i in range(cdiv(rows, BTS)):
        keys = cs + i * BTS - max(cs - C, 0)
        folded = BTS * BS * cdiv(keys, BS)
        solve += folded * 2 * (BK + BV) + BTS * BTS * 2 * BK
        solve += 6 * (levels * 2 * 2 * BTS**3 + solves * 2 * BTS * BTS * BV)
        fp32 += 15 * 3 * BTS * BTS + sm * (folded + BTS * BTS) + a["NS_READ"] * BTS * (3 * BV + 8)
        steps += 15 + 2 * levels + solves
    solve_hbm = (rows * (2 * K * e + 2 * V * e + 4 + (4 * V if a["STORE_R"] else 0))
                 + min(C, cs) * (K + V) * e + a["NS_READ"] * rows * (4 * V + 8))
    # the partial-statistics programs
    rows1 = max(0, min(C, L - cs - C))
    active = cdiv(rows1, BT) if ns_write else 0
    split_keys = [max(0, min(KS, cs - s * KS)) for s in range(ns_write)]
    part = [BT * BS * cdiv(n, BS) * 2 * (BK + BV) for n in split_keys]
    part_hbm = (sum(split_keys) * (K + V) * e + ns_write * rows1 * (K * e + 4 * V + 8)) if ns_write else 0
    return Work(tc=NH * active * sum(part), tc_mma=NH * solve,
                fp32=NH * (fp32 + sm * active * sum(BT * BS * cdiv(n, BS) for n in split_keys)),
                hbm=NH * (solve_hbm + part_hbm), program_tc=solve, program_fp32=fp32, steps=steps,
                program_unit=_tc_unit(BTS, a["num_warps"]), side_program_tc=max(part, default=0),
                unit=_tc_unit(BT, a["num_warps"]))


def _fwd_read(launch: Launch) -> Work:
    a = launch.args
    _, L, e = _dims(launch, "q")
    NV, NH = launch.grid[1], launch.grid[2]
    K, V, BT, BS, BK, BV = a["K"], a["V"], a["BT"], a["BS"], a["BK"], a["BV"]
    scores = [BT * BS * cdiv(min((i + 1) * BT, L), BS) for i in range(cdiv(L, BT))]
    hbm = NH * L * ((2 * K + 2 * V) * e + 4)
    return Work(tc=sum(scores) * 2 * (BK + BV) * NV * NH, fp32=6 * sum(scores) * NV * NH, hbm=hbm,
                program_tc=max(scores) * 2 * (BK + BV), unit=_tc_unit(BT, a["num_warps"]))


def _rowdot(launch: Launch) -> Work:
    a = launch.args
    A, Bt = a["a"], a["b"]
    R, V = a["R"], a["V"]
    return Work(fp32=2 * R * V, hbm=R * V * (A.itemsize + Bt.itemsize) + 4 * R, unit="memory")


def _grad_bytes(launch: Launch, name: str) -> int:
    """Bytes per row of a gradient output ``name`` (its dtype; fp32 when not recorded) plus, when the pass adds
    another pass's gradient (ACCUMULATE), that input's row."""
    a = launch.args
    K: int = a["K"]
    out = a.get(name)
    size = out.itemsize if isinstance(out, TensorInfo) else 4
    extra = a.get(f"{name}_in")
    return K * size + (K * extra.itemsize if a.get("ACCUMULATE") and isinstance(extra, TensorInfo) else 0)


def _attn_bwd_bytes(launch: Launch, L: int, NH: int, e: int, out: int) -> int:
    a = launch.args
    K: int = a["K"]
    V: int = a["V"]
    g: int = a["g"].itemsize
    return NH * L * (2 * K * e + V * e + V * g + 8 + out)


def _bwd_dq(launch: Launch) -> Work:
    a = launch.args
    _, L, e = _dims(launch, "q")
    NH = launch.grid[1]
    BT, BS, BK, BV = a["BT"], a["BS"], a["BK"], a["BV"]
    pairs = [BT * BS * cdiv(min(i * BT + BT, L), BS) for i in range(cdiv(L, BT))]
    per_pair = 2 * (2 * BK + BV)
    return Work(tc=sum(pairs) * per_pair * NH, fp32=8 * sum(pairs) * NH,
                hbm=_attn_bwd_bytes(launch, L, NH, e, _grad_bytes(launch, "dq")), program_tc=max(pairs) * per_pair,
                unit=_tc_unit(BT, a["num_warps"]))


def _bwd_dk(launch: Launch) -> Work:
    a = launch.args
    _, L, e = _dims(launch, "q")
    NH = launch.grid[1]
    BT, BS, BK, BV = a["BT"], a["BS"], a["BK"], a["BV"]
    pairs = [BT * BS * (cdiv(L, BS) - (i * BT) // BS) for i in range(cdiv(L, BT))]
    per_pair = 2 * (2 * BK + (1 if a["WRITE"] else 2) * BV)
    out = _grad_bytes(launch, "dk") + (0 if a["WRITE"] else 4 * a["V"])
    return Work(tc=sum(pairs) * per_pair * NH, fp32=8 * sum(pairs) * NH, hbm=_attn_bwd_bytes(launch, L, NH, e, out),
                program_tc=max(pairs) * per_pair, unit=_tc_unit(BT, a["num_warps"]))


_PRODUCT_COST = {"tf32": 2, "tf32x3": 6}
"""bf16-product equivalents of one product in a solve precision (tf32 runs at half the bf16 rate)."""


def _bwd_inverse(launch: Launch) -> Work:
    """Every diagonal tile's inverse, one program per (chunk, tile): the tile's scores, 15 substitution steps on
    the 16 x 16 blocks (CUDA cores), two products per doubling level (solve precision); stores Ai^T."""
    a = launch.args
    _, L, e = _dims(launch, "w")
    NH = launch.grid[1]
    K, BTS, BK, C = a["K"], a["BTS"], a["BK"], a["C"]
    n_chunks = launch.grid[0] // cdiv(a["CR"], BTS)
    tiles = sum(cdiv(max(0, min(C, L - c * C)), BTS) for c in range(n_chunks))
    levels = max(0, (BTS // 16).bit_length() - 1)
    program = BTS * BTS * 2 * BK + _PRODUCT_COST.get(a["SOLVE_PRECISION"], 1) * levels * 2 * 2 * BTS**3
    program_fp32 = 15 * 3 * BTS * BTS + 4 * BTS * BTS
    return Work(tc=NH * tiles * program, fp32=NH * tiles * program_fp32, hbm=NH * L * (2 * K * e + e + 4 + 4 * BTS),
                program_tc=program, program_fp32=program_fp32, steps=15 + 2 * levels,
                unit=_tc_unit(BTS, a["num_warps"]))


def _bwd_chunk(launch: Launch) -> Work:
    """One launch of the reverse walk: the solver of chunk i_c (one program per sequence and head: per row tile,
    in reverse, add the suffix partials, fold the rows up to the end of the next chunk, X = Ai^T rhs, dbeta) and
    the suffix-partial programs of chunk i_c - 1 over splits of KS later rows."""
    a = launch.args
    _, L, e = _dims(launch, "w")
    NH = launch.grid[1]
    K, V, BT, BTS, BS, BK, BV = a["K"], a["V"], a["BT"], a["BTS"], a["BS"], a["BK"], a["BV"]
    C, i_c, KS = a["C"], a["i_c"], a["KS"]
    NTC = cdiv(a["CR"], BT)
    ns_write = (launch.grid[0] - 1) // NTC
    sm = 4 if a["KERNEL"] == "softmax" else 2
    ge = a["g"].itemsize
    # the solver
    cs = i_c * C
    ce = min(cs + C, L)
    rows = max(0, ce - cs)
    t_end = min(cs + 2 * C, L)
    solve = fp32 = steps = 0
    for i in range(cdiv(rows, BTS)):
        folded = BTS * BS * cdiv(t_end - min(cs + (i + 1) * BTS, ce), BS)
        solve += folded * 2 * (BK + BV) + _PRODUCT_COST.get(a["SOLVE_PRECISION"], 1) * 2 * BTS * BTS * BV
        fp32 += sm * folded + (3 + a["NS_READ"]) * BTS * BV
        steps += 2
    # per row: k, g, Ai^T, r read; dv, dO, dbeta, D written; beta read. Folded rows of the next chunk: w, dO, lse
    solve_hbm = (rows * (K * e + V * ge + 4 * BTS + 4 * V + 2 * V * e + 2 * e + 4)
                 + max(0, t_end - ce) * (K * e + V * e + 4) + a["NS_READ"] * rows * 4 * V)
    # the suffix-partial programs
    rows1 = max(0, min(C, L - (i_c - 1) * C)) if ns_write else 0
    later = max(0, L - (i_c + 1) * C)
    split_rows = [max(0, min(KS, later - s * KS)) for s in range(ns_write)]
    part = [BT * BS * cdiv(n, BS) * 2 * (BK + BV) for n in split_rows]
    active = cdiv(rows1, BT)
    part_hbm = sum(split_rows) * (K * e + V * e + 4) + ns_write * rows1 * (K * e + 4 * V)
    solver_unit = _tc_unit(BTS, a["num_warps"])
    on_mma = solver_unit == "mma"
    return Work(tc=NH * (active * sum(part) + (0 if on_mma else solve)), tc_mma=NH * solve if on_mma else 0,
                fp32=NH * (fp32 + sm * active * sum(BT * BS * cdiv(n, BS) for n in split_rows)),
                hbm=NH * (solve_hbm + part_hbm), program_tc=solve, program_fp32=fp32, steps=steps,
                program_unit=solver_unit, side_program_tc=max(part, default=0), unit=_tc_unit(BT, a["num_warps"]))


# --- flash-linear-attention 0.6.0 (fla/ops/deltaformer/parallel.py) -----------------------------------------------

def _fla_fwd(launch: Launch) -> Work:
    """One chunk: rows C x keys [0, T) (T = end of the chunk); scores for every key, P u for keys before the chunk,
    then the chunk's scores again to store the in-chunk weights w [C, H, C]."""
    a = launch.args
    T, C, D, BC, BT = a["T"], a["C"], a["D"], a["BLOCK_C"], a["BLOCK_T"]
    e = a["q_ptr"].itemsize
    H = launch.grid[1]
    tiles = cdiv(T, BT) + cdiv(T - C, BT) + cdiv(C, BT)
    program = 2 * BC * BT * D * tiles
    programs = cdiv(C, BC) * H
    hbm = H * (C * D * e + T * D * e + (T - C) * D * e + 2 * C * D * e + C * C * e + 4 * C)
    return Work(tc=program * programs, fp32=6 * BC * BT * (cdiv(T, BT) + cdiv(C, BT)) * programs, hbm=hbm,
                program_tc=program, unit=_tc_unit(BC, a["num_warps"]))


def _fla_bwd_u(launch: Launch) -> Work:
    """rows of one chunk x all later rows: scores and P^T (beta X)."""
    a = launch.args
    T, C, D, BC, BT = a["T"], a["C"], a["D"], a["BLOCK_C"], a["BLOCK_T"]
    e = a["q_ptr"].itemsize
    H = launch.grid[1]
    program = 4 * BC * BT * D * cdiv(T, BT)
    programs = cdiv(C, BC) * H
    return Work(tc=program * programs, fp32=4 * BC * BT * cdiv(T, BT) * programs,
                hbm=H * (2 * C * D * e + 2 * T * D * e + T * (4 + e)), program_tc=program,
                unit=_tc_unit(BC, a["num_warps"]))


def _fla_row_sum(launch: Launch) -> Work:
    a = launch.args
    T, D, BC, BT = a["T"], a["D"], a["BLOCK_C"], a["BLOCK_T"]
    e = a["q_ptr"].itemsize
    H = launch.grid[1]
    iters = [cdiv((i + 1) * BC, BT) for i in range(cdiv(T, BC))]
    return Work(tc=4 * BC * BT * D * sum(iters) * H, fp32=6 * BC * BT * sum(iters) * H,
                hbm=H * T * (4 * D * e + 8), program_tc=4 * BC * BT * D * max(iters),
                unit=_tc_unit(BC, a["num_warps"]))


def _fla_qk(launch: Launch) -> Work:
    """Per row block: every key block (earlier ones for dq, later ones for dk): three dots each, plus one."""
    a = launch.args
    T, D, BC = a["T"], a["D"], a["BLOCK_C"]
    e = a["q_ptr"].itemsize
    H = launch.grid[1]
    nb = cdiv(T, BC)
    program = 6 * BC * BC * D * nb + 2 * BC * BC * D
    return Work(tc=program * nb * H, fp32=8 * BC * BC * nb * nb * H, hbm=H * T * (6 * D * e + 8 + e),
                program_tc=program, unit=_tc_unit(BC, a["num_warps"]))


# --- PyTorch operators and the attention yardsticks ----------------------------------------------------------------

TRSM_COLUMNS = Assumptions.trsm_columns


def _aten(launch: Launch) -> Work:
    """Element-wise ops and copies move their bytes; a triangular solve of n x n with m right-hand sides does
    n^2 m fp32 FLOPs per matrix (cuBLAS trsm), its columns split over thread blocks of ``TRSM_COLUMNS``."""
    ins, outs = launch.args["inputs"], launch.args["outputs"]
    moved = sum(t.nbytes for t in ins) + sum(t.nbytes for t in outs)
    if launch.kernel == "aten.linalg_solve_triangular":
        A, Bm = ins[0], ins[1]
        n, m = A.shape[-1], Bm.shape[-1]
        batch = A.numel // (n * n)
        return Work(fp32=batch * n * n * m, hbm=moved, program_fp32=n * n * min(m, TRSM_COLUMNS), unit="trsm")
    return Work(hbm=moved, unit="memory")


def _attention(launch: Launch) -> Work:
    """A causal attention forward (2 T^2 D FLOPs per head) or backward (5 T^2 D: 2.5 forward matmuls' worth)."""
    a = launch.args
    B, T, H, D, e = a["B"], a["T"], a["H"], a["D"], a["e"]
    per_head = (5 if a["backward"] else 2) * T * T * D
    rows = 128
    return Work(tc=per_head * B * H, fp32=6 * T * T // 2 * B * H, hbm=B * H * T * D * e * (8 if a["backward"] else 4),
                program_tc=per_head // cdiv(T, rows) * 2, unit=a["unit"])


FORMULAS: dict[str, Callable[[Launch], Work]] = {
    "deltaformer_fwd_kernel_chunk": _fwd_chunk,
    "deltaformer_fwd_kernel_read": _fwd_read,
    "deltaformer_bwd_kernel_rowdot": _rowdot,
    "deltaformer_bwd_kernel_dq": _bwd_dq,
    "deltaformer_bwd_kernel_dk": _bwd_dk,
    "deltaformer_bwd_kernel_inverse": _bwd_inverse,
    "deltaformer_bwd_kernel_chunk": _bwd_chunk,
    "parallel_deltaformer_fwd_kernel": _fla_fwd,
    "parallel_deltaformer_bwd_kernel_u": _fla_bwd_u,
    "parallel_deltaformer_bwd_kernel_row_sum": _fla_row_sum,
    "parallel_deltaformer_bwd_kernel_qk": _fla_qk,
    "attention": _attention,
}


def work(launch: Launch) -> Work:
    """The work of one recorded launch (``ValueError`` for a kernel without a formula)."""
    if launch.kernel.startswith("aten."):
        return _aten(launch)
    if launch.kernel not in FORMULAS:
        raise ValueError(f"no cost formula for kernel {launch.kernel!r}; add one to FORMULAS")
    return FORMULAS[launch.kernel](launch)


def _fraction(unit: str, a: Assumptions) -> float:
    return {"wgmma": a.frac_wgmma, "mma": a.frac_mma, "fa3": a.frac_fa3}.get(unit, a.frac_wgmma)


def seconds(w: Work, a: Assumptions) -> float:
    """Estimated time of one launch (module docstring, step 3)."""
    tc_rate = a.tc_peak * _fraction(w.unit, a)
    mma_rate = a.tc_peak * a.frac_mma
    program_rate = a.tc_peak * _fraction(w.program_unit or w.unit, a)
    fp32_rate = a.fp32_peak * (a.frac_trsm if w.unit == "trsm" else a.frac_fp32)
    whole = max(w.tc / tc_rate + w.tc_mma / mma_rate + w.fp32 / fp32_rate, w.hbm / (a.hbm * a.frac_hbm))
    one_sm = max(w.program_tc / (program_rate / a.sms) + w.program_fp32 / (fp32_rate / a.sms)
                 + w.steps * a.step_us * 1e-6, w.side_program_tc / (tc_rate / a.sms))
    return a.launch_us * 1e-6 + max(whole, one_sm)


@dataclass(frozen=True)
class Estimate:
    """Totals over a recorded launch sequence."""

    launches: int
    triton_launches: int
    median_programs: float
    min_programs: int
    tc_flops: float
    hbm_bytes: float
    seconds: float

    def row(self, label: str) -> str:
        return (f"| {label} | {self.launches} ({self.triton_launches}) | {self.median_programs:g} | "
                f"{self.min_programs} | {self.tc_flops / 1e12:.3f} | {self.hbm_bytes / 1e9:.2f} | "
                f"{self.seconds * 1e3:.3f} |")


def estimate(launches: Sequence[Launch], a: Assumptions | None = None) -> Estimate:
    """Launch counts (all, Triton), median and smallest programs per Triton launch, total tensor-core FLOPs, HBM bytes
    and the estimated time of a launch sequence."""
    a = a or Assumptions()
    works = [work(x) for x in launches]
    programs = [x.programs for x in launches if x.is_triton] or [0]
    return Estimate(len(launches), sum(x.is_triton for x in launches), float(statistics.median(programs)),
                    min(programs), sum(w.tc for w in works), sum(w.hbm for w in works),
                    sum(seconds(w, a) for w in works))


# --- recording ---------------------------------------------------------------------------------------------------

def _meta_inputs(B: int, T: int, H: int, D: int, dtype: torch.dtype, grad: bool) -> list[torch.Tensor]:
    shapes = [(B, T, H, D)] * 3 + [(B, T, H)]
    return [torch.empty(*s, device="meta", dtype=dtype).requires_grad_(grad) for s in shapes]


def record_deltaformer(B: int, T: int, H: int, D: int, *, dtype: torch.dtype = torch.bfloat16,
                       chunk_size: int | None = None, kernel: str = "softmax",
                       backward: bool = False) -> tuple[list[Launch], list[Launch]]:
    """(forward launches, backward launches) of this backend's ``deltaformer_attn`` (write="k"); the forward is
    the autograd forward (it also stores r = P u) when ``backward``, else the inference forward."""
    from impl import _write_kernels
    from impl.triton_ops import deltaformer as tri

    C = tri.default_chunk_size(T) if chunk_size is None else chunk_size
    q, k, v, beta = _meta_inputs(B, T, H, D, dtype, backward)
    with record() as fwd:
        o = tri.deltaformer_attn(q, k, v, beta, write="k", kernel=kernel,
                                 write_scale=_write_kernels.default_scale(kernel, D), read_scale=D**-0.5,
                                 chunk_size=C, cu_seqlens=None)
    bwd: list[Launch] = []
    if backward:
        grad = torch.empty_like(o)
        with record() as bwd:
            torch.autograd.backward(o, grad)
    return fwd, bwd


def fla_available() -> bool:
    """True when flash-linear-attention (``fla-core``) 0.6.x can be imported."""
    try:
        _import_fla()
    except ImportError:
        return False
    return True


def _import_fla() -> Any:
    # fla-core 0.6.0's deltaformer module imports pad_input / unpad_input from fla.layers (in the other FLA wheel)
    # for its attention_mask path only; a placeholder keeps the import from failing (the path is not recorded)
    if "fla.layers.utils" not in sys.modules:
        stub = types.ModuleType("fla.layers.utils")
        stub.pad_input = stub.unpad_input = None  # type: ignore[attr-defined]
        sys.modules.setdefault("fla.layers", types.ModuleType("fla.layers"))
        sys.modules["fla.layers.utils"] = stub
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Triton is not supported on current platform" on a CPU machine
        from fla.ops.deltaformer import parallel
    return parallel


def _attention_launch(B: int, T: int, H: int, D: int, e: int, *, unit: str, backward: bool, name: str) -> Launch:
    return Launch("attention", (cdiv(T, 128), B * H),
                  {"B": B, "T": T, "H": H, "D": D, "e": e, "unit": unit, "backward": backward, "name": name})


def record_fla(B: int, T: int, H: int, D: int, *, dtype: torch.dtype = torch.bfloat16,
               chunk_size: int = 512) -> tuple[list[Launch], list[Launch]]:
    """(forward, backward) launches of FLA 0.6.0's ``deltaformer_attn``: its u stage recorded from its code
    (``ParallelDeltaformerFunction``), the read-out by flash-attn 2 (``flash_attn_func``, causal) added as one
    FlashAttention-2 launch each way (flash-attn is a CUDA extension, so it cannot be recorded here)."""
    parallel = _import_fla()
    q, k, v, beta = _meta_inputs(B, T, H, D, dtype, True)
    e = q.element_size()
    with record() as fwd:
        u = parallel.ParallelDeltaformerFunction.apply(q, k, v, beta, chunk_size, None)
    fwd.append(_attention_launch(B, T, H, D, e, unit="mma", backward=False, name="flash_attn (FA2) causal forward"))
    grad = torch.empty_like(u)
    with record() as bwd:
        torch.autograd.backward(u, grad)
    bwd.insert(0, _attention_launch(B, T, H, D, e, unit="mma", backward=True, name="flash_attn (FA2) causal backward"))
    return fwd, bwd


def fa3_forward_launches(B: int, T: int, H: int, D: int, *, dtype: torch.dtype = torch.bfloat16) -> list[Launch]:
    """The yardstick: two causal attention forwards at FlashAttention-3-class throughput."""
    e = torch.empty((), dtype=dtype).element_size()
    return [_attention_launch(B, T, H, D, e, unit="fa3", backward=False, name="FA3-class causal forward")] * 2


def predict(B: int, T: int, H: int, D: int, *, dtype: torch.dtype = torch.bfloat16, chunk_size: int | None = None,
            backward: bool = False, a: Assumptions | None = None) -> float:
    """The model's time in seconds for this backend's ``deltaformer_attn`` forward (or forward + backward): the figure
    a GPU benchmark prints next to its measurement."""
    fwd, bwd = record_deltaformer(B, T, H, D, dtype=dtype, chunk_size=chunk_size, backward=backward)
    return estimate(fwd + bwd, a).seconds


HEADER = ("| pass | launches (Triton) | median programs | min programs | tensor-core TFLOP | HBM GB | est. ms |\n"
          "|---|---|---|---|---|---|---|")


def table(B: int, T: int, H: int, D: int, *, chunk_size: int | None = None, a: Assumptions | None = None) -> str:
    """The side-by-side table (markdown) with the assumptions and the ratios the targets name."""
    a = a or Assumptions()
    ours_f, _ = record_deltaformer(B, T, H, D, chunk_size=chunk_size)
    ours_fg, ours_b = record_deltaformer(B, T, H, D, chunk_size=chunk_size, backward=True)
    est = {"this backend, forward (inference)": estimate(ours_f, a),
           "this backend, forward (autograd)": estimate(ours_fg, a),
           "this backend, backward": estimate(ours_b, a),
           "this backend, forward + backward": estimate(ours_fg + ours_b, a)}
    if fla_available():
        fla_f, fla_b = record_fla(B, T, H, D)
        est["FLA 0.6.0, forward"] = estimate(fla_f, a)
        est["FLA 0.6.0, backward"] = estimate(fla_b, a)
        est["FLA 0.6.0, forward + backward"] = estimate(fla_f + fla_b, a)
        for frac in (0.1, 0.5):
            est[f"FLA 0.6.0, forward, frac_trsm={frac}"] = estimate(fla_f, replace(a, frac_trsm=frac))
    est["2 x FA3-class causal forward"] = estimate(fa3_forward_launches(B, T, H, D), a)
    lines = [f"B={B}, T={T}, H={H}, D={D}, bf16, softmax write, chunk_size="
             f"{chunk_size if chunk_size is not None else 'default'}", "", HEADER]
    lines += [e.row(label) for label, e in est.items()]
    ideal = est["2 x FA3-class causal forward"].seconds
    ours = est["this backend, forward (inference)"].seconds
    lines += ["", f"forward (inference) / 2 x FA3-class forward: {ours / ideal:.2f}"]
    if "FLA 0.6.0, forward" in est:
        lines += [f"forward (inference) / FLA forward: "
                  f"{est['this backend, forward (inference)'].seconds / est['FLA 0.6.0, forward'].seconds:.2f}",
                  f"backward / FLA backward: "
                  f"{est['this backend, backward'].seconds / est['FLA 0.6.0, backward'].seconds:.2f}"]
    else:
        lines += ["FLA 0.6.0 not installed (pip install -e '.[fla]'): no FLA rows"]
    lines += ["", "Assumptions: " + a.describe()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--B", type=int, default=1)
    parser.add_argument("--T", type=int, default=8192)
    parser.add_argument("--H", type=int, default=16)
    parser.add_argument("--D", type=int, default=128)
    parser.add_argument("--chunk-size", type=int, default=None)
    args = parser.parse_args(argv)
    if min(args.B, args.T, args.H, args.D) < 1 or not math.isfinite(args.T):
        parser.error("B, T, H and D must be positive")
    print(table(args.B, args.T, args.H, args.D, chunk_size=args.chunk_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
