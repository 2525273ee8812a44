"""impl.triton_ops linear attention (UPD.1a) and delta rule (UPD.3a via the WY form) against the float64 spec, in
Triton's interpreter, outputs, final states and gradients (q, k, v, beta, initial_state).

TRITON_INTERPRET=1 is set before the kernels are defined, so these run on CPU tensors in fp32 and fp64. Under the
interpreter every kernel uses 16-row blocks and 16-column value blocks (``impl.triton_ops._chunk.row_tile`` /
``head_blocks``), so the hand-picked problems below hit each shipped-bug shape: a chunk (24) that is not a multiple
of the tile (the chunk's last tile is partial), T not a multiple of the chunk (the backward must start from the last
block actually present), T below one tile, chunks smaller than a tile, variable-length packing with length-1
sequences, non-power-of-two head dims (K = 20, V = 33: three value blocks, the last one masked), batch and heads > 1
(the int64 bases), an initial state and the final state. Every ``torch.empty`` inside the backend is NaN-poisoned, so
an unwritten row, state slot or gradient shows up as NaN.

Error model: the harness's (``proofs_checks.differential.tolerances``): normwise relative error <= LAMBDA sqrt(n)
kappa u_compute with n = T + K + V, u_compute the unit roundoff of the arithmetic (2^-53 fp64, 2^-24 fp32), LAMBDA =
6 and kappa the measured condition number of the float64 spec map (of the gradient map plus the forward map for
gradients). Gradients are compared with float64 autograd of the harness's token-by-token controls, which the
harness ties to the spec by central differences on every case. No budget is widened here.
"""

from __future__ import annotations

import functools
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

import impl
from impl.triton_ops._runtime import interpreting, planning_for_gpu
from proofs_checks.differential import Problem, check_case, tolerances
from proofs_checks.differential.bridge import run_spec
from tests._impl_support import poisoned_empty

pytestmark = pytest.mark.skipif(not interpreting() and not torch.cuda.is_available(),
                                reason="needs TRITON_INTERPRET=1 or a CUDA device")
OPS = ("linear_attn", "delta_rule")


@pytest.fixture(autouse=True)
def nan_poisoned_empty() -> Iterator[None]:
    """torch.empty / empty_like return NaN-filled floating tensors during every test (catches unwritten rows)."""
    with poisoned_empty():
        yield


# (id, problem fields): each case is one shipped-bug shape at the interpreter's 16-row tile
CASES: dict[str, dict[str, Any]] = {
    "chunk 24 not a multiple of the tile, T 40 not a multiple of the chunk, K 20, V 33, with state":
        {"B": 1, "T": 40, "H": 1, "K": 20, "V": 33, "chunk_size": 24, "with_state": True, "dtype": "float64"},
    "T 5 below one tile, chunk 64 above T":
        {"B": 1, "T": 5, "H": 1, "K": 4, "V": 3, "chunk_size": 64, "dtype": "float32"},
    "chunk 3 smaller than the tile":
        {"B": 1, "T": 11, "H": 1, "K": 8, "V": 8, "chunk_size": 3, "with_state": True, "dtype": "float32"},
    "varlen with length-1 sequences, with state":
        {"B": 1, "T": 37, "H": 1, "K": 16, "V": 16, "chunk_size": 16, "cu_seqlens": (0, 1, 2, 19, 20, 37),
         "with_state": True, "dtype": "float64"},
    "batch 2, heads 2, two blocks per sequence":
        {"B": 2, "T": 18, "H": 2, "K": 16, "V": 5, "chunk_size": 16, "with_state": True, "dtype": "float32"},
}


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("case", list(CASES), ids=list(range(len(CASES))))
def test_outputs_final_states_and_gradients_match_the_spec_on_bug_shaped_problems(op: str, case: str) -> None:
    problem = Problem(op=op, seed=7, **CASES[case])
    result = check_case(functools.partial(getattr(impl, op), backend="triton"), problem, grads=True)
    assert result.skipped is None, result.report()
    assert result.passed, f"{case}\n{result.report()}"


def test_delta_rule_with_the_gpu_tiles_matches_the_spec() -> None:
    """The sm_90 tile family run by the interpreter (``planning_for_gpu``: launch decisions as on an H100): 64-row
    blocks, so the WY kernels' blocked inverse merges its 16 x 16 diagonal blocks by two doubling levels, and the
    value blocks of ``_chunk._GPU_CONFIGS``; chunk 100 is not a multiple of the 64-row block (blocks of 64 and 36),
    T = 150 not a multiple of the chunk. Catches a wrong doubling merge or a mask that only 16-row tiles hide."""
    problem = Problem(op="delta_rule", B=1, T=150, H=1, K=20, V=33, chunk_size=100, with_state=True,
                      dtype="float64", seed=5)
    with planning_for_gpu():
        result = check_case(functools.partial(impl.delta_rule, backend="triton"), problem, grads=True)
    assert result.skipped is None and result.passed, result.report()


def test_delta_rule_with_beta_up_to_two_matches_the_spec() -> None:
    """beta in (0, 2): the transitions I - beta k k^T are no longer contractions toward 0 (eigenvalue 1 - beta)."""
    problem = Problem(op="delta_rule", B=1, T=33, H=1, K=8, V=8, chunk_size=16, beta_regime="two", with_state=True,
                      dtype="float64", seed=3)
    result = check_case(functools.partial(impl.delta_rule, backend="triton"), problem, grads=True)
    assert result.skipped is None and result.passed, result.report()


@pytest.mark.parametrize("op", OPS)
def test_chaining_two_calls_through_the_final_state_equals_one_call(op: str) -> None:
    """Split a sequence at t = 21 (mid-block): call 1 returns its final state, call 2 starts from it. The outputs
    and the final state equal the spec's on the whole sequence (budget: the harness model at fp64, kappa measured
    by perturbing the inputs as the harness does)."""
    problem = Problem(op=op, B=1, T=40, H=2, K=8, V=12, chunk_size=16, with_state=True, dtype="float64", seed=11)
    arrays = problem.arrays()
    t = {name: torch.from_numpy(x) for name, x in arrays.items()}
    fn = getattr(impl, op)
    extra = (t["beta"],) if op == "delta_rule" else ()
    split = 21

    def part(rows: slice, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        args = (t["q"][:, rows], t["k"][:, rows], t["v"][:, rows], *(x[:, rows] for x in extra))
        o, final = fn(*args, initial_state=state, output_final_state=True, chunk_size=16, backend="triton")
        return o, final

    o1, s1 = part(slice(0, split), t["initial_state"])
    assert s1 is not None
    o2, s2 = part(slice(split, None), s1)
    assert s2 is not None
    want = run_spec(op, arrays, None, scale=None)
    rng = np.random.default_rng(0)
    perturbed = {n: x * (1 + tolerances.ETA * rng.uniform(-1, 1, x.shape)) for n, x in arrays.items()}
    moved = run_spec(op, perturbed, None, scale=None)
    kappa = max(1.0, max(tolerances.normwise_error(moved[n], want[n]) for n in want) / tolerances.ETA)
    budget = tolerances.budget("float64", T=problem.T, K=problem.K, V=problem.V, kappa=kappa)
    got = {"o": torch.cat([o1, o2], dim=1).numpy(), "final_state": s2.numpy()}
    for name in want:
        err = tolerances.normwise_error(got[name], want[name])
        assert err <= budget, f"{name}: error {err:.3e} > budget {budget:.3e}"


@pytest.mark.parametrize("op", OPS)
def test_no_final_state_is_returned_unless_asked_and_no_grad_inputs_run_without_autograd(op: str) -> None:
    q, k, v = (torch.randn(1, 9, 1, 4, dtype=torch.float64) for _ in range(3))
    extra = (torch.rand(1, 9, 1, dtype=torch.float64),) if op == "delta_rule" else ()
    o, state = getattr(impl, op)(q, k, v, *extra, chunk_size=4, backend="triton")
    assert state is None
    assert o.dtype == torch.float64 and o.shape == (1, 9, 1, 4) and not o.requires_grad
    assert torch.isfinite(o).all()


@pytest.mark.parametrize("op", OPS)
def test_triton_recurrent_backend_passes_the_public_differential_harness_with_gradients(op: str) -> None:
    fn = functools.partial(getattr(impl, op), backend="triton")
    summary = impl_run(fn, op)
    assert summary.passed, summary.report()


def impl_run(fn: Any, op: str) -> Any:
    from proofs_checks.differential import run

    return run(fn, op, examples=3, seed=0, dtypes=("float64", "float32"), grads=True, max_t=40, long_t=60,
               shrink=False)
