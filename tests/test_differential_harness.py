"""The public harness: it accepts our torch backend, rejects deliberately broken kernels with a non-zero exit and a
reproducer, reports every distinct failure, honours declared capabilities and precision policies, and its strategies
draw what their docstrings promise. The mutants of each bug class of issue 11 are in ``tests/mutants.py``
(``tests/test_differential_mutants.py`` runs them)."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import impl
from proofs_checks.differential import Capabilities, Precision, Problem, check_case, explicit_problems, problems, run
from proofs_checks.differential.__main__ import main
from proofs_checks.differential.conditioning import solve_condition
from proofs_checks.differential.ops import OPS
from proofs_checks.differential.shrink import shrink_problem
from proofs_checks.differential.strategies import CANCEL_SMALL, sample_problems
from proofs_checks.differential.tolerances import (
    budget,
    normwise_error,
    representable,
    round_to_dtype,
    ulp,
    unit_roundoff,
)
from spec import deltaformer as spec_df
from tests import broken_kernels, mutants


@pytest.mark.parametrize("op", list(OPS))
def test_cli_accepts_torch_backend(op: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([f"impl:{op}", "--op", op, "--examples", "6", "--seed", "1", "--long-t", "150"]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "coverage of the" in out


@pytest.mark.parametrize(("target", "op", "dtypes"), [
    ("deltaformer_u_diagonal_in_mask", "deltaformer_u", "float64"),
    ("deltaformer_attn_residual_in_fp16", "deltaformer_attn", "float32"),
    ("deltaformer_attn_readout_scale_ignored", "deltaformer_attn", "float64"),
    ("delta_rule_state_not_carried", "delta_rule", "float64"),
])
def test_cli_rejects_broken_kernel(target: str, op: str, dtypes: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main([f"tests.broken_kernels:{target}", "--op", op, "--examples", "40", "--dtypes", dtypes,
                 "--no-shrink", "--fail-fast"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "error/budget" in out and "FAIL" in out, out  # a numerical disagreement, not a crash of the kernel
    assert "problem = Problem(" in out


def test_cli_entry_point_exit_codes() -> None:
    """The module runs as ``python -m`` and reports usage errors with exit code 2."""
    ok = subprocess.run([sys.executable, "-m", "proofs_checks.differential", "impl:softmax_attn", "--op",
                         "softmax_attn", "--examples", "3", "--no-grads"], check=False, capture_output=True,
                        text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = subprocess.run([sys.executable, "-m", "proofs_checks.differential", "impl:nothing_here", "--op",
                          "softmax_attn"], check=False, capture_output=True, text=True)
    assert bad.returncode == 2, bad.stdout + bad.stderr
    with pytest.raises(SystemExit) as usage:
        main(["impl:softmax_attn", "--op", "softmax_attn", "--kernels", "cubic"])
    assert usage.value.code == 2


def test_failure_is_shrunk_to_a_short_case() -> None:
    """Catches: shrinking that stops at a long draw. Rows of a last partial chunk unwritten need T % C != 0; the
    simplest such case is T = 1 with C = 2 (one sequence, one head, the smallest sizes)."""
    summary = run(mutants.MUTANTS["deltaformer_attn__unwritten_out"], "deltaformer_attn", grads=False,
                  fail_fast=True)
    assert not summary.passed and summary.failure is not None
    shrunk = summary.failures[0].problem
    assert (shrunk.T, shrunk.chunk_size, shrunk.B, shrunk.H, shrunk.K, shrunk.V, shrunk.cu_seqlens) == \
        (1, 2, 1, 1, 1, 1, None), shrunk
    assert "reproducer" in summary.report()


def _crash_on_varlen_else_drop_dv(*args: Any, **kwargs: Any) -> Any:
    if kwargs.get("cu_seqlens") is not None:
        raise RuntimeError("packed sequences are not handled")
    return mutants.MUTANTS["deltaformer_attn__dv_zero"](*args, **kwargs)


def test_two_distinct_bugs_are_both_reported() -> None:
    """Catches: a report that stops at the first failure or ends in a traceback (Hypothesis' ExceptionGroup)."""
    summary = run(_crash_on_varlen_else_drop_dv, "deltaformer_attn", examples=10, shrink=False)
    kinds = [f.kind for f in summary.failures]
    assert len(kinds) == 2, kinds
    assert any(k.startswith("raised RuntimeError") for k in kinds) and "gradients" in kinds, kinds
    report = summary.report()
    assert "2 distinct failures" in report and report.count("reproducer:") == 2, report
    assert "packed sequences are not handled" in report


def _only_q_softmax(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, *, write: str,
                    kernel: str, **options: Any) -> torch.Tensor:
    if write != "q" or kernel != "softmax":
        raise ValueError(f"only write='q', kernel='softmax', got {write!r}, {kernel!r}")
    return mutants.reference(q, k, v, beta, write=write, kernel=kernel, **options)


def _not_implemented_elsewhere(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, *,
                               write: str, kernel: str, **options: Any) -> torch.Tensor:
    if write != "q" or kernel != "softmax":
        raise NotImplementedError(f"write={write!r}, kernel={kernel!r}")
    return mutants.reference(q, k, v, beta, write=write, kernel=kernel, **options)


def test_declared_capabilities_restrict_the_draws() -> None:
    """A reference with only write="q", kernel="softmax" fails on the full draw, passes when it declares so, and
    the summary says what was not checked."""
    assert not run(_only_q_softmax, "deltaformer_attn", examples=5, grads=False, shrink=False).passed
    declared = Capabilities(kernels=("softmax",), writes=("q",))
    summary = run(_only_q_softmax, "deltaformer_attn", examples=10, grads=False, capabilities=declared)
    assert summary.passed, summary.report()
    assert "not checked (declared unsupported): write kernels exp, linear, round; write=k" in summary.report()


def test_skip_unsupported_counts_instead_of_failing() -> None:
    plain = run(_not_implemented_elsewhere, "deltaformer_attn", examples=6, grads=False, shrink=False)
    assert not plain.passed and plain.failures[0].kind.startswith("raised NotImplementedError")
    summary = run(_not_implemented_elsewhere, "deltaformer_attn", examples=20, grads=False,
                  capabilities=Capabilities(skip_unsupported=True))
    assert summary.passed, summary.report()
    assert sum(summary.unsupported.values()) > 0 and "unsupported (" in summary.report()


def test_no_compared_case_fails_the_run(capsys: pytest.CaptureFixture[str]) -> None:
    """Catches: exit 0 when every case was skipped as unsupported (nothing was checked)."""
    code = main(["tests.test_differential_harness:_never_supported", "--op", "softmax_attn", "--examples", "3",
                 "--skip-unsupported", "--no-grads"])
    assert code == 1
    assert "no case was compared" in capsys.readouterr().out


def _never_supported(*args: Any, **kwargs: Any) -> torch.Tensor:
    raise NotImplementedError("nothing")


@pytest.mark.parametrize(("name", "precision", "passes"), [
    ("deltaformer_attn__compute_float32", Precision(), False),
    ("deltaformer_attn__compute_float32", Precision(compute="float32"), True),
    ("deltaformer_attn__compute_bfloat16", Precision(compute="float32"), False),
])
def test_compute_dtype_policy(name: str, precision: Precision, passes: bool) -> None:
    """fp64 inputs computed in fp32 fail the default policy by ~1e8 x, pass when declared; bf16 arithmetic fails
    even then (a kernel wrong by more than its declared policy allows)."""
    summary = run(mutants.POLICIES[name], "deltaformer_attn", examples=8, dtypes=("float64",), precision=precision,
                  shrink=False, grads=False, fail_fast=True)
    assert summary.passed == passes, summary.report()


@pytest.mark.parametrize(("precision", "passes"), [(Precision(), False), (Precision(intermediates="input"), True)])
def test_intermediates_policy(precision: Precision, passes: bool) -> None:
    """u rounded to fp16 per chunk is caught by the default policy's consistency check, allowed when declared."""
    summary = run(mutants.POLICIES["deltaformer_attn__intermediates_input"], "deltaformer_attn", examples=8,
                  dtypes=("float16",), precision=precision, shrink=False, grads=False, fail_fast=True)
    assert summary.passed == passes, summary.report()


def test_unrepresentable_exact_result_is_skipped() -> None:
    """The issue's case: exp write, fp16, T = 116: u grows past fp16's range; the case is skipped as such."""
    problem = Problem("deltaformer_attn", B=1, T=116, H=1, K=8, V=8, dtype="float16", chunk_size=16, kernel="exp",
                      beta_regime="near_two", seed=5)
    result = check_case(impl.deltaformer_attn, problem, grads=False)
    assert result.skipped is not None and "not representable in float16" in result.skipped, result.report()


def test_json_report_has_the_coverage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "report.json"
    assert main(["impl:softmax_attn", "--op", "softmax_attn", "--examples", "5", "--no-grads", "--json",
                 str(path)]) == 0
    report = json.loads(path.read_text())
    assert report["passed"] and report["compared"] == report["coverage"]["cases"] > 5
    assert report["coverage"]["counts"]["dtype float64"] > 0
    assert "coverage of the" in capsys.readouterr().out


def _dies(*args: Any, **kwargs: Any) -> Any:
    if kwargs.get("cu_seqlens") is not None:
        import os
        import signal

        os.kill(os.getpid(), signal.SIGFPE)
    return impl.softmax_attn(*args, **kwargs)


def test_isolate_reports_a_crashing_kernel() -> None:
    """Catches: a kernel that kills its process taking the harness down with no report."""
    summary = run("tests.test_differential_harness:_dies", "softmax_attn", examples=4, grads=False, isolate=True,
                  shrink=False, fail_fast=True)
    assert not summary.passed
    assert summary.failures[0].kind == "raised process died (SIGFPE)", summary.report()
    assert "cu_seqlens=(" in summary.report()


def test_default_draws_reach_every_bug_class() -> None:
    """At the defaults (seed 0, 50 drawn + the pinned cases) the cases include packed sequences with and without
    length-1 segments, several chunks with a partial last one, T = 1, large gaps, cancellation, beta = 1 and near 2,
    initial states, every kernel and write."""
    for op in OPS:
        cases = explicit_problems(op) + sample_problems(op, 50, seed=0, max_t=40, long_t=300)
        seen = {
            "varlen": any(p.cu_seqlens is not None for p in cases),
            "varlen-len1": any(1 in p.sequence_lengths() and p.cu_seqlens is not None for p in cases),
            "partial-after-full": any(n > p.chunk_size and n % p.chunk_size for p in cases
                                      for n in p.sequence_lengths()),
            "T1": any(p.T == 1 for p in cases),
        }
        op_record = OPS[op]
        if "beta" in op_record.inputs:
            seen |= {f"beta-{b}": any(p.beta_regime == b for p in cases) for b in ("one", "near_two")}
        for regime in op_record.value_regimes("softmax"):
            seen[regime] = any(p.values == regime for p in cases)
        if op_record.stateful:
            seen["state"] = any(p.with_state for p in cases)
        if "kernel" in op_record.options:
            seen |= {k: any(p.kernel == k for p in cases) for k in ("softmax", "exp", "linear", "round")}
        if "write" in op_record.options:
            seen |= {w: any(p.write == w for p in cases) for w in ("k", "q")}
        assert all(seen.values()), (op, seen)


@settings(max_examples=20)
@given(problem=problems("deltaformer_attn", max_t=40, long_t=120))
def test_drawn_problems_are_well_formed(problem: Problem) -> None:
    arrays = problem.arrays()
    assert arrays["q"].shape == (problem.B, problem.T, problem.H, problem.K)
    assert all(np.array_equal(x, round_to_dtype(x, problem.dtype)) for x in arrays.values())
    if problem.cu_seqlens is not None:
        assert problem.B == 1 and problem.cu_seqlens[0] == 0 and problem.cu_seqlens[-1] == problem.T
        assert all(b > a for a, b in itertools.pairwise(problem.cu_seqlens))
        assert len(problem.cu_seqlens) >= 3  # at least one cut


def _row_gaps(scores: np.ndarray, dominant: int, strict: bool) -> np.ndarray:
    """Per row t: the dominant column's score (t + dominant) minus the largest score the row may attend to."""
    T = scores.shape[0]
    out = []
    for t in range(1 if strict else 0, T):
        if t + dominant >= T:
            continue
        allowed = scores[t, :t] if strict else scores[t, :t + 1]
        out.append(scores[t, t + dominant] - allowed.max())
    return np.array(out)


@pytest.mark.parametrize(("write", "dtype"), [("k", "float32"), ("q", "float64")])
def test_gap_regime_has_the_promised_gaps(write: str, dtype: str) -> None:
    """The "gap" regime: every row's write scores have a future (write q) or diagonal (write k) score at least
    ``gap`` nats above every strictly earlier one, and the read-out a future one above every causal one."""
    problem = Problem("deltaformer_attn", B=1, T=23, H=2, K=16, V=4, dtype=dtype, write=write, values="gap",
                      gap=120.0, seed=7)
    a = problem.arrays()
    for h in range(2):
        q, k = a["q"][0, :, h], a["k"][0, :, h]
        w = k if write == "k" else q
        scores = w @ k.T / 4.0
        # a score is a K-term dot product: rounding error at most K u |w| |k| each (Higham 3.1), two per difference
        rounding = 2 * 16 * unit_roundoff(dtype) * float(np.abs(w).sum(-1).max() * np.abs(k).sum(-1).max()) / 4.0
        assert _row_gaps(scores, 0 if write == "k" else 1, strict=True).min() >= 120.0 - rounding
        assert _row_gaps(q @ k.T / 4.0, 1, strict=False).min() >= 120.0 - rounding


@pytest.mark.parametrize("op", ["deltaformer_u", "delta_rule"])
def test_cancel_regime_cancels(op: str) -> None:
    """The "cancel" regime: on about half the rows the exact residual is ~CANCEL_SMALL while v is O(1)."""
    problem = Problem(op, B=1, T=30, H=1, K=8, V=4, beta_regime="one", values="cancel", seed=3)
    a = problem.arrays()
    v = a["v"][0, :, 0]
    if op == "deltaformer_u":
        r = spec_df.deltaformer_u(a["w"][0, :, 0], a["k"][0, :, 0], v, a["beta"][0, :, 0])
    else:
        k, S, rows = a["k"][0, :, 0], np.zeros((4, 8)), []
        for t in range(30):
            rows.append(v[t] - S @ k[t])
            S = S + np.outer(rows[-1], k[t])
        r = np.array(rows)
    ratio = np.linalg.norm(r, axis=-1) / np.linalg.norm(v, axis=-1)
    assert np.sum(ratio < 100 * CANCEL_SMALL) >= 8, ratio


@settings(max_examples=30)
@given(problem=problems("deltaformer_u", capabilities=Capabilities(kernels=("round",))))
def test_round_kernel_inputs_keep_scores_off_half_integers(problem: Problem) -> None:
    """The round construction: every write score is at least 1 / (2 (2K + 1)) away from a half-integer."""
    a = problem.arrays()
    assert problem.scale is not None
    scores = np.einsum("bthk,bshk->bhts", a["w"], a["k"]) * problem.scale
    distance = np.abs(scores - np.floor(scores) - 0.5)
    assert distance.min() >= 1.0 / (2 * (2 * problem.K + 1)) - 1e-12


def test_shrinker_keeps_the_failure_and_stops() -> None:
    """The shrinker only accepts candidates that still fail, and reaches the smallest T > C with T % C != 0."""
    start = Problem("delta_rule", B=2, T=37, H=3, K=8, V=5, chunk_size=16, seed=4, with_state=True)

    def fails(p: Problem) -> bool:
        return p.chunk_size < p.T and p.T % p.chunk_size != 0

    smallest, checks = shrink_problem(start, fails, dtypes=("float64",), capabilities=Capabilities())
    assert fails(smallest) and 0 < checks <= 100
    assert (smallest.T, smallest.chunk_size, smallest.B, smallest.H, smallest.with_state) == (3, 2, 1, 1, False)


@given(st.sampled_from(["float64", "float32", "float16", "bfloat16"]))
def test_budget_grows_with_size_condition_and_policy(dtype: str) -> None:
    small = budget(dtype, T=4, K=4, V=4, kappa=1.0)
    assert budget(dtype, T=400, K=4, V=4, kappa=1.0) > small
    assert budget(dtype, T=4, K=4, V=4, kappa=100.0) > small
    assert small >= unit_roundoff("float64")
    relaxed = budget(dtype, T=4, K=4, V=4, kappa=1.0, precision=Precision(intermediates="input"), chunks=4)
    assert relaxed > small if dtype in ("float16", "bfloat16") else relaxed == small


def test_compute_float32_budget_is_in_float32_units() -> None:
    """fp64 inputs computed in fp32: LAMBDA sqrt(n) u32 plus one u32 for the cast of the inputs (kappa = 1)."""
    got = budget("float64", T=4, K=4, V=8, kappa=1.0, precision=Precision(compute="float32"))
    assert got == pytest.approx(6.0 * 4.0 * 2.0**-24 + 2.0**-24, rel=1e-15)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_ulp_matches_numpy_spacing(dtype: str) -> None:
    x = np.array([1.0, 3.0, 1e-3, 6e4 if dtype == "float16" else 1e30, 0.0, 2.0**-20])
    want = np.abs(np.spacing(x.astype(dtype))).astype(np.float64)
    np.testing.assert_array_equal(ulp(x, dtype), want)


def test_representable_flags_overflow_and_underflow() -> None:
    assert representable(np.array([1.0, 2.0]), "float16")
    assert not representable(np.array([1.0, 7e4]), "float16")  # overflows to inf
    assert not representable(np.array([1e-7, 3e-7]), "float16")  # subnormal: about 2 significant bits
    assert representable(np.array([1e-7, 3e-7]), "float32")


def test_normwise_error_zero_reference() -> None:
    assert normwise_error(np.zeros(3), np.zeros(3)) == 0.0
    assert normwise_error(np.ones(3) * 1e-30, np.zeros(3)) == math.inf
    assert normwise_error(np.array([np.nan]), np.array([1.0])) == math.inf


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


@pytest.mark.parametrize(("make", "match"), [
    (lambda: Problem("linear_attn", B=1, T=3, H=1, K=2, V=2, values="cancel"), "values must be one of random"),
    (lambda: Problem("delta_rule", B=1, T=3, H=1, K=2, V=2, beta_regime="half"), "beta_regime must be one of"),
    (lambda: Capabilities(kernels=("cubic",)), "kernels must be a non-empty subset"),
    (lambda: Capabilities(chunk_sizes=(0, 16)), "chunk_sizes must be positive integers"),
    (lambda: Precision(compute="float16"), "compute must be None or one of float64, float32"),
    (lambda: Precision(intermediates="output"), "intermediates must be one of compute, input"),
])
def test_invalid_declarations_name_the_argument(make: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_broken_kernels_module_still_targets_impl() -> None:
    """The monkeypatching kernels of tests/broken_kernels.py patch names impl must still have."""
    assert callable(broken_kernels.torch_deltaformer._strict_mask)
