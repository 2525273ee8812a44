"""proofs_checks.claims.update_rules: every check passes on the spec, and fails when the spec is broken on purpose
(a wrong step size, a perturbed rule, a wrong limit), so each check can fail."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from proofs_checks.claims import update_rules
from proofs_checks.claims.declaration import DEFAULT, Check
from spec import precision
from spec import updates as upd
from spec._types import Array


def _check(check_id: str) -> Check:
    return next(c for c in update_rules.CHECKS if c.id == check_id)


def test_checks_are_declared_in_claim_order_with_the_update_rule_ids() -> None:
    assert [c.id for c in update_rules.CHECKS] == ["C5", "C9", "C9b", "C10", "C10b", "C11"]
    for check in update_rules.CHECKS:
        for name in check.spec_functions:
            module, _, function = name.rpartition(".")
            assert module == "spec.updates" and function in upd.__all__, name


@pytest.mark.parametrize("check_id", ["C5", "C9", "C9b", "C10", "C10b", "C11"])
def test_check_passes_on_the_spec(check_id: str) -> None:
    outcome = _check(check_id).run(DEFAULT)
    assert outcome.passed, outcome


@pytest.fixture
def few_contexts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The C10 broken variants and the figure: 128 contexts instead of 1024 (slope noise ~0.02, still far from
    the broken slopes)."""
    monkeypatch.setattr(update_rules, "_SEEDS", 128)


@pytest.fixture
def small_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The broken variants only need one small problem per rule (keeps the suite fast)."""
    monkeypatch.setattr(update_rules, "_SIZES", ((5, 3, 2),))


def test_c5_fails_when_the_state_form_step_is_off_by_one_part_in_a_million(monkeypatch: pytest.MonkeyPatch,
                                                                         small_sizes: None) -> None:
    original = upd.kernel_deltanet_step
    monkeypatch.setattr(upd, "kernel_deltanet_step",
                        lambda S, phi_k, v, beta: original(S, phi_k, v, beta * (1 + 1e-6)))
    assert not _check("C5").run(DEFAULT).passed


def test_c5_fails_when_the_u_form_puts_beta_on_the_sum_only(monkeypatch: pytest.MonkeyPatch,
                                                           small_sizes: None) -> None:
    """DeltaFormer's convention u_t = v_t - beta_t sum(...) is not DeltaNet's u-form unless beta = 1."""

    def wrong_u_form(q: Array, k: Array, v: Array, beta: Array, kernel: Any) -> tuple[Array, Array]:
        U = precision.zeros(v.shape, v)
        o = precision.zeros(v.shape, v)
        for t in range(q.shape[0]):
            U[t] = v[t] - beta[t] * (kernel(k[t:t + 1], k[:t])[0] @ U[:t])
            o[t] = kernel(q[t:t + 1], k[:t + 1])[0] @ U[:t + 1]
        return o, U

    monkeypatch.setattr(upd, "kernel_deltanet_u_form", wrong_u_form)
    assert not _check("C5").run(DEFAULT).passed


def test_c9_fails_with_step_size_one_over_t_plus_one(monkeypatch: pytest.MonkeyPatch, small_sizes: None) -> None:
    """With step 1/(t+1) the outputs are still softmax (uniform coefficients) but Sbar_t = S_t/(t+1) != S_t/t."""

    def step(K: Array, V: Array, c: Array, k: Array, v: Array) -> tuple[Array, Array, Array]:
        t = c.shape[0] + 1
        eta = (precision.zeros((1,), k)[0] + 1) / (t + 1)
        return (np.concatenate([K, k[None]]), np.concatenate([V, v[None]]),
                np.concatenate([(1 - eta) * c, np.array([eta], dtype=c.dtype)]))

    monkeypatch.setattr(upd, "softmax_sgd_step", step)
    assert not _check("C9").run(DEFAULT).passed


def test_c9_fails_when_the_memory_is_s_t_instead_of_s_t_over_t(monkeypatch: pytest.MonkeyPatch,
                                                                small_sizes: None) -> None:
    """Coefficients all 1 (plain accumulation, Sbar_t = S_t): the normalised outputs are still softmax attention,
    so only the comparison of the memory itself (Sbar_t phi(q) against S_t phi(q) / t) can catch it."""

    def step(K: Array, V: Array, c: Array, k: Array, v: Array) -> tuple[Array, Array, Array]:
        one = precision.zeros((1,), k)[0] + 1
        return np.concatenate([K, k[None]]), np.concatenate([V, v[None]]), np.concatenate([c, np.array([one])])

    monkeypatch.setattr(upd, "softmax_sgd_step", step)
    outcome = _check("C9").run(DEFAULT)
    assert not outcome.passed, outcome


def test_c9_fails_with_step_size_two_over_t(monkeypatch: pytest.MonkeyPatch, small_sizes: None) -> None:
    """Step 2/t weights recent tokens more: the outputs are no longer softmax attention."""

    def step(K: Array, V: Array, c: Array, k: Array, v: Array) -> tuple[Array, Array, Array]:
        t = c.shape[0] + 1
        eta = 2 * (precision.zeros((1,), k)[0] + 1) / (t + 1)
        return (np.concatenate([K, k[None]]), np.concatenate([V, v[None]]),
                np.concatenate([(1 - eta) * c, np.array([eta], dtype=c.dtype)]))

    monkeypatch.setattr(upd, "softmax_sgd_step", step)
    assert not _check("C9").run(DEFAULT).passed


def test_c9b_fails_when_the_step_decays_like_one_over_sqrt_t(monkeypatch: pytest.MonkeyPatch) -> None:
    """Step 1/sqrt(t): the newest weight is Theta(t^-1/2), so t w_t grows past e^2."""

    def step(K: Array, V: Array, c: Array, k: Array, v: Array) -> tuple[Array, Array, Array]:
        eta = 1 / np.sqrt(c.shape[0] + 1)
        return (np.concatenate([K, k[None]]), np.concatenate([V, v[None]]),
                np.concatenate([(1 - eta) * c, np.array([eta])]))

    monkeypatch.setattr(upd, "softmax_sgd_step", step)
    assert not _check("C9b").run(DEFAULT).passed


def test_c9b_fails_when_the_claimed_bound_is_e_instead_of_e_squared(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upd, "softmax_newest_weight_bounds", lambda R_k, R_q, tau: (np.exp(-R_k * R_q / tau),
                                                                                   np.exp(R_k * R_q / tau)))
    assert not _check("C9b").run(DEFAULT).passed


def test_c10_fails_when_the_limit_is_ten_percent_off(monkeypatch: pytest.MonkeyPatch, few_contexts: None) -> None:
    """An error floor flattens the log-log slope towards 0."""
    original = upd.softmax_infinite_context_limit
    monkeypatch.setattr(upd, "softmax_infinite_context_limit", lambda *a, **kw: 1.1 * original(*a, **kw))
    outcome = _check("C10").run(DEFAULT)
    assert not outcome.passed, outcome
    assert "128 i.i.d." in outcome.detail


def test_c10_fails_when_the_limit_uses_q_instead_of_q_over_tau(monkeypatch: pytest.MonkeyPatch,
                                                                few_contexts: None) -> None:
    original = upd.softmax_infinite_context_limit
    monkeypatch.setattr(upd, "softmax_infinite_context_limit",
                        lambda q, A, *a, tau, **kw: original(q, A, *a, tau=1.0, **kw))
    outcome = _check("C10").run(DEFAULT)
    assert not outcome.passed, outcome


def test_c10b_fails_when_the_constant_misses_its_exponential_factor(monkeypatch: pytest.MonkeyPatch,
                                                                     few_contexts: None) -> None:
    """Without exp(q^T Sigma q / tau^2) (= e here) the predicted constant is e times too small."""
    original = upd.softmax_convergence_constant
    monkeypatch.setattr(upd, "softmax_convergence_constant", lambda *a, **kw: original(*a, **kw) / np.e)
    outcome = _check("C10b").run(DEFAULT)
    assert not outcome.passed, outcome


PERTURBED_STEPS: dict[str, Any] = {
    "linear_attention_step": lambda original: lambda S, k, v: original(S, k, v * (1 + 1e-9)),
    "gated_linear_attention_step": lambda original: lambda S, k, v, a: original(S, k, v, a * (1 + 1e-9)),
    "deltanet_step": lambda original: lambda S, k, v, beta: original(S, k, v, beta * (1 + 1e-9)),
    "gated_deltanet_step": lambda original: lambda S, k, v, a, beta: original(S, k, v, a, beta * (1 + 1e-9)),
    "longhorn_step": lambda original: lambda S, k, v, beta: original(S, k, v, beta * (1 + 1e-9)),
    "normalised_kernel_memory_step": lambda original: lambda S, z, phi, v: original(S, z, phi * (1 + 1e-9), v),
    "softmax_memory_read": lambda original: lambda K, V, q, tau: original(K, V, q, tau * (1 + 1e-9)),
}


@pytest.mark.parametrize("name", list(PERTURBED_STEPS))
def test_c11_fails_when_any_one_rules_step_is_perturbed_by_one_part_in_a_billion(
        name: str, monkeypatch: pytest.MonkeyPatch, small_sizes: None) -> None:
    monkeypatch.setattr(upd, name, PERTURBED_STEPS[name](getattr(upd, name)))
    outcome = _check("C11").run(DEFAULT)
    assert not outcome.passed, outcome


def test_c11_fails_when_the_chunked_form_ignores_the_initial_state(monkeypatch: pytest.MonkeyPatch,
                                                                  small_sizes: None) -> None:
    original = upd.deltanet_chunked
    monkeypatch.setattr(upd, "deltanet_chunked", lambda q, k, v, beta, S0, *, chunk_size:
                        original(q, k, v, beta, S0 * 0, chunk_size=chunk_size) if chunk_size < q.shape[0]
                        else original(q, k, v, beta, S0, chunk_size=chunk_size))
    assert not _check("C11").run(DEFAULT).passed


def test_convergence_figure_renders(tmp_path: Any, few_contexts: None) -> None:
    figure = update_rules.FIGURES[0]
    assert figure.filename == "softmax_convergence.png"
    path = tmp_path / figure.filename
    figure.render(DEFAULT, path)
    assert path.stat().st_size > 10_000
