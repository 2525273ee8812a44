"""The claim-8 checks pass, and each fails when the property it certifies is broken (claims.swap_tracking)."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest

from proofs_checks.claims import swap_tracking as checks
from proofs_checks.claims.declaration import DEFAULT
from spec import swap_tracking as sw

BY_ID = {check.id: check for check in checks.CHECKS}


@pytest.mark.parametrize("check_id", ["C8", "C8b", "C8c", "C8d"])
def test_the_check_passes(check_id: str) -> None:
    outcome = BY_ID[check_id].run(DEFAULT)
    assert outcome.passed, outcome


def test_the_exactness_check_fails_with_the_linear_kernel_in_place_of_round(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sw, "round_tracker_u", functools.partial(sw.round_tracker_u, kernel="linear"))
    monkeypatch.setattr(sw, "round_tracker_read", functools.partial(sw.round_tracker_read, kernel="linear"))
    outcome = BY_ID["C8"].run(DEFAULT)
    assert not outcome.passed and outcome.measured > 0


def test_the_deltanet_check_fails_if_deltanet_tracked_perfectly(monkeypatch: pytest.MonkeyPatch) -> None:
    def oracle(codes: Any, swaps: Any, values: Any = None, **_: Any) -> Any:
        n = codes.shape[0]
        return np.eye(n)[sw.swap_permutations(n, swaps)[-1]]

    monkeypatch.setattr(sw, "deltanet_swap_tracker", oracle)
    outcome = BY_ID["C8b"].run(DEFAULT)
    assert not outcome.passed and outcome.measured == 1.0


def test_the_coherence_check_fails_with_the_unscaled_round_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    # s = 1 at d_k = 64: the worst product sits exactly on a rounding boundary (1/2), which is not < 1/2.
    monkeypatch.setattr(sw, "round_scale", lambda mu: 1.0)
    outcome = BY_ID["C8c"].run(DEFAULT)
    assert not outcome.passed and outcome.measured == 0.5


def test_the_softmax_read_check_fails_when_the_write_vectors_are_the_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    # w = k (the paper's k-k write) turns the cross-box tokens into self-updates: the boxes are never exchanged.
    tokens = sw.softmax_tracker_tokens

    def keys_as_write_vectors(codes: Any, swaps: Any, values: Any = None) -> Any:
        _, K, V = tokens(codes, swaps, values)
        return K, K, V

    monkeypatch.setattr(sw, "softmax_tracker_tokens", keys_as_write_vectors)
    outcome = BY_ID["C8d"].run(DEFAULT)
    assert not outcome.passed and outcome.measured > 0


def test_the_figure_renders(tmp_path: Any) -> None:
    (figure,) = checks.FIGURES
    path = tmp_path / figure.filename
    figure.render(DEFAULT, path)
    assert path.stat().st_size > 10_000
