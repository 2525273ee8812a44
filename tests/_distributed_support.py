"""Spawned gloo process groups for the distributed tests: one group per world size runs every case at once.

Spawning costs seconds per process (importing torch), so ``group_results(world)`` spawns ``world`` processes once
per pytest session, runs all of that world's cases in them (``run_group``) and returns what each rank saved. Every
spawn has a hard deadline (``SPAWN_DEADLINE_S``): past it the processes are killed and the test fails, so no test
can hang CI. Every collective and message inside has its own timeout too (``OP_TIMEOUT_S``).

Inputs come from the harness's ``Problem.arrays()`` (its conventions: unit keys for the linear and exp kernels,
integer inputs and a scale with an odd denominator for the round kernel, so no score sits on a rounding tie).
"""

from __future__ import annotations

import datetime
import functools
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor

from proofs_checks.differential import Problem, check_case
from proofs_checks.differential.strategies import round_scale

SPAWN_DEADLINE_S = 150.0
"""Hard limit on one spawned group (all its cases); the whole distributed suite takes well under a minute."""
OP_TIMEOUT_S = 30.0
"""Timeout of every wait inside the ops under test (a broken rank fails its peers after this)."""
SHARDS: dict[int, tuple[int, ...]] = {1: (9,), 2: (1, 8), 3: (5, 1, 7), 4: (3, 6, 1, 4)}
"""Shard lengths per world size: uneven, with a shard of length 1 from two ranks on."""
KERNELS = ("softmax", "exp", "linear", "round")
WRITES = ("k", "q")
REFERENCE_CHUNK = 4
"""The single-process reference's chunk size; the distributed cases use others (results differ by rounding)."""


@dataclass(frozen=True)
class Case:
    """One distributed call, compared with the single-process impl on the whole sequence."""

    op: str
    kernel: str = "softmax"
    write: str = "k"
    K: int = 4
    V: int = 4
    chunk_size: int | None = 2
    splits: tuple[float, float, float, float] | None = None
    """schedule.Splits(fold, readout, readout_grad, cross_grad) for this call; None: the default."""
    beta: bool = True
    initial_state: bool = False
    grad: bool = True
    scale: float | None = None
    """None: the kernel's default (the round kernel: a scale with an odd denominator, ``round_scale``)."""
    seed: int = 0

    @property
    def name(self) -> str:
        return (f"{self.op}[{self.kernel},{self.write},K{self.K}V{self.V},C{self.chunk_size},splits{self.splits},"
                f"beta{int(self.beta)},state{int(self.initial_state)},grad{int(self.grad)},scale{self.scale}]")

    def problem(self, T: int) -> Problem:
        scale = self.scale
        if scale is None and self.op == "deltaformer_attn" and self.kernel == "round":
            scale = round_scale(self.K, 1)
        return Problem(op=self.op, B=2, T=T, H=2, K=self.K, V=self.V, kernel=self.kernel, write=self.write,
                       scale=scale, with_state=self.initial_state, seed=1000 + self.seed)

    def inputs(self, T: int) -> dict[str, Tensor]:
        arrays = self.problem(T).arrays()
        tensors = {name: torch.from_numpy(x.copy()) for name, x in arrays.items()}
        if not self.beta:
            del tensors["beta"]
        return tensors



def deltaformer_cases(world: int) -> list[Case]:
    """Every write kernel and write mode (both K == V, the fused CPU paths, and K != V, the explicit paths, at three
    and four ranks); at two and four ranks also every split of the adjacent pair blocks to one side or the other."""
    cases = [Case("deltaformer_attn", kernel=kernel, write=write) for kernel in KERNELS for write in WRITES]
    if world >= 3:
        cases += [Case("deltaformer_attn", kernel=kernel, write=write, K=3, V=5, seed=1)
                  for kernel in KERNELS for write in WRITES]
    cases += [Case("deltaformer_attn", chunk_size=None, beta=False, seed=2),
              Case("deltaformer_attn", kernel="exp", write="q", grad=False, seed=3)]
    if world >= 2:  # any real scale (the fused CPU op needs a positive one: impl's positive_scale)
        cases += [Case("deltaformer_attn", scale=-0.7, seed=7), Case("deltaformer_attn", K=3, V=5, scale=-0.7, seed=9),
                  Case("deltaformer_attn", kernel="exp", scale=0.0, seed=8)]
    if world in (2, 4):
        for splits in ((0.0, 0.0, 0.0, 0.0), (1.0, 1.0, 1.0, 1.0), (0.5, 0.5, 0.5, 0.5)):
            cases += [Case("deltaformer_attn", kernel=kernel, write=write, splits=splits, seed=4)
                      for kernel, write in (("softmax", "k"), ("linear", "q"))]
    return cases


def delta_rule_cases(world: int) -> list[Case]:
    del world
    return [Case("delta_rule", initial_state=state, K=4, V=3, chunk_size=chunk, seed=5)
            for state in (False, True) for chunk in (2, None)] + [Case("delta_rule", grad=False, seed=6)]


def spec_problems() -> list[Problem]:
    """Cases for the harness's check against the float64 spec (``check_case``), run at three ranks."""
    T = sum(SHARDS[3])
    out = [replace(Case("deltaformer_attn", kernel=kernel, write=write).problem(T), chunk_size=2, seed=11)
           for kernel in KERNELS for write in WRITES]
    out.append(replace(Case("delta_rule", initial_state=True, V=3).problem(T), chunk_size=2, seed=12))
    return out


# --- inside a spawned rank --------------------------------------------------------------------------------------

def _shard(rank: int, lengths: tuple[int, ...]) -> slice:
    start = sum(lengths[:rank])
    return slice(start, start + lengths[rank])


def _set_splits(splits: tuple[float, float, float, float] | None) -> None:
    from impl.distributed import schedule
    schedule.SPLITS = schedule.Splits() if splits is None else schedule.Splits(*splits)


def _run_case(case: Case, rank: int, lengths: tuple[int, ...]) -> dict[str, Tensor | None]:
    """This rank's output, final state and input gradients (of sum(c * o) + sum(c' * state)) for ``case``."""
    import impl.distributed as idist

    _set_splits(case.splits)
    rows = _shard(rank, lengths)
    full = case.inputs(sum(lengths))
    local = {name: x if name == "initial_state" else x[:, rows].contiguous() for name, x in full.items()}
    if case.initial_state and rank > 0:
        del local["initial_state"]
    for x in local.values():
        x.requires_grad_(case.grad)
    last = rank == len(lengths) - 1
    state: Tensor | None = None
    if case.op == "deltaformer_attn":
        o = idist.deltaformer_attn(local["q"], local["k"], local["v"], local.get("beta"), write=case.write,
                                   kernel=case.kernel, scale=case.problem(1).scale, chunk_size=case.chunk_size,
                                   timeout=OP_TIMEOUT_S)
    else:
        o, state = idist.delta_rule(local["q"], local["k"], local["v"], local["beta"],
                                    initial_state=local.get("initial_state"), output_final_state=True,
                                    chunk_size=case.chunk_size, timeout=OP_TIMEOUT_S)
        assert (state is not None) == last
    out: dict[str, Tensor | None] = {"o": o.detach(), "final_state": None if state is None else state.detach()}
    if case.grad:
        loss = (o * _cot(case, lengths, "o")[:, rows]).sum()
        if state is not None:
            loss = loss + (state * _cot(case, lengths, "final_state")).sum()
        loss.backward()
        out |= {f"grad_{name}": x.grad for name, x in local.items()}
    return out


def _cot(case: Case, lengths: tuple[int, ...], which: str) -> Tensor:
    """The loss's cotangent for the output [B, T, H, V] or the final state [B, H, K, V] (same on every rank)."""
    shape = (2, sum(lengths), 2, case.V) if which == "o" else (2, 2, case.K, case.V)
    return torch.randn(shape, generator=torch.Generator().manual_seed(7 + (which == "o")), dtype=torch.float64)


def _errors(rank: int, world: int) -> dict[str, tuple[str, str]]:
    """Each bad-input scenario's (exception class, message) on this rank (or ("", "") if nothing was raised)."""
    import impl.distributed as idist

    _set_splits(None)
    lengths = SHARDS[world]
    full = Case("deltaformer_attn").inputs(sum(lengths))
    q, k, v, beta = (full[n][:, _shard(rank, lengths)].contiguous() for n in ("q", "k", "v", "beta"))
    scenarios: dict[str, Callable[[], object]] = {
        "heads differ": lambda: idist.deltaformer_attn(q if rank != 1 else q[:, :, :1].contiguous(),
                                                      k if rank != 1 else k[:, :, :1].contiguous(),
                                                      v if rank != 1 else v[:, :, :1].contiguous(),
                                                      beta if rank != 1 else beta[:, :, :1].contiguous(),
                                                      timeout=OP_TIMEOUT_S),
        "batch differs": lambda: idist.deltaformer_attn(*(x if rank != 2 else x[:1].contiguous()
                                                          for x in (q, k, v, beta)), timeout=OP_TIMEOUT_S),
        "head dim differs": lambda: idist.deltaformer_attn(*(x if rank != 0 else x[..., :3].contiguous()
                                                             for x in (q, k, v)), beta, timeout=OP_TIMEOUT_S),
        "nan on one rank": lambda: idist.deltaformer_attn(q, k if rank != 1 else k * torch.nan, v, beta,
                                                          timeout=OP_TIMEOUT_S),
        "kernel differs": lambda: idist.deltaformer_attn(q, k, v, beta, kernel="linear" if rank == 2 else "softmax",
                                                         timeout=OP_TIMEOUT_S),
        "grad on one rank": lambda: idist.deltaformer_attn(q.requires_grad_(rank == 0), k, v, beta,
                                                           timeout=OP_TIMEOUT_S),
        "state on a later rank": lambda: idist.delta_rule(q, k, v, beta, timeout=OP_TIMEOUT_S,
                                                          initial_state=torch.zeros(2, 2, 4, 4, dtype=q.dtype)
                                                          if rank == 1 else None),
        # last: a timeout leaves the group unusable
        "a rank does not call": (lambda: idist.deltaformer_attn(q, k, v, beta, timeout=3.0)) if rank != 1
        else (lambda: time.sleep(5.0)),
    }
    seen = {}
    for name, call in scenarios.items():
        q.requires_grad_(False)
        try:
            call()
            seen[name] = ("", "")
        except (TypeError, ValueError, RuntimeError) as error:
            seen[name] = (type(error).__name__, str(error))
    return seen


def run_group(rank: int, world: int, init_file: str, out_dir: str, errors: bool) -> None:
    """The body of one spawned rank: every case of this world size; results saved to ``out_dir/rank<r>.pt``."""
    from tests._impl_support import poisoned_empty

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=OP_TIMEOUT_S))
    torch.set_num_threads(1)
    lengths = SHARDS[world]
    results: dict[str, Any] = {}
    try:
        with poisoned_empty():
            for case in deltaformer_cases(world) + delta_rule_cases(world):
                results[case.name] = _run_case(case, rank, lengths)
            if world == 3:
                for problem in spec_problems():
                    result = check_case(_distributed_public_op(problem.op, rank, lengths), problem)
                    results[f"spec {problem!r}"] = (result.passed, result.report())
        if errors:
            results["errors"] = _errors(rank, world)
    except BaseException:
        results["crash"] = traceback.format_exc()
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


# --- the public single-process signature over the distributed op, for the harness ---------------------------------

class _Scatter(torch.autograd.Function):
    """Full inputs -> this rank's parts (rows along T, or the whole tensor where the part is None); backward sums
    every rank's gradients into the full gradient (one all-reduce per input, in argument order, on every rank)."""

    @staticmethod
    def forward(ctx: Any, parts: tuple[slice | None, ...], *tensors: Tensor) -> tuple[Tensor, ...]:
        ctx.parts = parts
        ctx.shapes = [t.shape for t in tensors]
        return tuple(t.clone() if part is None else t[:, part].contiguous()
                     for part, t in zip(parts, tensors, strict=True))

    @staticmethod
    def backward(ctx: Any, *grads: Tensor | None) -> tuple[Tensor | None, ...]:
        out: list[Tensor | None] = [None]
        for part, shape, grad in zip(ctx.parts, ctx.shapes, grads, strict=True):
            full = torch.zeros(shape, dtype=torch.float64)
            if grad is not None:
                if part is None:
                    full += grad
                else:
                    full[:, part] = grad
            _all_reduce(full)
            out.append(full)
        return tuple(out)


class _Gather(torch.autograd.Function):
    """This rank's rows (or, with rows None, a tensor held by ``src`` only) -> the full tensor on every rank.
    Backward: every rank computes the same loss, so its full cotangent is already the total; keep this rank's part."""

    @staticmethod
    def forward(ctx: Any, local: Tensor, full_shape: tuple[int, ...], rows: slice | None, held: bool) -> Tensor:
        ctx.rows, ctx.held = rows, held
        full = torch.zeros(full_shape, dtype=local.dtype)
        if rows is not None:
            full[:, rows] = local
        elif held:
            full += local
        _all_reduce(full)
        return full

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        if ctx.rows is not None:
            return grad[:, ctx.rows], None, None, None
        return (grad if ctx.held else torch.zeros_like(grad)), None, None, None


def _all_reduce(x: Tensor) -> None:
    work = dist.all_reduce(x, async_op=True)
    assert work is not None
    work.wait(datetime.timedelta(seconds=OP_TIMEOUT_S))


def _distributed_public_op(op: str, rank: int, lengths: tuple[int, ...]) -> Callable[..., object]:
    """``impl.<op>``'s signature on every rank at once: the full sequence in, the full result out (gathered), its
    gradients flowing back through the distributed op to every rank's shard and summed into the full inputs."""
    import impl.distributed as idist

    rows = _shard(rank, lengths)
    last = rank == len(lengths) - 1

    def deltaformer_attn(q: Tensor, k: Tensor, v: Tensor, beta: Tensor | None, **options: Any) -> Tensor:
        options.pop("cu_seqlens")
        q_, k_, v_, beta_ = _Scatter.apply((rows,) * 4, q, k, v, beta)  # type: ignore[no-untyped-call]
        o = idist.deltaformer_attn(q_, k_, v_, beta_, timeout=OP_TIMEOUT_S, **options)
        return _Gather.apply(o, tuple(v.shape), rows, True)  # type: ignore[no-untyped-call,no-any-return]

    def delta_rule(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, *, initial_state: Tensor | None,
                   **options: Any) -> tuple[Tensor, Tensor]:
        options.pop("cu_seqlens")
        extra = () if initial_state is None else (initial_state,)
        q_, k_, v_, beta_, *state_in = _Scatter.apply((rows,) * 4 + (None,) * len(extra), q, k, v, beta,  # type: ignore[no-untyped-call]
                                                      *extra)
        # the initial state is read on rank 0 only; the others' gradient for it is 0, summed by the all-reduce
        o, state = idist.delta_rule(q_, k_, v_, beta_, initial_state=state_in[0] if state_in and rank == 0 else None,
                                    timeout=OP_TIMEOUT_S, **options)
        N, H, K, V = q.shape[0], q.shape[2], q.shape[3], v.shape[3]
        held = state if last else torch.zeros(N, H, K, V, dtype=v.dtype)
        assert held is not None
        return (_Gather.apply(o, tuple(v.shape), rows, True),  # type: ignore[no-untyped-call]
                _Gather.apply(held, (N, H, K, V), None, last))  # type: ignore[no-untyped-call]

    return deltaformer_attn if op == "deltaformer_attn" else delta_rule


# --- in the test process --------------------------------------------------------------------------------------------

@functools.cache
def group_results(world: int) -> list[dict[str, Any]]:
    """Spawn ``world`` gloo ranks once per session, run every case of that world size, return each rank's results."""
    with tempfile.TemporaryDirectory() as tmp:
        context = mp.start_processes(run_group, args=(world, f"{tmp}/init", tmp, world == 3), nprocs=world,
                                     join=False, start_method="spawn")
        deadline = time.monotonic() + SPAWN_DEADLINE_S
        while not context.join(timeout=max(0.1, deadline - time.monotonic())):
            if time.monotonic() > deadline:
                for process in context.processes:
                    process.kill()
                pytest.fail(f"the {world}-rank group did not finish within {SPAWN_DEADLINE_S} s (killed)")
        results = [torch.load(Path(tmp) / f"rank{r}.pt", weights_only=False) for r in range(world)]
    for rank, result in enumerate(results):
        if "crash" in result:
            pytest.fail(f"rank {rank} of the {world}-rank group crashed:\n{result['crash']}")
    return results


def assemble(results: list[dict[str, Any]], name: str, key: str) -> Tensor | None:
    """The full tensor ``key`` of case ``name``: shards concatenated in rank order along T (the final state from
    the last rank; the initial state's gradient from rank 0)."""
    parts = [r[name].get(key) for r in results]
    if key == "final_state":
        return parts[-1]
    if key == "grad_initial_state":
        return parts[0]
    if any(p is None for p in parts):
        return None
    return torch.cat(parts, dim=1)


def reference(case: Case, lengths: tuple[int, ...]) -> dict[str, Tensor]:
    """The single-process impl on the whole sequence: output, final state, and input gradients of the same loss."""
    import impl

    full = {name: x.clone().requires_grad_(case.grad) for name, x in case.inputs(sum(lengths)).items()}
    if case.op == "deltaformer_attn":
        o = impl.deltaformer_attn(full["q"], full["k"], full["v"], full.get("beta"), write=case.write,
                                  kernel=case.kernel, scale=case.problem(1).scale, chunk_size=REFERENCE_CHUNK)
        state = None
    else:
        o, state = impl.delta_rule(full["q"], full["k"], full["v"], full["beta"],
                                   initial_state=full.get("initial_state"), output_final_state=True,
                                   chunk_size=REFERENCE_CHUNK)
    out = {"o": o.detach()}
    if state is not None:
        out["final_state"] = state.detach()
    if case.grad:
        loss = (o * _cot(case, lengths, "o")).sum()
        if state is not None:
            loss = loss + (state * _cot(case, lengths, "final_state")).sum()
        loss.backward()
        out |= {f"grad_{name}": x.grad for name, x in full.items() if x.grad is not None}
    return out


def relative_error(actual: Tensor, expected: Tensor) -> float:
    """max |actual - expected| / max |expected| (max |actual| when expected is exactly 0)."""
    scale = float(expected.abs().max())
    return float((actual - expected).abs().max()) / (scale if scale > 0 else 1.0)
