"""proofs_checks.claims.snr: every check passes as shipped, and fails when a closed form is perturbed.

The perturbations are the mistakes a reader could make: N for N - 1, a 10% constant, a wrong exponent. Each is
injected into the spec module the check calls (monkeypatch), the check is rerun, and it must fail. The profile
uses 30 digits instead of 50 (quadrature is the slow part; the bound scales with dps, 10^(10 - dps)).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from proofs_checks.claims import snr as snr_checks
from proofs_checks.claims.declaration import DEFAULT, Outcome, Profile
from spec import snr

PROFILE = Profile(name="test", dps=30, samples=1, seed=DEFAULT.seed)
CHECKS = {check.id: check for check in snr_checks.CHECKS}


def test_checks_are_in_claim_order_and_name_existing_spec_functions() -> None:
    import importlib

    assert [c.id for c in snr_checks.CHECKS] == ["C1", "C1b", "C2", "C2b", "C3", "C4"]
    for check in snr_checks.CHECKS:
        for dotted in check.spec_functions:
            module, _, name = dotted.rpartition(".")
            assert callable(getattr(importlib.import_module(module), name)), dotted
    assert [f.filename for f in snr_checks.FIGURES] == ["snr_vs_n.png", "required_dk_vs_n.png"]


@pytest.mark.parametrize("check_id", list(CHECKS))
def test_check_passes(check_id: str) -> None:
    outcome = CHECKS[check_id].run(PROFILE)
    assert outcome.passed, outcome.detail
    assert outcome.measured <= outcome.bound


def _scaled(fn: Callable[..., Any], factor: float) -> Callable[..., Any]:
    return lambda *args, **kwargs: fn(*args, **kwargs) * factor


def _n_for_n_minus_1(fn: Callable[..., Any]) -> Callable[..., Any]:
    # (N - 1) f -> N f: the paper's approximate count of noise terms, wrong for the exact forms.
    return lambda N, *args: fn(N, *args) * N / (N - 1)


PERTURBATIONS: dict[str, tuple[str, str, Callable[[Callable[..., Any]], Callable[..., Any]]]] = {
    "C1 N for N-1 in the conditional form": ("C1", "snr_inv_linear_conditional", _n_for_n_minus_1),
    "C1 ratio form without d_v/(d_v-2)": ("C1", "snr_inv_linear_unconditional_ratio",
                                          lambda fn: lambda N, d_k, d_v: snr.snr_inv_linear_unconditional(N, d_k)),
    "C1b paper scaling 10% high": ("C1b", "snr_inv_linear_scaling", lambda fn: _scaled(fn, 1.1)),
    "C2 ReLU^p conditional 10% high": ("C2", "snr_inv_relu_power_conditional", lambda fn: _scaled(fn, 1.1)),
    "C2 ReLU^p averaged with (d_k - 2)^-p": ("C2", "snr_inv_relu_power_unconditional",
                                             lambda fn: lambda N, d_k, p: (N - 1) * fn(2, d_k, 1) ** p * 2 ** (p - 1)
                                             * snr._double_factorial_odd(p)),
    "C2b ReLU^p scaling with d_k^(p+0.1)": ("C2b", "snr_inv_relu_power_scaling",
                                           lambda fn: lambda N, d_k, p: fn(N, d_k, p) / d_k**0.1),
    "C3 exp conditional N for N-1": ("C3", "snr_inv_exp_conditional", _n_for_n_minus_1),
    "C3 exp averaged 10% high": ("C3", "snr_inv_exp_unconditional", lambda fn: _scaled(fn, 1.1)),
    "C4 exp required d_k 10% high": ("C4", "required_dk_exp_sqrt_exact", lambda fn: _scaled(fn, 1.1)),
    "C4 linear required d_k growing like N^1.05": ("C4", "required_dk_linear_exact",
                                                   lambda fn: lambda N, eps: fn(N, eps) * N**0.05),
}


@pytest.mark.parametrize("name", list(PERTURBATIONS))
def test_check_fails_when_a_closed_form_is_wrong(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    check_id, function, perturb = PERTURBATIONS[name]
    monkeypatch.setattr(snr, function, perturb(getattr(snr, function)))
    outcome: Outcome = CHECKS[check_id].run(PROFILE)
    assert not outcome.passed, f"{name}: {outcome.detail}"
