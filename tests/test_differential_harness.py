"""The public harness: it accepts our torch backend, rejects deliberately broken kernels with a non-zero exit and a
reproducer, and its strategies draw what their docstring promises."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proofs_checks.differential import Problem, problems, run
from proofs_checks.differential.__main__ import main
from proofs_checks.differential.conditioning import solve_condition
from proofs_checks.differential.tolerances import budget, normwise_error, unit_roundoff
from tests import broken_kernels


@pytest.mark.parametrize("op", ["deltaformer_u", "deltaformer_attn", "delta_rule", "linear_attn", "softmax_attn"])
def test_cli_accepts_torch_backend(op: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([f"impl:{op}", "--op", op, "--examples", "6", "--seed", "1", "--long-t", "150"]) == 0
    assert "PASS" in capsys.readouterr().out


@pytest.mark.parametrize(("target", "op", "dtypes"), [
    ("deltaformer_u_diagonal_in_mask", "deltaformer_u", "float64"),
    ("deltaformer_attn_residual_in_fp16", "deltaformer_attn", "float32"),
    ("deltaformer_attn_readout_scale_ignored", "deltaformer_attn", "float64"),
    ("delta_rule_state_not_carried", "delta_rule", "float64"),
])
def test_cli_rejects_broken_kernel(target: str, op: str, dtypes: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main([f"tests.broken_kernels:{target}", "--op", op, "--examples", "40", "--dtypes", dtypes,
                 "--no-shrink"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "is " in out and "x its budget" in out, out  # a numerical disagreement, not a crash of the kernel
    assert "problem = Problem(" in out


def test_cli_entry_point_exit_codes() -> None:
    """The module runs as ``python -m`` and reports usage errors with exit code 2."""
    ok = subprocess.run([sys.executable, "-m", "proofs_checks.differential", "impl:softmax_attn", "--op",
                         "softmax_attn", "--examples", "3", "--no-grads"], check=False, capture_output=True,
                        text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = subprocess.run([sys.executable, "-m", "proofs_checks.differential", "impl:nothing_here", "--op",
                          "softmax_attn"], check=False, capture_output=True,
                         text=True)
    assert bad.returncode == 2


def test_run_reports_worst_failing_case() -> None:
    summary = run(broken_kernels.deltaformer_u_diagonal_in_mask, "deltaformer_u", examples=10, shrink=True)
    assert not summary.passed and summary.failure is not None
    assert summary.failure.worst()[1] > 1.0
    assert "reproducer" in summary.report()


@settings(max_examples=40)
@given(problem=problems("deltaformer_attn", max_t=40, long_t=300))
def test_drawn_problems_are_well_formed(problem: Problem) -> None:
    arrays = problem.arrays()
    assert arrays["q"].shape == (problem.B, problem.T, problem.H, problem.K)
    if problem.cu_seqlens is not None:
        assert problem.B == 1 and problem.cu_seqlens[0] == 0 and problem.cu_seqlens[-1] == problem.T
        assert all(b > a for a, b in zip(problem.cu_seqlens[:-1], problem.cu_seqlens[1:], strict=True))


@settings(max_examples=30)
@given(problem=problems("deltaformer_u", kernels=("round",)))
def test_round_kernel_inputs_keep_scores_off_half_integers(problem: Problem) -> None:
    """The round construction: every write score is at least 1 / (2 (2K + 1)) away from a half-integer."""
    a = problem.arrays()
    assert problem.scale is not None
    scores = np.einsum("bthk,bshk->bhts", a["w"], a["k"]) * problem.scale
    distance = np.abs(scores - np.floor(scores) - 0.5)
    assert distance.min() >= 1.0 / (2 * (2 * problem.K + 1)) - 1e-12


def test_strategies_reach_the_edge_cases() -> None:
    """T = 1, long multi-chunk T, chunk not dividing T, and varlen with a length-1 segment are all drawn."""
    seen = {"t1": False, "long": False, "ragged": False, "len1": False}

    @settings(max_examples=300, database=None)
    @given(problem=problems("delta_rule", max_t=40, long_t=300))
    def probe(problem: Problem) -> None:
        seen["t1"] |= problem.T == 1
        seen["long"] |= 2 * problem.chunk_size < problem.T and problem.T > 40
        seen["ragged"] |= problem.chunk_size < problem.T and problem.T % problem.chunk_size != 0
        cu = problem.cu_seqlens
        seen["len1"] |= cu is not None and any(b - a == 1 for a, b in itertools.pairwise(cu))

    probe()
    assert all(seen.values()), seen


@given(st.sampled_from(["float64", "float32", "float16", "bfloat16"]))
def test_budget_grows_with_size_and_condition(dtype: str) -> None:
    small = budget(dtype, T=4, K=4, V=4, kappa=1.0)
    assert budget(dtype, T=400, K=4, V=4, kappa=1.0) > small
    assert budget(dtype, T=4, K=4, V=4, kappa=100.0) > small
    assert small >= unit_roundoff("float64")


def test_normwise_error_zero_reference() -> None:
    assert normwise_error(np.zeros(3), np.zeros(3)) == 0.0
    assert normwise_error(np.ones(3) * 1e-30, np.zeros(3)) == float("inf")
    assert normwise_error(np.array([np.nan]), np.array([1.0])) == float("inf")


def _one_head(T: int, K: int, V: int, **arrays: np.ndarray) -> tuple[Problem, dict[str, np.ndarray]]:
    problem = Problem("deltaformer_u", B=1, T=T, H=1, K=K, V=V, kernel="linear")
    return problem, {name: x.reshape(1, T, 1, -1) if name != "beta" else x.reshape(1, T, 1)
                     for name, x in arrays.items()}


def test_solve_condition_is_one_without_writes() -> None:
    """beta = 0: M = I, so || |M^-1| |M| |U| || / ||U|| = 1 exactly."""
    rng = np.random.default_rng(0)
    problem, arrays = _one_head(5, 2, 3, w=rng.standard_normal((5, 2)), k=rng.standard_normal((5, 2)),
                                v=rng.standard_normal((5, 3)), beta=np.zeros(5))
    assert solve_condition(problem, arrays) == 1.0


def test_solve_condition_two_by_two_by_hand() -> None:
    """T = 2, K = V = 1, linear kernel: P[1, 0] = w_1 k_0 = 2, c = beta_1 P[1, 0] = 3, M = [[1, 0], [3, 1]].
    U = (1, 3 - 3 * 1) = (1, 0); |M^-1| |M| = [[1, 0], [6, 1]], so the bound |M^-1| |M| |U| is (1, 6 * 1 + 0) and
    kappa_solve = sqrt(1 + 36) / 1: u_1 = 0 is a cancellation of terms of size 3, which rounding can upset."""
    problem, arrays = _one_head(2, 1, 1, w=np.array([1.0, 2.0]), k=np.array([1.0, 5.0]), v=np.array([1.0, 3.0]),
                                beta=np.array([0.0, 1.5]))
    assert solve_condition(problem, arrays) == pytest.approx(np.sqrt(37.0), rel=1e-14)


def test_other_ops_have_no_solve_term() -> None:
    problem = Problem("linear_attn", B=1, T=3, H=1, K=2, V=2)
    assert solve_condition(problem, problem.arrays()) == 0.0
