"""``--certified``: the harness's float64 reference error is bounded by the interval oracle, for every op."""

from __future__ import annotations

from typing import Any

import pytest

from proofs_checks.differential import certified
from proofs_checks.differential.__main__ import main
from proofs_checks.differential.strategies import Problem

# Each problem has a default scale (an irrational 1/sqrt(K), so the float64 reference is genuinely rounded), a
# non-trivial write kernel or initial state, and two sequences or heads.
PROBLEMS = [
    Problem(op="deltaformer_u", B=1, T=6, H=2, K=4, V=3, kernel="softmax", beta_regime="two", seed=1),
    Problem(op="deltaformer_attn", B=1, T=7, H=1, K=4, V=2, kernel="exp", write="q", cu_seqlens=(0, 3, 7), seed=2),
    Problem(op="deltaformer_attn", B=1, T=5, H=1, K=5, V=2, kernel="round", scale=2 / 11, seed=3),
    Problem(op="softmax_attn", B=2, T=5, H=1, K=3, V=2, seed=4),
    Problem(op="delta_rule", B=1, T=6, H=2, K=3, V=2, with_state=True, seed=5),
    Problem(op="linear_attn", B=1, T=6, H=1, K=4, V=3, with_state=True, seed=6),
]

# float64 reference error model: T-step recurrences of backward-stable steps, normwise; 1e-13 is ~450 unit
# roundoffs, far above what these sizes produce (~1e-16) and far below any formula or scale mistake (~1e-2).
REFERENCE_ERROR_CEILING = 1e-13


@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: f"{p.op}-{p.kernel}")
def test_certified_radius_is_tiny_and_the_float64_reference_is_within_roundoff(problem: Problem) -> None:
    results = certified.certify(problem)
    names = {r.output for r in results}
    assert names == ({"o", "final_state"} if problem.op in ("delta_rule", "linear_attn") else {"o"})
    for r in results:
        assert r.radius < 1e-25, r
        assert 0 <= r.reference_error < REFERENCE_ERROR_CEILING, r


def test_the_bound_sees_an_error_in_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reference off by 1e-9 relative must be certified as at least that far from the exact result."""
    original = certified.run_spec

    def off(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return {name: x * (1 + 1e-9) for name, x in original(*args, **kwargs).items()}

    monkeypatch.setattr(certified, "run_spec", off)
    (result,) = certified.certify(PROBLEMS[0])
    assert 0.9e-9 <= result.reference_error <= 1.1e-9


def test_cli_prints_the_certified_reference(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["impl:softmax_attn", "--op", "softmax_attn", "--examples", "2", "--no-grads", "--max-t", "6",
                 "--long-t", "8", "--certified"])
    out = capsys.readouterr().out
    assert code == 0
    assert "certified reference" in out and "float64 reference error <= " in out and "of the kernel's budget" in out
