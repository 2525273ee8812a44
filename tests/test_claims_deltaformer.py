"""Checks C6, C7, C12 pass in the default profile, and each fails when the identity it checks is broken."""

from __future__ import annotations

import numpy as np
import pytest

from proofs_checks.claims import deltaformer_identities as checks
from proofs_checks.claims.declaration import DEFAULT
from spec import deltaformer as df


@pytest.mark.parametrize("check", checks.CHECKS, ids=lambda c: c.id)
def test_check_passes_in_the_default_profile(check: object) -> None:
    assert isinstance(check, checks.Check)
    outcome = check.run(DEFAULT)
    assert outcome.passed, outcome


def test_c6_fails_when_the_chunked_form_drops_beta_on_earlier_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    original = df.deltaformer_u_chunked

    def broken_chunked(P: np.ndarray, v: np.ndarray, beta: np.ndarray, chunk_size: int) -> np.ndarray:
        return original(P, v, beta * 0 + 1, chunk_size)

    monkeypatch.setattr(checks.df, "deltaformer_u_chunked", broken_chunked)
    assert not checks.CHECKS[0].run(DEFAULT).passed


def test_c7_fails_when_one_squaring_factor_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    def one_factor_short(P: np.ndarray, v: np.ndarray, beta: np.ndarray) -> np.ndarray:
        A = beta[:, None] * P
        return (np.eye(len(beta), dtype=object) - A) @ v  # only (I - A): exact only when A^2 = 0

    monkeypatch.setattr(checks.df, "deltaformer_u_inverse_by_squaring", one_factor_short)
    assert not checks.CHECKS[1].run(DEFAULT).passed


def test_c12_fails_when_the_claimed_bound_is_too_tight(monkeypatch: pytest.MonkeyPatch) -> None:
    # beta^t growth replaced by linear growth: the previous-token construction must then exceed it
    monkeypatch.setattr(checks, "_u_growth_bound", lambda t, beta: float(t + 1))
    assert not checks.CHECKS[2].run(DEFAULT).passed
