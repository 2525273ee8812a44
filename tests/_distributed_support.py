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
import itertools
import math
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
    dtype: str = "float64"

    @property
    def name(self) -> str:
        return (f"{self.op}[{self.kernel},{self.write},K{self.K}V{self.V},C{self.chunk_size},splits{self.splits},"
                f"beta{int(self.beta)},state{int(self.initial_state)},grad{int(self.grad)},scale{self.scale},"
                f"{self.dtype}]")

    def problem(self, T: int) -> Problem:
        scale = self.scale
        if scale is None and self.op == "deltaformer_attn" and self.kernel == "round":
            scale = round_scale(self.K, 1)
        return Problem(op=self.op, B=2, T=T, H=2, K=self.K, V=self.V, dtype=self.dtype, chunk_size=REFERENCE_CHUNK,
                       kernel=self.kernel, write=self.write, scale=scale, with_state=self.initial_state,
                       seed=1000 + self.seed)

    def inputs(self, T: int) -> dict[str, Tensor]:
        """The harness's inputs (values representable in ``dtype``) as tensors of ``dtype``."""
        arrays = self.problem(T).arrays()
        tensors = {name: torch.from_numpy(x.copy()).to(getattr(torch, self.dtype)) for name, x in arrays.items()}
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
    # float32: every kernel and write mode at three ranks, K == V (the fused CPU paths) and K != V
    pairs = [(kernel, write) for kernel in KERNELS for write in WRITES] if world == 3 else [("softmax", "k"),
                                                                                            ("exp", "q")]
    cases += [Case("deltaformer_attn", kernel=kernel, write=write, K=4 if i % 2 else 3, V=4 if i % 2 else 5,
                   chunk_size=None if i % 3 == 0 else 2, seed=20 + i, dtype="float32")
              for i, (kernel, write) in enumerate(pairs)]
    return cases


def delta_rule_cases(world: int) -> list[Case]:
    del world
    return [Case("delta_rule", initial_state=state, K=4, V=3, chunk_size=chunk, seed=5)
            for state in (False, True) for chunk in (2, None)] + [Case("delta_rule", grad=False, seed=6),
                                                                  Case("delta_rule", initial_state=True, K=4, V=3,
                                                                       chunk_size=2, seed=13, dtype="float32")]


# --- huge logits and overflow: every split of short sequences -----------------------------------------------------

HUGE_SCALE = 1e39
"""Write and read-out scores of magnitude ~1e39 (finite in fp64, far beyond 1 / unit roundoff)."""
HUGE_T = 5


def compositions(T: int, parts: int) -> list[tuple[int, ...]]:
    """Every way to cut a sequence of T rows into ``parts`` contiguous shards of length >= 1."""
    out = []
    for cuts in itertools.combinations(range(1, T), parts - 1):
        bounds = (0, *cuts, T)
        out.append(tuple(bounds[i + 1] - bounds[i] for i in range(parts)))
    return out


def huge_logit_inputs(variant: str) -> tuple[dict[str, Tensor], str]:
    """(fp64 inputs q, k, v of [1, 5, 1, *], write mode) at scale HUGE_SCALE, beta None (all ones):

    - ``probe4-q``: impl's probe 4, k = 1, q = w = -k, v = 1..5: write and read-out scores all -1e39 (uniform
      weights; u = [1, 1, 2, 8/3, 10/3]);
    - ``probe4-k``: q = k = 1 (scores +1e39), V = 2 (two equal value columns);
    - ``ties``: k = [1/2, 1, 1/2, 1, 1], q = 1, write k: the weights are uniform over the keys of largest score,
      which are on some ranks and not on others (a block whose largest score is lower gets weight exactly 0).
    """
    ones = torch.ones(1, HUGE_T, 1, 1, dtype=torch.float64)
    v = torch.arange(1.0, HUGE_T + 1.0, dtype=torch.float64).reshape(1, HUGE_T, 1, 1)
    if variant == "probe4-q":
        return {"q": -ones, "k": ones, "v": v}, "q"
    if variant == "probe4-k":
        return {"q": ones, "k": ones, "v": v.expand(1, HUGE_T, 1, 2).contiguous()}, "k"
    k = torch.tensor([0.5, 1.0, 0.5, 1.0, 1.0], dtype=torch.float64).reshape(1, HUGE_T, 1, 1)
    return {"q": ones, "k": k, "v": v}, "k"


HUGE_VARIANTS = ("probe4-q", "probe4-k", "ties")
OVERFLOW_ROWS = (5, 10)
"""The first overflowing input row of ``tests._impl_support.overflow_inputs`` (T = 12)."""


def overflow_splits(world: int) -> list[tuple[int, ...]]:
    """Shard lengths for the overflow cases (T = 12): every split at two ranks; at three, every split whose middle
    shard has one or two rows (so a boundary pair brackets every row); at four, splits with boundaries next to the
    overflowing rows 5, 6 and 10, 11."""
    if world == 2:
        return compositions(12, 2)
    if world == 3:
        return [c for c in compositions(12, 3) if c[1] <= 2]
    return [(1, 9, 1, 1), (3, 7, 1, 1), (5, 1, 4, 2), (2, 3, 1, 6), (6, 4, 1, 1)] if world == 4 else [(12,)]


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
    return torch.randn(shape, generator=torch.Generator().manual_seed(7 + (which == "o")),
                       dtype=torch.float64).to(getattr(torch, case.dtype))


def _huge_logit_runs(rank: int, world: int) -> dict[str, dict[str, Tensor | None]]:
    """This rank's output and input gradients (of sum(o)) for every variant and every split of HUGE_T rows."""
    import impl.distributed as idist

    out = {}
    for variant, lengths in itertools.product(HUGE_VARIANTS, compositions(HUGE_T, world)):
        full, write = huge_logit_inputs(variant)
        local = {name: x[:, _shard(rank, lengths)].clone().requires_grad_(True) for name, x in full.items()}
        o = idist.deltaformer_attn(local["q"], local["k"], local["v"], write=write, scale=HUGE_SCALE, chunk_size=2,
                                   timeout=OP_TIMEOUT_S)
        o.sum().backward()
        out[f"huge {variant} {lengths}"] = {"o": o.detach()} | {f"grad_{n}": x.grad for n, x in local.items()}
    return out


def overflow_batch() -> dict[str, Tensor]:
    """``overflow_inputs`` stacked along the batch: [ordinary, overflow at OVERFLOW_ROWS[0], at OVERFLOW_ROWS[1]]
    (batch elements are independent, so one call serves all three)."""
    from tests._impl_support import overflow_inputs

    parts = [overflow_inputs(OVERFLOW_ROWS[0])[0]] + [overflow_inputs(at)[1] for at in OVERFLOW_ROWS]
    return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}


def _overflow_runs(rank: int, world: int) -> dict[str, dict[str, Tensor | None]]:
    """This rank's output for ``overflow_batch`` at every split of ``overflow_splits``."""
    import impl.distributed as idist

    full = overflow_batch()
    out = {}
    for lengths in overflow_splits(world):
        local = {name: x[:, _shard(rank, lengths)].contiguous() for name, x in full.items()}
        out[f"overflow {lengths}"] = {"o": idist.deltaformer_attn(**local, chunk_size=4, timeout=OP_TIMEOUT_S)}
    return out


def _link_behaviour(rank: int) -> dict[str, bool]:
    """Two ranks: rank 0 sends message "a" and drops its own reference; rank 1 takes "a" through the inbox (merged
    by ``Links.tick`` alone, no blocking receive), then sends "b". Records whether rank 0's tensor was freed before
    rank 0's link finished (only its waiting thread could free it), and whether rank 1's tick merged "a"."""
    import gc
    import weakref

    from impl.distributed.links import Link, Links
    from impl.distributed.schedule import Message

    group = dist.group.WORLD
    assert group is not None
    messages = [Message("a", 0, 1, 2, 3), Message("b", 1, 0, 1, 1)]
    link = Link(group, rank, 1 - rank, messages, shape=(1, 1), dtype=torch.float64, device=torch.device("cpu"),
                timeout=datetime.timedelta(seconds=OP_TIMEOUT_S), tag_base=1000)
    links = Links({1 - rank: link})
    seen: dict[str, bool] = {}
    deadline = time.monotonic() + 10.0
    if rank == 0:
        tensor = torch.ones(1, 1, 2, 3, dtype=torch.float64)
        freed = weakref.ref(tensor)
        link.send("a", tensor)
        del tensor
        link.recv("b")
        while freed() is not None and time.monotonic() < deadline:
            gc.collect()
            time.sleep(0.01)
        seen["sent tensor freed before finish"] = freed() is None
    else:
        merged: list[Tensor] = []
        links.expect(0, "a", lambda message: merged.append(message.sum()))
        while not merged and time.monotonic() < deadline:
            links.tick()
            time.sleep(0.01)
        seen["merged by tick"] = bool(merged) and float(merged[0]) == 6.0
        links.drain()
        link.send("b", torch.zeros(1, 1, 1, 1, dtype=torch.float64))
    links.finish()
    return seen


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
            results |= _huge_logit_runs(rank, world) | _overflow_runs(rank, world)
            if world == 2:
                results["links"] = _link_behaviour(rank)
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


def float32_errors(results: list[dict[str, Any]], case: Case,
                   lengths: tuple[int, ...]) -> dict[str, tuple[float, float]]:
    """For a float32 case: {output or gradient: (normwise error of the distributed result against the single-process
    impl's float32 result, allowed)}.

    Error model (the harness's, ``proofs_checks.differential.tolerances``): a correct float32 kernel is within
    b = LAMBDA sqrt(T + K + V) kappa u_fp32 of the exact result, normwise (gradients: relative to the norm of the
    whole gradient), kappa measured on these inputs. ``check_case`` computes b and checks that the single-process
    impl meets it here; if the distributed result meets it too, the two differ by at most 2 b (triangle
    inequality; normalising by impl's norm instead of the exact one changes this by a factor 1 +- b). The gradient
    budget's kappa is measured with the harness's cotangent, the comparison uses ``_cot``'s: both standard normal.
    """
    import impl
    from proofs_checks.differential.tolerances import normwise_error

    op = impl.deltaformer_attn if case.op == "deltaformer_attn" else impl.delta_rule
    verdict = check_case(op, case.problem(sum(lengths)))
    assert verdict.passed and not verdict.skipped, verdict.report()
    expected = reference(case, lengths)
    total = math.sqrt(sum(float((g.double() ** 2).sum()) for k, g in expected.items() if k.startswith("grad_")))
    out = {}
    for key, want in expected.items():
        got = assemble(results, case.name, key)
        assert got is not None, f"{case.name}: {key} missing"
        error = normwise_error(got.double().numpy(), want.double().numpy(),
                               scale=total if key.startswith("grad_") else None)
        out[key] = (error, 2.0 * verdict.budgets[key])
    return out
