"""impl.distributed.delta_rule on 1-4 spawned gloo ranks vs the single-process impl: outputs, the final state (on
the last rank) and the gradients of q, k, v, beta and the initial state (read on the first rank).

Error model for the 1e-9 bound: as tests/test_distributed_deltaformer.py (float64 on both sides, different
association only; the carry adds one [K, K] x [K, V] product per shard boundary).
"""

from __future__ import annotations

import pytest

from tests._distributed_support import (
    SHARDS,
    assemble,
    delta_rule_cases,
    float32_errors,
    group_results,
    reference,
    relative_error,
)

TOLERANCE = 1e-9


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_outputs_final_state_and_gradients_match_the_single_process_impl(world: int) -> None:
    """Catches a wrong transition (A_r) or carry order, a state gradient not passed back, and the identity block of
    the combined pass leaking into the output."""
    results = group_results(world)
    for rank, result in enumerate(results):
        for case in delta_rule_cases(world):
            assert (result[case.name]["final_state"] is not None) == (rank == world - 1)
    errors = {}
    for case in (c for c in delta_rule_cases(world) if c.dtype == "float64"):
        expected = reference(case, SHARDS[world])
        for key, want in expected.items():
            got = assemble(results, case.name, key)
            assert got is not None, f"{case.name}: {key} missing"
            errors[f"{case.name} {key}"] = relative_error(got, want)
    assert any("grad_initial_state" in name for name in errors)
    failing = {name: error for name, error in errors.items() if not error < TOLERANCE}
    assert not failing, failing


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_float32_matches_the_single_process_impl_within_the_harness_error_model(world: int) -> None:
    """float32 with an initial state: output, final state and every gradient within twice the harness's budget of
    the single-process impl (``float32_errors``)."""
    results = group_results(world)
    checked = {}
    for case in (c for c in delta_rule_cases(world) if c.dtype == "float32"):
        for key, pair in float32_errors(results, case, SHARDS[world]).items():
            checked[f"{case.name} {key}"] = pair
    assert {"o", "final_state", "grad_initial_state"} <= {name.split()[-1] for name in checked}
    failing = {name: pair for name, pair in checked.items() if not pair[0] <= pair[1]}
    assert not failing, failing
