"""impl.distributed.delta_rule on 1-4 spawned gloo ranks vs the single-process impl: outputs, the final state (on
the last rank) and the gradients of q, k, v, beta and the initial state (read on the first rank).

Error model for the 1e-9 bound: as tests/test_distributed_deltaformer.py (float64 on both sides, different
association only; the carry adds one [K, K] x [K, V] product per shard boundary).
"""

from __future__ import annotations

import pytest

from tests._distributed_support import SHARDS, assemble, delta_rule_cases, group_results, reference, relative_error

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
    for case in delta_rule_cases(world):
        expected = reference(case, SHARDS[world])
        for key, want in expected.items():
            got = assemble(results, case.name, key)
            assert got is not None, f"{case.name}: {key} missing"
            errors[f"{case.name} {key}"] = relative_error(got, want)
    assert any("grad_initial_state" in name for name in errors)
    failing = {name: error for name, error in errors.items() if not error < TOLERANCE}
    assert not failing, failing
