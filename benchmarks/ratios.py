"""Print the target ratios, all measured in one run (fp32, torch backend, B = 1, H = 4, D = 64):

1. DeltaFormer forward / causal SDPA forward at T = 4096, for the default call ``impl.deltaformer_attn(q, k, v,
   beta)`` (target <= 2.4, issue 12) and the tuned one (``--chunk-size``, BENCH_CHUNK by default), in the same rounds;
2. DeltaFormer forward + backward / SDPA forward + backward at T = 4096, default and tuned (target <= 2.5);
3. peak memory of the DeltaFormer forward at T = 16384, H = 1, beyond the inputs (target < 512 MiB);
4. speed-up of impl.deltaformer_attn over the float64 spec (spec.deltaformer.deltaformer_attn per head) at T = 2048.

Each figure is gated on correctness first (impl vs the spec on a T = 512 slice of the same inputs).

How a ratio is measured: the two sides run alternately, one call each per round, and the reported ratio is the
median over rounds of (DeltaFormer time / SDPA time) within the round. On the 2-core VM this project is developed on,
the speed of the *same* call drifts by up to 2x over a few seconds (host-level frequency and memory-bandwidth
changes; a run of 40 identical SDPA calls measured 55-107 ms), so a ratio of two minima taken at different moments
can be off by that drift; adjacent calls see the same machine state. The ratio of the minima is printed alongside.
Usage: ``python -m benchmarks.ratios [--repeats N] [--chunk-size C] [--threads N] [--clock wall|cpu] [--floor]
[--sweep]``; ``--sweep`` prints only the chunk sweep behind the CPU default chunk. ``--device cuda`` runs the GPU
benchmark instead (benchmarks/gpu_ratios.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from torch.nn import functional

import impl
from impl.torch_ops.deltaformer import _solve_unit_lower  # the solve the torch forward uses, same form
from spec import deltaformer as spec_df


def _inputs(T: int, H: int, D: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(1, T, H, D, generator=gen).to(dtype) for _ in range(3))
    beta = torch.rand(1, T, H, generator=gen).to(dtype)
    return q, k, v, beta


BENCH_CHUNK = 384
"""The chunk size the benchmarks use: a sweep of 128-512 on the development VM (paired ratios to SDPA at T = 4096,
fp32, B = 1, H = 4, D = 64) found 384 fastest for both the forward and forward+backward (about 4-5% ahead of 256;
128 about 15% behind). The public default stays 64, FLA's convention; results differ between chunk sizes by
rounding only."""

CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
"""Wall time by default; ``--clock cpu`` (process CPU time, with one thread) when other processes share the cores,
since CPU time excludes the time this process waits for a core."""


def interleaved_times(fns: dict[str, Callable[[], object]], repeats: int,
                      clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Times (``clock``) of each callable in each of ``repeats`` rounds, the callables run one after another in
    every round (after one untimed warm-up call each)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = clock()
            fn()
            times[name].append(clock() - start)
    return times


def interleaved_min(fns: dict[str, Callable[[], object]], repeats: int,
                    clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Minimum time of each callable over ``repeats`` interleaved rounds."""
    return {name: min(t) for name, t in interleaved_times(fns, repeats, clock).items()}


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of numerator[i] / denominator[i] (the two timed in the same round)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


def correctness_gate(chunk_size: int) -> float:
    """Normwise relative error of impl (fp32) vs the float64 spec on T = 512, H = 2, D = 64; must be < 1e-4."""
    q, k, v, beta = _inputs(512, 2, 64)
    o = impl.deltaformer_attn(q, k, v, beta, chunk_size=chunk_size).double().numpy()
    ref = np.stack([spec_df.deltaformer_attn(q[0, :, h].double().numpy(), k[0, :, h].double().numpy(),
                                             v[0, :, h].double().numpy(), beta[0, :, h].double().numpy())
                    for h in range(2)], axis=1)[None]
    error = float(np.linalg.norm(o - ref) / np.linalg.norm(ref))
    if not error < 1e-4:
        raise SystemExit(f"correctness gate failed: error {error:.3e}; no speed figure from a red kernel")
    return error


def speed_ratios(T: int, H: int, D: int, chunk_size: int, repeats: int,
                 clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Paired ratios to causal SDPA of the default call ("default": no chunk_size) and the tuned call ("tuned":
    ``chunk_size``), forward ("fwd_*") and forward + backward ("fwdbwd_*"), all three sides in the same rounds."""
    q, k, v, beta = _inputs(T, H, D)
    qs, ks, vs = (x.transpose(1, 2).contiguous() for x in (q, k, v))
    calls: dict[str, Callable[..., torch.Tensor]] = {
        "default": impl.deltaformer_attn, "tuned": partial(impl.deltaformer_attn, chunk_size=chunk_size)}
    fwd_fns: dict[str, Callable[[], object]] = {
        "sdpa": partial(functional.scaled_dot_product_attention, qs, ks, vs, is_causal=True)}
    fwd_fns |= {name: partial(call, q, k, v, beta) for name, call in calls.items()}
    with torch.no_grad():
        fwd = interleaved_times(fwd_fns, repeats, clock)
    grads = [x.clone().requires_grad_(True) for x in (q, k, v, beta)]
    grads_s = [x.clone().requires_grad_(True) for x in (qs, ks, vs)]
    cot = torch.randn(1, T, H, D)
    cot_s = cot.transpose(1, 2).contiguous()

    def sdpa_fb() -> object:
        o = functional.scaled_dot_product_attention(grads_s[0], grads_s[1], grads_s[2], is_causal=True)
        return torch.autograd.grad(o, grads_s, cot_s)

    def deltaformer_fb(call: Callable[..., torch.Tensor]) -> object:
        return torch.autograd.grad(call(*grads), grads, cot)

    fb = interleaved_times({"sdpa": sdpa_fb} | {name: partial(deltaformer_fb, call) for name, call in calls.items()},
                           repeats, clock)
    out: dict[str, float] = {}
    for name, t in (("fwd", fwd), ("fwdbwd", fb)):
        out[f"{name}_sdpa_s"] = min(t["sdpa"])
        for side in calls:
            out |= {f"{name}_{side}_s": min(t[side]), f"{name}_{side}_ratio": paired_ratio(t[side], t["sdpa"]),
                    f"{name}_{side}_ratio_of_minima": min(t[side]) / min(t["sdpa"])}
    return out


def unavoidable_kernels(qs: torch.Tensor, ks: torch.Tensor, vs: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Timing only, values meaningless: the calls a chunked torch DeltaFormer forward cannot skip, on [B, H, T, D].

    Per chunk: the fused CPU flash prefix pass over the earlier keys, the in-chunk score GEMM and one
    unit-triangular solve of the chunk's shape (the backend's own ``_solve_unit_lower``; a fixed random matrix
    stands in for the write scores); then the
    causal SDPA read-out. No softmax merge, no row scaling, no bookkeeping: a lower bound on what any formulation
    built from these torch calls can reach, to read the forward ratio against.
    """
    B, H, T, D = vs.shape
    gen = torch.Generator().manual_seed(1)
    A = torch.randn(B, H, chunk_size, chunk_size, generator=gen).tril_(-1).mul_(1e-2)
    u = torch.empty_like(vs)
    for s in range(0, T, chunk_size):
        e = min(s + chunk_size, T)
        torch.matmul(ks[:, :, s:e], ks[:, :, s:e].transpose(-1, -2))
        if s > 0:
            torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(ks[:, :, s:e], ks[:, :, :s], u[:, :, :s],
                                                                       0.0, False, scale=D**-0.5)
        u[:, :, s:e] = _solve_unit_lower(A[..., : e - s, : e - s], vs[:, :, s:e], transpose=False)
    return functional.scaled_dot_product_attention(qs, ks, u, is_causal=True)


def floor_ratio(T: int, H: int, D: int, chunk_size: int, repeats: int,
                clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Paired ratios to causal SDPA of ``unavoidable_kernels`` and of the real forward, in one interleaved run."""
    q, k, v, beta = _inputs(T, H, D)
    qs, ks, vs = (x.transpose(1, 2).contiguous() for x in (q, k, v))
    with torch.no_grad():
        t = interleaved_times({
            "sdpa": lambda: functional.scaled_dot_product_attention(qs, ks, vs, is_causal=True),
            "floor": lambda: unavoidable_kernels(qs, ks, vs, chunk_size),
            "deltaformer": lambda: impl.deltaformer_attn(q, k, v, beta, chunk_size=chunk_size)}, repeats, clock)
    return {"floor_ratio": paired_ratio(t["floor"], t["sdpa"]),
            "deltaformer_ratio": paired_ratio(t["deltaformer"], t["sdpa"])}


def chunk_sweep(Ts: tuple[int, ...], Ds: tuple[int, ...], chunks: tuple[int, ...], H: int, repeats: int,
                clock: Callable[[], float] = time.perf_counter) -> dict[tuple[int, int, int], float]:
    """{(T, D, chunk): paired median ratio of the DeltaFormer forward (fp32, that chunk) to causal SDPA forward},
    every chunk of one (T, D) timed in the same interleaved rounds as SDPA: the measurement behind the CPU default
    chunk (``impl.torch_ops.deltaformer.CPU_CHUNK_SIZE``)."""
    out: dict[tuple[int, int, int], float] = {}
    for T in Ts:
        for D in Ds:
            q, k, v, beta = _inputs(T, H, D)
            qs, ks, vs = (x.transpose(1, 2).contiguous() for x in (q, k, v))
            fns: dict[str, Callable[[], object]] = {
                "sdpa": partial(functional.scaled_dot_product_attention, qs, ks, vs, is_causal=True)}
            for c in chunks:
                fns[str(c)] = partial(impl.deltaformer_attn, q, k, v, beta, chunk_size=c)
            with torch.no_grad():
                t = interleaved_times(fns, repeats, clock)
            for c in chunks:
                out[(T, D, c)] = paired_ratio(t[str(c)], t["sdpa"])
            print(f"T={T} D={D}: " + "  ".join(f"chunk {c}: {out[(T, D, c)]:.2f}x" for c in chunks), flush=True)
    return out


_PEAK_SCRIPT = """
import sys, torch, impl
T, H, D, C = (int(a) for a in sys.argv[1:5])
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024.0
gen = torch.Generator().manual_seed(0)
q, k, v = (torch.randn(1, T, H, D, generator=gen) for _ in range(3))
beta = torch.rand(1, T, H, generator=gen)
with torch.no_grad():
    impl.deltaformer_attn(q[:, :300].contiguous(), k[:, :300].contiguous(), v[:, :300].contiguous(),
                          beta[:, :300].contiguous(), chunk_size=C)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status("VmRSS:")
with torch.no_grad():
    impl.deltaformer_attn(q, k, v, beta, chunk_size=C)
print(status("VmHWM:") - before)
"""


def peak_memory_mib(T: int, H: int, D: int, chunk_size: int) -> float:
    """Peak resident set during one forward minus the resident set just before it (Linux: the high-water mark is
    reset through /proc/self/clear_refs), in a fresh interpreter whose inputs are allocated and whose libraries are
    warmed up on a short sequence: the forward's peak memory beyond its inputs, counting library workspaces."""
    out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(T), str(H), str(D), str(chunk_size)],
                         check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def spec_speedup(T: int, H: int, D: int, chunk_size: int,
                 clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    q, k, v, beta = _inputs(T, H, D)
    start = clock()
    for h in range(H):
        spec_df.deltaformer_attn(q[0, :, h].double().numpy(), k[0, :, h].double().numpy(),
                                 v[0, :, h].double().numpy(), beta[0, :, h].double().numpy())
    spec_s = clock() - start
    with torch.no_grad():
        impl_s = interleaved_min({"impl": lambda: impl.deltaformer_attn(q, k, v, beta, chunk_size=chunk_size)},
                                 3, clock)["impl"]
    return {"spec_s": spec_s, "impl_s": impl_s, "speedup": spec_s / impl_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=11, help="interleaved rounds per comparison")
    parser.add_argument("--chunk-size", type=int, default=BENCH_CHUNK)
    parser.add_argument("--floor", action="store_true",
                        help="also time the unavoidable kernels alone (a lower bound for the forward ratio)")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = torch's default)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall time, or process CPU time (use with --threads 1 on a shared machine)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cuda: the GPU benchmark instead (Triton vs SDPA flash, bf16; benchmarks/gpu_ratios.py)")
    parser.add_argument("--out", default="gpu_ratios.json", help="with --device cuda: where the figures go (JSON)")
    parser.add_argument("--sweep", action="store_true",
                        help="only the chunk sweep behind the CPU default chunk (T 1024-8192, D 32-128, forward)")
    args = parser.parse_args()
    if args.device == "cuda":
        from benchmarks import gpu_ratios

        gpu_ratios.main(args.out, args.repeats)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    single_threaded = torch.get_num_threads() == 1 and os.environ.get("OPENBLAS_NUM_THREADS") == "1"
    if args.clock == "cpu" and not single_threaded:
        parser.error("--clock cpu needs --threads 1 and OPENBLAS_NUM_THREADS=1 (with several threads, CPU time "
                     "counts spin-waiting)")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, chunk_size {args.chunk_size}, "
          f"clock {args.clock}")
    print(f"correctness gate (T=512, fp32 vs fp64 spec): normwise error {correctness_gate(args.chunk_size):.2e}")
    clock = CLOCKS[args.clock]
    if args.sweep:
        chunk_sweep((1024, 4096, 8192), (32, 64, 128), (128, 256, 384, 512), 4, args.repeats, clock)
        return
    r = speed_ratios(4096, 4, 64, args.chunk_size, args.repeats, clock)
    for name, label, target in (("fwd", "forward", 2.4), ("fwdbwd", "fwd+bwd", 2.5)):
        for side, call in (("default", "default call (chunk_size=None)"),
                           ("tuned", f"tuned call (chunk_size={args.chunk_size})")):
            print(f"T=4096 H=4 D=64 fp32 {label}, {call}: deltaformer / SDPA = {r[f'{name}_{side}_ratio']:.2f}x "
                  f"median paired ratio over {args.repeats} rounds (target <= {target}); minima "
                  f"{r[f'{name}_{side}_s']:.3f}s / {r[f'{name}_sdpa_s']:.3f}s = "
                  f"{r[f'{name}_{side}_ratio_of_minima']:.2f}x")
    if args.floor:
        f = floor_ratio(4096, 4, 64, args.chunk_size, args.repeats, clock)
        print(f"T=4096 forward lower bound: unavoidable kernels alone / SDPA = {f['floor_ratio']:.2f}x "
              f"(same run: deltaformer {f['deltaformer_ratio']:.2f}x)")
    mem = peak_memory_mib(16384, 1, 64, args.chunk_size)
    print(f"T=16384 H=1 D=64 fp32 forward peak memory beyond inputs: {mem:.1f} MiB (RSS high-water growth, fresh "
          f"process; target < 512)")
    s = spec_speedup(2048, 4, 64, args.chunk_size, clock)
    print(f"T=2048 H=4 D=64: float64 spec {s['spec_s']:.2f}s / impl fp32 {s['impl_s']:.3f}s = {s['speedup']:.0f}x "
          f"speed-up")


if __name__ == "__main__":
    main()
