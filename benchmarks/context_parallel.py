"""Context parallelism on CPU: DeltaFormer forward and forward+backward at 1 rank and at R ranks (gloo, one thread
each), fp32, B = 1, T = 8192, H = 4, D = 64 by default; prints the speed-up and the memory per rank.

    python -m benchmarks.context_parallel [--ranks 2] [--T 8192] [--repeats 5] [--chunk-size 384] [--json PATH]

How it measures: R processes are spawned (gloo, one intra-op thread each). Every round times, one after another:
the single-process ``impl.deltaformer_attn`` on the whole sequence on rank 0 (the others wait at a barrier), the
same through ``impl.distributed`` on a one-rank group (its overhead), and ``impl.distributed.deltaformer_attn`` on
the R shards; each timed call starts right after a barrier, and a distributed call's time is the slowest rank's.
The speed-up is the median over rounds of (1-rank time / R-rank time) within a round (benchmarks/README.md: adjacent
calls see the same machine state), with the range over rounds. Because wall time on shared cores mostly measures the
other processes, a second figure is computed from CPU time alone: every rank records the CPU time at which it sends
and waits for each message, and the call is replayed with instantaneous messages (``critical_path``): the makespan
the schedule allows on idle cores, against the single process's CPU time. Memory: the peak resident set during one
call minus the resident set before it, per process (Linux ``/proc/self/clear_refs``; glibc's mmap threshold is
fixed so that freed tensors leave the resident set), for the forward without gradients and for forward+backward. A
correctness gate (the R-rank result vs the single-process one at T = 1024) runs first.
On a machine whose cores are shared, R ranks need R free cores: pause other work while measuring.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor

import impl
import impl.distributed as idist
from benchmarks.ratios import BENCH_CHUNK
from impl.distributed import links

GATE_T = 1024
GATE_TOLERANCE = 1e-4
"""fp32 distributed vs fp32 single-process at T = 1024: both within ~1e-6 of the exact result; 1e-4 fails a bug."""


def _inputs(T: int, H: int, D: int) -> tuple[Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, T, H, D, generator=gen) for _ in range(3))
    return q, k, v, torch.rand(1, T, H, generator=gen)


def _rss_field(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _peak_growth_mib(fn: Callable[[], object]) -> float:
    """Peak resident set during ``fn`` minus the resident set before it (MiB); NaN where Linux's counters are not
    available."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        return float("nan")
    before = _rss_field("VmRSS:")
    fn()
    return _rss_field("VmHWM:") - before


def _max_over_ranks(x: float) -> float:
    t = torch.tensor([x], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t)


def critical_path(traces: list[list[tuple[str, int, int, int, float]]], ends: list[float]) -> float:
    """The makespan of one distributed call replayed from each rank's compute (CPU) time alone.

    ``traces[r]``: rank r's sends and receives (``impl.distributed.links.TRACE``, CPU times relative to the call's
    start); ``ends[r]``: its CPU time at the end. A rank's replayed clock is its CPU time plus the time it would have
    waited: at a receive, the clock moves up to the sender's replayed clock at the send. Messages are taken as
    instantaneous, so this is the time on idle cores with free communication: what the schedule allows, measured
    without the other processes' share of the cores.
    """
    sent: dict[tuple[int, int, int], float] = {}
    delay = [0.0] * len(traces)
    position = [0] * len(traces)
    progress = True
    while progress:
        progress = False
        for r, events in enumerate(traces):
            while position[r] < len(events):
                kind, src, dst, tag, cpu = events[position[r]]
                if kind == "send":
                    sent[(src, dst, tag)] = cpu + delay[r]
                elif (src, dst, tag) in sent:
                    delay[r] = max(delay[r], sent[(src, dst, tag)] - cpu)
                else:
                    break
                position[r] += 1
                progress = True
    if any(p < len(events) for p, events in zip(position, traces, strict=True)):
        raise RuntimeError("the traced messages do not replay (a receive without its send)")
    return max(end + d for end, d in zip(ends, delay, strict=True))


def _timed(fn: Callable[[], object], ranks: int) -> tuple[float, float]:
    """(wall time, CPU critical path) of ``fn`` started right after a barrier: the slowest rank's wall time and the
    replayed makespan (``critical_path``) when ``ranks`` > 1; the wall and CPU time of the one call otherwise."""
    dist.barrier()
    links.TRACE = [] if ranks > 1 else None
    start, cpu_start = time.perf_counter(), time.thread_time()
    fn()
    elapsed, cpu = time.perf_counter() - start, time.thread_time() - cpu_start
    if ranks == 1:
        return elapsed, cpu
    trace = [(kind, src, dst, tag, at - cpu_start) for kind, src, dst, tag, at in links.TRACE]
    links.TRACE = None
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (trace, cpu))
    return _max_over_ranks(elapsed), critical_path([t for t, _ in gathered], [c for _, c in gathered])


def _worker(rank: int, world: int, init_file: str, out_file: str, T: int, H: int, D: int, chunk: int,
            repeats: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(minutes=10))
    solo = dist.new_group([0])

    # correctness gate: the R-rank result against the single-process one
    q, k, v, beta = _inputs(GATE_T, H, D)
    rows = slice(rank * GATE_T // world, (rank + 1) * GATE_T // world)
    with torch.no_grad():
        want = impl.deltaformer_attn(q, k, v, beta, chunk_size=chunk)[:, rows]
        got = idist.deltaformer_attn(*(x[:, rows].contiguous() for x in (q, k, v, beta)), chunk_size=chunk)
    gate = _max_over_ranks(float((got - want).norm() / want.norm()))

    q, k, v, beta = _inputs(T, H, D)
    rows = slice(rank * T // world, (rank + 1) * T // world)
    shard = [x[:, rows].contiguous() for x in (q, k, v, beta)]
    cot = torch.randn(1, T, H, D, generator=torch.Generator().manual_seed(1))
    full_grad = [x.clone().requires_grad_(True) for x in (q, k, v, beta)]
    shard_grad = [x.clone().requires_grad_(True) for x in shard]

    def single_fwd() -> object:
        with torch.no_grad():
            return impl.deltaformer_attn(q, k, v, beta, chunk_size=chunk)

    def solo_fwd() -> object:
        with torch.no_grad():
            return idist.deltaformer_attn(q, k, v, beta, chunk_size=chunk, group=solo)

    def multi_fwd() -> object:
        with torch.no_grad():
            return idist.deltaformer_attn(*shard, chunk_size=chunk)

    def single_fb() -> object:
        return torch.autograd.grad(impl.deltaformer_attn(*full_grad, chunk_size=chunk), full_grad, cot)

    def solo_fb() -> object:
        return torch.autograd.grad(idist.deltaformer_attn(*full_grad, chunk_size=chunk, group=solo), full_grad, cot)

    def multi_fb() -> object:
        return torch.autograd.grad(idist.deltaformer_attn(*shard_grad, chunk_size=chunk), shard_grad, cot[:, rows])

    def on_rank0(fn: Callable[[], object]) -> Callable[[], object]:
        return lambda: fn() if rank == 0 else None

    calls = {"single_fwd": (on_rank0(single_fwd), 1), "solo_fwd": (on_rank0(solo_fwd), 1),
             "multi_fwd": (multi_fwd, world), "single_fwdbwd": (on_rank0(single_fb), 1),
             "solo_fwdbwd": (on_rank0(solo_fb), 1), "multi_fwdbwd": (multi_fb, world)}
    for fn, _ in calls.values():  # warm-up
        dist.barrier()
        fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    cpu: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, (fn, ranks) in calls.items():
            wall, critical = _timed(fn, ranks)
            times[name].append(wall)
            cpu[name].append(critical)
    memory = {}
    for name in ("single_fwd", "multi_fwd", "single_fwdbwd", "multi_fwdbwd"):
        dist.barrier()
        memory[name] = _peak_growth_mib(calls[name][0])
    memories = [None] * world
    dist.all_gather_object(memories, memory)
    if rank == 0:
        Path(out_file).write_text(json.dumps({"gate": gate, "times": times, "cpu": cpu, "memory": memories}))
    dist.barrier()
    dist.destroy_process_group()


def _summary(result: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    times, cpu = result["times"], result["cpu"]
    out: dict[str, Any] = {"ranks": args.ranks, "T": args.T, "H": args.H, "D": args.D, "chunk_size": args.chunk_size,
                           "repeats": args.repeats, "gate_error": result["gate"], "memory_mib": result["memory"]}
    for mode in ("fwd", "fwdbwd"):
        single, solo, multi = times[f"single_{mode}"], times[f"solo_{mode}"], times[f"multi_{mode}"]
        ratios = [a / b for a, b in zip(single, multi, strict=True)]
        out[mode] = {"single_min_s": min(single), "multi_min_s": min(multi), "solo_min_s": min(solo),
                     "speedup_median": statistics.median(ratios), "speedup_range": [min(ratios), max(ratios)],
                     "speedup_of_minima": min(single) / min(multi),
                     "solo_overhead_median": statistics.median(a / b for a, b in zip(solo, single, strict=True)),
                     "cpu_single_min_s": min(cpu[f"single_{mode}"]),
                     "cpu_critical_path_min_s": min(cpu[f"multi_{mode}"]),
                     "cpu_speedup": min(cpu[f"single_{mode}"]) / min(cpu[f"multi_{mode}"])}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--T", type=int, default=8192)
    parser.add_argument("--H", type=int, default=4)
    parser.add_argument("--D", type=int, default=64)
    parser.add_argument("--chunk-size", type=int, default=BENCH_CHUNK)
    parser.add_argument("--repeats", type=int, default=5, help="rounds (each times every call once)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.ranks < 2 or args.T % args.ranks:
        parser.error("--ranks must be >= 2 and divide --T")
    os.environ["OMP_NUM_THREADS"] = "1"  # the spawned ranks inherit it: one thread each
    # glibc: a fixed mmap threshold, so freed tensors go back to the OS and the resident set tracks live memory
    # (with its default dynamic threshold, a repeated call reuses cached heap pages and shows no growth at all)
    os.environ["MALLOC_MMAP_THRESHOLD_"] = str(1 << 16)
    with tempfile.TemporaryDirectory() as tmp:
        out_file = f"{tmp}/result.json"
        mp.spawn(_worker, args=(args.ranks, f"{tmp}/init", out_file, args.T, args.H, args.D, args.chunk_size,
                                args.repeats), nprocs=args.ranks)
        result = json.loads(Path(out_file).read_text())
    if not result["gate"] < GATE_TOLERANCE:
        raise SystemExit(f"correctness gate failed: {args.ranks}-rank vs single-process error {result['gate']:.2e} "
                         f"at T = {GATE_T}; no speed figure from a red kernel")
    summary = _summary(result, args)
    print(f"torch {torch.__version__}; {args.ranks} gloo ranks x 1 thread vs 1 process x 1 thread; fp32, B=1, "
          f"T={args.T}, H={args.H}, D={args.D}, chunk_size={args.chunk_size}, {args.repeats} rounds")
    print(f"correctness gate (T={GATE_T}): {args.ranks}-rank vs single-process relative error "
          f"{summary['gate_error']:.1e}")
    for mode, label in (("fwd", "forward"), ("fwdbwd", "forward+backward")):
        s = summary[mode]
        print(f"{label:>16}: 1 rank {s['single_min_s']:.3f} s, {args.ranks} ranks {s['multi_min_s']:.3f} s (minima); "
              f"speed-up {s['speedup_median']:.2f}x median paired (range {s['speedup_range'][0]:.2f}-"
              f"{s['speedup_range'][1]:.2f}), {s['speedup_of_minima']:.2f}x of minima; impl.distributed on 1 rank "
              f"/ impl: {s['solo_overhead_median']:.2f}")
        print(f"{'':>16}  CPU time: 1 rank {s['cpu_single_min_s']:.3f} s, {args.ranks}-rank critical path "
              f"{s['cpu_critical_path_min_s']:.3f} s (replayed, minima): {s['cpu_speedup']:.2f}x")
    for name, label in (("fwd", "forward, no grad"), ("fwdbwd", "forward+backward")):
        per_rank = ", ".join(f"{m[f'multi_{name}']:.0f}" for m in summary["memory_mib"])
        print(f"peak memory growth, {label}: 1 rank {summary['memory_mib'][0][f'single_{name}']:.0f} MiB; "
              f"{args.ranks} ranks {per_rank} MiB per rank")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    sys.exit(main())
