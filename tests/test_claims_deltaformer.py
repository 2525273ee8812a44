"""Checks C6, C7, C12 pass in the default profile, and each fails when the identity it checks is broken."""

from __future__ import annotations

import mpmath
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


def test_c6_fails_when_one_form_is_off_by_one_part_in_ten_to_the_45(monkeypatch: pytest.MonkeyPatch) -> None:
    """The enclosures are ~1e-48 wide, so a discrepancy far below the old 10 T^2 cond 10^-dps allowance (~1e-44 at
    T = 16) is certified: the perturbed form's enclosure is disjoint from the recurrence's."""
    original = df.deltaformer_u_neumann

    def slightly_off(P: np.ndarray, v: np.ndarray, beta: np.ndarray) -> np.ndarray:
        return original(P, v, beta) * (1 + mpmath.mpf(10) ** -45)

    monkeypatch.setattr(checks.df, "deltaformer_u_neumann", slightly_off)
    outcome = checks.CHECKS[0].run(DEFAULT)
    assert not outcome.passed and "0 certified different" not in outcome.detail, outcome
