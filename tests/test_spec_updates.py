"""spec.updates (UPD.*): every update rule's recurrent form against its parallel and chunked forms, state carrying,
exact recall, the kernelised DeltaNet identity, DeltaFormer's linear kernel against DeltaNet, softmax as SGD.

Float64 tolerances follow the error model in tests/updates_problems.py; mpmath comparisons use 60 digits and a
bound of 1e-40 (20 digits of margin for T <= 9: the error is at most ~10 T^2 cond 10^-60).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mpmath
import numpy as np
import pytest
from hypothesis import example, given, target
from hypothesis import strategies as st

from spec import deltaformer, kernels, precision
from spec import updates as upd
from spec._types import Array
from tests.updates_problems import UNIT_ROUNDOFF, UpdateProblem, update_problems

Forms = Callable[[UpdateProblem, Any], tuple[Array, Any]]


def _system_cond(k: Array, beta: Array, a: Array | None, chunk: int | None) -> float:
    """cond_inf of I + diag(beta)(tril(K K^T, -1) ⊙ Γ), over the whole sequence and over each chunk."""
    T = k.shape[0]
    gram = np.tril(k @ k.T, -1)
    if a is not None:
        b = np.cumsum(np.log(a))
        gram = gram * np.tril(np.exp(np.tril(b[:, None] - b[None, :])))
    M = np.eye(T) + beta[:, None] * gram
    conds = [np.linalg.cond(M, np.inf)]
    if chunk is not None:
        conds += [np.linalg.cond(M[s:s + chunk, s:s + chunk], np.inf) for s in range(0, T, chunk)]
    return float(max(conds))


def _longhorn_e(p: UpdateProblem) -> Array:
    return p.beta / (1 + p.beta * (p.k * p.k).sum(axis=1))


# Each rule: name -> (recurrent, parallel, chunked or None, beta used by the recurrence, gates for the cond).
RULES: dict[str, tuple[Forms, Forms, Forms | None]] = {
    "linear": (lambda p, S0: upd.linear_attention_recurrent(p.q, p.k, p.v, S0),
               lambda p, S0: upd.linear_attention_parallel(p.q, p.k, p.v, S0), None),
    "gated_linear": (lambda p, S0: upd.gated_linear_attention_recurrent(p.q, p.k, p.v, p.a, S0),
                     lambda p, S0: upd.gated_linear_attention_parallel(p.q, p.k, p.v, p.a, S0), None),
    "deltanet": (lambda p, S0: upd.deltanet_recurrent(p.q, p.k, p.v, p.beta, S0),
                 lambda p, S0: upd.deltanet_parallel(p.q, p.k, p.v, p.beta, S0),
                 lambda p, S0: upd.deltanet_chunked(p.q, p.k, p.v, p.beta, S0, chunk_size=p.chunk)),
    "gated_deltanet": (lambda p, S0: upd.gated_deltanet_recurrent(p.q, p.k, p.v, p.a, p.beta, S0),
                       lambda p, S0: upd.gated_deltanet_parallel(p.q, p.k, p.v, p.a, p.beta, S0),
                       lambda p, S0: upd.gated_deltanet_chunked(p.q, p.k, p.v, p.a, p.beta, S0, chunk_size=p.chunk)),
    "longhorn": (lambda p, S0: upd.longhorn_recurrent(p.q, p.k, p.v, np.abs(p.beta), S0),
                 lambda p, S0: upd.longhorn_parallel(p.q, p.k, p.v, np.abs(p.beta), S0),
                 lambda p, S0: upd.longhorn_chunked(p.q, p.k, p.v, np.abs(p.beta), S0, chunk_size=p.chunk)),
}


def _strength_and_gates(rule: str, p: UpdateProblem) -> tuple[Array, Array | None]:
    """The beta the recurrence applies (zero for rules without one) and the gates (None if ungated)."""
    if rule in ("linear", "gated_linear"):
        return np.zeros(p.T), p.a if rule == "gated_linear" else None
    if rule == "longhorn":
        return np.abs(p.beta) / (1 + np.abs(p.beta) * (p.k * p.k).sum(axis=1)), None
    return p.beta, p.a if rule == "gated_deltanet" else None


def _gap_ratio(rule: str, p: UpdateProblem, reference: tuple[Array, Array], other: tuple[Array, Array],
               chunk: int | None) -> float:
    beta, gates = _strength_and_gates(rule, p)
    cond = _system_cond(p.k, beta, gates, chunk) if rule not in ("linear", "gated_linear") else 1.0
    q_size = max(1.0, float(np.abs(p.q).sum(axis=1).max()))
    scale = max(float(np.abs(reference[0]).max()), q_size * max(float(np.abs(reference[1]).max()),
                                                                float(np.abs(p.S0).max())))
    error = max(float(np.abs(reference[0] - other[0]).max()), float(np.abs(reference[1] - other[1]).max()))
    return error / p.budget(scale, cond=cond, beta=beta)


@pytest.mark.parametrize("rule", list(RULES))
@given(p=update_problems())
@example(p=UpdateProblem.sample(1, 2, 2, 4, "(0,1]", 0))
@example(p=UpdateProblem.sample(13, 3, 2, 5, "(0,2)", 1))
def test_each_rules_parallel_form_equals_its_recurrent_form_within_the_error_model(rule: str, p: UpdateProblem
                                                                                   ) -> None:
    recurrent, parallel, _ = RULES[rule]
    ratio = _gap_ratio(rule, p, recurrent(p, p.S0), parallel(p, p.S0), None)
    target(ratio, label=f"{rule} parallel error/budget")
    assert ratio <= 1.0, f"{rule}: parallel vs recurrent error is {ratio:.2f} x budget\n{p.repro()}"


@pytest.mark.parametrize("rule", ["deltanet", "gated_deltanet", "longhorn"])
@given(p=update_problems())
@example(p=UpdateProblem.sample(7, 3, 2, 3, "unconstrained", 2))  # chunk does not divide T
@example(p=UpdateProblem.sample(5, 2, 3, 64, "(0,2)", 3))  # chunk > T
def test_each_rules_chunked_form_equals_its_recurrent_form_for_any_chunk_size(rule: str, p: UpdateProblem) -> None:
    recurrent, _, chunked = RULES[rule]
    assert chunked is not None
    ratio = _gap_ratio(rule, p, recurrent(p, p.S0), chunked(p, p.S0), p.chunk)
    target(ratio, label=f"{rule} chunked error/budget")
    assert ratio <= 1.0, f"{rule}: chunked vs recurrent error is {ratio:.2f} x budget\n{p.repro()}"


@pytest.mark.parametrize("rule", list(RULES))
@given(p=update_problems(max_t=30), split=st.integers(1, 29))
def test_splitting_a_sequence_and_carrying_the_state_equals_one_pass(rule: str, p: UpdateProblem, split: int
                                                                     ) -> None:
    """Catches a form that ignores or mis-scales its initial state (both the recurrent and the parallel form)."""
    if split >= p.T:
        split = max(1, p.T - 1)
    first = _prefix(p, 0, split)
    second = _prefix(p, split, p.T)
    for form_index in (0, 1):
        form = RULES[rule][form_index]
        o_all, S_all = form(p, p.S0)
        if p.T == 1:
            continue
        o_1, S_1 = form(first, p.S0)
        o_2, S_2 = form(second, S_1)
        joined = (np.concatenate([o_1, o_2]), S_2)
        ratio = _gap_ratio(rule, p, (o_all, S_all), joined, None)
        assert ratio <= 1.0, f"{rule} form {form_index}: split at {split} differs, {ratio:.2f} x budget\n{p.repro()}"


def _prefix(p: UpdateProblem, start: int, stop: int) -> UpdateProblem:
    return UpdateProblem(stop - start, p.d_k, p.d_v, p.chunk, p.beta_regime, p.seed, p.q[start:stop],
                         p.k[start:stop], p.v[start:stop], p.a[start:stop], p.beta[start:stop], p.S0)


@given(p=update_problems(max_t=25), split=st.integers(1, 24), tau=st.floats(0.5, 4.0))
def test_softmax_attention_split_with_its_cache_carried_equals_one_pass(p: UpdateProblem, split: int, tau: float
                                                                        ) -> None:
    split = min(split, max(1, p.T - 1))
    o_all, cache_all = upd.softmax_attention_parallel(p.q, p.k, p.v, tau)
    if p.T == 1:
        return
    o_1, cache = upd.softmax_attention_recurrent(p.q[:split], p.k[:split], p.v[:split], tau)
    o_2, cache_2 = upd.softmax_attention_parallel(p.q[split:], p.k[split:], p.v[split:], tau, cache)
    # softmax rows: a convex combination of values, O(T) roundings of numbers of size max|v|
    budget = 16 * p.T * UNIT_ROUNDOFF * float(np.abs(p.v).max())
    assert np.abs(np.concatenate([o_1, o_2]) - o_all).max() <= budget, p.repro()
    assert np.array_equal(cache_2[0], cache_all[0]) and np.array_equal(cache_2[1], cache_all[1])


@given(p=update_problems(max_t=25), tau=st.floats(0.3, 4.0))
def test_softmax_attention_recurrent_equals_deltaformers_causal_softmax(p: UpdateProblem, tau: float) -> None:
    """UPD.7b against DF.7 (the lead's independent causal softmax); and UPD.7c against both."""
    reference = deltaformer.causal_softmax(p.q @ p.k.T / tau, strict=False) @ p.v
    budget = 16 * p.T * UNIT_ROUNDOFF * float(np.abs(p.v).max())
    assert np.abs(upd.softmax_attention_recurrent(p.q, p.k, p.v, tau)[0] - reference).max() <= budget, p.repro()
    assert np.abs(upd.softmax_attention_parallel(p.q, p.k, p.v, tau)[0] - reference).max() <= budget, p.repro()


@given(p=update_problems(max_t=25), tau=st.floats(0.3, 4.0))
def test_softmax_attention_run_as_sgd_with_step_one_over_t_gives_the_same_outputs(p: UpdateProblem, tau: float
                                                                                  ) -> None:
    """UPD.8c: every coefficient is 1/t (Sbar_t = S_t / t) and o_t is causal softmax attention (DF.7)."""
    o, (_, _, c) = upd.softmax_sgd_recurrent(p.q, p.k, p.v, tau)
    reference = deltaformer.causal_softmax(p.q @ p.k.T / tau, strict=False) @ p.v
    # c_T = prod of T factors (1 - 1/t), each rounded once: relative error <= 2 T u
    assert np.abs(c * p.T - 1).max() <= 2 * p.T * UNIT_ROUNDOFF * 4, p.repro()
    assert np.abs(o - reference).max() <= 16 * p.T * UNIT_ROUNDOFF * float(np.abs(p.v).max()), p.repro()


def test_sgd_step_scales_the_old_memory_by_one_minus_one_over_t_and_writes_with_one_over_t() -> None:
    K, V, c = np.zeros((0, 2)), np.zeros((0, 1)), np.zeros(0)
    for t in range(1, 5):
        K, V, c = upd.softmax_sgd_step(K, V, c, np.array([float(t), 0.0]), np.array([1.0]))
        assert c[-1] == 1 / t
    assert np.allclose(c, 0.25, rtol=0, atol=4 * UNIT_ROUNDOFF)


@given(radius_k=st.floats(0.0, 2.0), radius_q=st.floats(0.0, 2.0), tau=st.floats(0.5, 3.0),
       seed=st.integers(0, 2**32 - 1), T=st.integers(1, 60))
def test_newest_tokens_weight_times_t_lies_within_the_theta_bounds(radius_k: float, radius_q: float, tau: float,
                                                                   seed: int, T: int) -> None:
    """UPD.9: e^{-2 R_k R_q / tau} <= t w_t <= e^{2 R_k R_q / tau}; a bound of e^{R_k R_q / tau} would fail."""
    rng = np.random.default_rng(seed)
    lower, upper = upd.softmax_newest_weight_bounds(radius_k, radius_q, tau)
    k = rng.standard_normal((T, 3))
    k *= radius_k * rng.uniform(0, 1, (T, 1)) / np.maximum(np.linalg.norm(k, axis=1, keepdims=True), 1e-300)
    q = rng.standard_normal(3)
    q *= radius_q / max(float(np.linalg.norm(q)), 1e-300)
    w = upd.softmax_sgd_weights(k, np.full(T, 1.0 / T), q, tau)
    slack = 8 * T * UNIT_ROUNDOFF  # the softmax weight is a ratio of T-term sums
    assert lower * (1 - slack) <= T * w[-1] <= upper * (1 + slack)


def test_newest_weight_bound_is_attained_when_only_the_newest_key_is_aligned() -> None:
    T, tau = 400, 1.0
    q = np.array([1.0, 0.0])
    k = np.concatenate([np.tile(-q, (T - 1, 1)), q[None]])
    w = upd.softmax_sgd_weights(k, np.full(T, 1.0 / T), q, tau)
    expected = T * np.e / ((T - 1) / np.e + np.e)
    assert T * w[-1] == pytest.approx(expected, rel=1e-13)
    assert expected > 0.97 * upd.softmax_newest_weight_bounds(1.0, 1.0, tau)[1]


# ---------------------------------------------------------------------------------------------------------------
# Exact recall, and the rules as special cases of each other.


@given(d_k=st.integers(1, 8), d_v=st.integers(1, 4), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_deltanet_with_beta_one_stores_each_value_exactly_under_orthonormal_keys(d_k: int, d_v: int, seed: int,
                                                                                 data: st.DataObject) -> None:
    """Catches a wrong sign or a missing beta in the erase term: then S k_i != v_i."""
    rng = np.random.default_rng(seed)
    T = data.draw(st.integers(1, d_k))
    keys, _ = np.linalg.qr(rng.standard_normal((d_k, d_k)))
    k = keys[:T]
    v = rng.standard_normal((T, d_v))
    S0 = rng.standard_normal((d_v, d_k))
    _, S = upd.deltanet_recurrent(k, k, v, np.ones(T), S0)
    # each S k_i is a length-d_k dot product after T rank-one updates: error <= 4 (T + d_k) u max|.|
    budget = 4 * (T + d_k) * UNIT_ROUNDOFF * max(1.0, float(np.abs(S0).max()) * d_k, float(np.abs(v).max()))
    assert np.abs(k @ S.T - v).max() <= budget
    # overwriting: writing key 0 again with a new value replaces the old one
    v_new = rng.standard_normal(d_v)
    S = upd.deltanet_step(S, k[0], v_new, 1.0)
    assert np.abs(S @ k[0] - v_new).max() <= 2 * budget


def test_orthonormal_keys_give_exact_recall_in_exact_arithmetic() -> None:
    k = np.eye(3)
    v = np.arange(6.0).reshape(3, 2)
    _, S = upd.deltanet_recurrent(k, k, v, np.ones(3))
    assert np.array_equal(S @ k.T, v.T)


@given(p=update_problems(max_t=20))
def test_gated_rules_with_unit_gates_are_their_ungated_rules(p: UpdateProblem) -> None:
    ones = np.ones(p.T)
    gla = upd.gated_linear_attention_recurrent(p.q, p.k, p.v, ones, p.S0)
    lin = upd.linear_attention_recurrent(p.q, p.k, p.v, p.S0)
    assert np.array_equal(gla[0], lin[0]) and np.array_equal(gla[1], lin[1])
    gdn = upd.gated_deltanet_recurrent(p.q, p.k, p.v, ones, p.beta, p.S0)
    dn = upd.deltanet_recurrent(p.q, p.k, p.v, p.beta, p.S0)
    assert np.array_equal(gdn[0], dn[0]) and np.array_equal(gdn[1], dn[1])


@given(p=update_problems(max_t=20))
def test_longhorn_is_deltanet_with_strength_beta_over_one_plus_beta_key_norm(p: UpdateProblem) -> None:
    beta = np.abs(p.beta)
    e = beta / (1 + beta * (p.k * p.k).sum(axis=1))
    lh = upd.longhorn_recurrent(p.q, p.k, p.v, beta, p.S0)
    dn = upd.deltanet_recurrent(p.q, p.k, p.v, e, p.S0)
    # both are the same recurrence; e is computed in two places with the same operations (rounding-identical
    # up to the order of k^T k), so a few ulps per step
    assert np.abs(lh[0] - dn[0]).max() <= p.budget(float(np.abs(dn[0]).max()) + 1, beta=e)


@given(p=update_problems(max_t=20))
def test_deltanet_step_is_one_sgd_step_on_the_squared_recall_error(p: UpdateProblem) -> None:
    """UPD.3: S (I - beta k k^T) + beta v k^T = S - beta grad_S ||S k - v||^2 / 2, with grad = (S k - v) k^T."""
    k, v, beta = p.k[0], p.v[0], p.beta[0]
    gradient = np.outer(p.S0 @ k - v, k)
    S = upd.deltanet_step(p.S0, k, v, beta)
    size = float(np.abs(p.S0).max() + np.abs(v).max()) * (1 + abs(beta))
    assert np.abs(S - (p.S0 - beta * gradient)).max() <= 8 * p.d_k * UNIT_ROUNDOFF * size


# ---------------------------------------------------------------------------------------------------------------
# Kernelised DeltaNet (claim 5) and DeltaFormer's linear kernel.

KERNEL_CASES: dict[str, tuple[Callable[[Array], Array], Callable[[Array, Array], Array]]] = {
    "linear": (kernels.linear_feature_map, kernels.linear_kernel),
    "polynomial p=2": (lambda X: kernels.polynomial_feature_map(X, 2), lambda X, Y: kernels.polynomial_kernel(X, Y, 2)),
    "polynomial p=3": (lambda X: kernels.polynomial_feature_map(X, 3), lambda X, Y: kernels.polynomial_kernel(X, Y, 3)),
}


@pytest.mark.parametrize("kernel_name", list(KERNEL_CASES))
@given(p=update_problems(max_t=20))
def test_kernelised_deltanet_state_form_equals_its_u_form(kernel_name: str, p: UpdateProblem) -> None:
    """UPD.11a = UPD.12: outputs, and S_T = sum_i u_i phi(k_i)^T. Catches beta outside / inside the sum."""
    phi, kappa = KERNEL_CASES[kernel_name]
    if p.d_k > 4 and kernel_name == "polynomial p=3":
        return  # d_k^3 features: keep the test fast
    o_state, S_T = upd.kernel_deltanet_state_recurrent(phi(p.q), phi(p.k), p.v, p.beta)
    o_u, U = upd.kernel_deltanet_u_form(p.q, p.k, p.v, p.beta, kappa)
    system_cond = np.linalg.cond(np.eye(p.T) + p.beta[:, None] * np.tril(kappa(p.k, p.k), -1), np.inf)
    gram_beta = p.beta * np.diag(kappa(p.k, p.k))  # ||phi(k)||^2 = kappa(k, k)
    amplification = float(np.prod(np.maximum(1.0, np.abs(1 - gram_beta))))
    scale = max(float(np.abs(o_state).max()), float(np.abs(S_T).max()) * float(np.abs(phi(p.q)).sum(axis=1).max()))
    budget = 16 * (p.T + phi(p.k).shape[1]) * UNIT_ROUNDOFF * max(amplification, system_cond) * max(1.0, scale)
    error = max(float(np.abs(o_state - o_u).max()), float(np.abs(S_T - U.T @ phi(p.k)).max()))
    target(error / budget, label="kernel DeltaNet error/budget")
    assert error <= budget, f"{kernel_name}: {error:.3e} > {budget:.3e}\n{p.repro()}"


@given(p=update_problems(max_t=20))
def test_kernelised_deltanet_with_linear_features_is_the_table_deltanet(p: UpdateProblem) -> None:
    """UPD.11a (gradient form) against UPD.3a (the table's S (I - beta k k^T) + beta v k^T) with phi(x) = x."""
    o_1, S_1 = upd.kernel_deltanet_state_recurrent(p.q, p.k, p.v, p.beta, p.S0)
    o_2, S_2 = upd.deltanet_recurrent(p.q, p.k, p.v, p.beta, p.S0)
    ratio = _gap_ratio("deltanet", p, (o_2, S_2), (o_1, S_1), None)
    assert ratio <= 1.0, p.repro()


@given(p=update_problems(max_t=20))
def test_deltaformer_with_linear_kernel_and_beta_one_reproduces_deltanets_state_form_outputs(p: UpdateProblem
                                                                                             ) -> None:
    """beta = 1: DeltaFormer's u (w = k, linear kappa_1, scale 1) is DeltaNet's u; o_t = S_t q_t, S_t = sum u_i k_i^T.
    """
    ones = np.ones(p.T)
    u = deltaformer.deltaformer_u(p.k, p.k, p.v, ones, kernel="linear", scale=1)
    o_deltaformer = np.tril(p.q @ p.k.T) @ u
    o_deltanet, S_T = upd.deltanet_recurrent(p.q, p.k, p.v, ones)
    error = max(float(np.abs(o_deltaformer - o_deltanet).max()), float(np.abs(u.T @ p.k - S_T).max()))
    cond = _system_cond(p.k, ones, None, None)
    scale = max(float(np.abs(o_deltanet).max()), float(np.abs(u).max()) * float(np.abs(p.q).sum(axis=1).max()))
    assert error <= p.budget(scale, cond=cond, beta=ones), p.repro()


@given(p=update_problems(max_t=20))
def test_deltaformer_linear_with_beta_scaled_values_is_deltanets_u_for_any_beta(p: UpdateProblem) -> None:
    """u_t = beta_t (v_t - sum k_t^T k_i u_i) is DeltaFormer (w = k, beta) on values beta_t v_t; beta = 0 allowed."""
    u_deltaformer = deltaformer.deltaformer_u(p.k, p.k, p.beta[:, None] * p.v, p.beta, kernel="linear", scale=1)
    o_deltanet, S_T = upd.deltanet_recurrent(p.q, p.k, p.v, p.beta)
    o = np.tril(p.q @ p.k.T) @ u_deltaformer
    error = max(float(np.abs(o - o_deltanet).max()), float(np.abs(u_deltaformer.T @ p.k - S_T).max()))
    cond = _system_cond(p.k, p.beta, None, None)
    scale = max(float(np.abs(o_deltanet).max()),
                float(np.abs(u_deltaformer).max()) * float(np.abs(p.q).sum(axis=1).max()))
    assert error <= p.budget(scale, cond=cond), p.repro()


@given(p=update_problems(max_t=20))
def test_deltaformer_linear_with_beta_scaled_keys_and_unit_beta_gives_deltanets_u_over_beta(p: UpdateProblem
                                                                                            ) -> None:
    """ũ_t = u_t / beta_t solves ũ_t = v_t - sum_{i<t} k_t^T (beta_i k_i) ũ_i: DeltaFormer with keys beta_i k_i."""
    beta = np.where(np.abs(p.beta) < 0.05, 0.05, p.beta)  # the correspondence divides by beta
    u_tilde = deltaformer.deltaformer_u(p.k, beta[:, None] * p.k, p.v, np.ones(p.T), kernel="linear", scale=1)
    _, U = upd.kernel_deltanet_u_form(p.q, p.k, p.v, beta, kernels.linear_kernel)
    o_deltanet, _ = upd.deltanet_recurrent(p.q, p.k, p.v, beta)
    o = np.tril(p.q @ (beta[:, None] * p.k).T) @ u_tilde  # o_t = sum_i (q_t^T beta_i k_i) ũ_i
    cond = _system_cond(p.k, beta, None, None)
    scale = max(float(np.abs(U).max()), float(np.abs(u_tilde).max()) * float(np.abs(beta).max()))
    budget = p.budget(scale * float(np.abs(p.q).sum(axis=1).max()), cond=cond, beta=beta)
    assert np.abs(beta[:, None] * u_tilde - U).max() <= budget, p.repro()
    assert np.abs(o - o_deltanet).max() <= budget, p.repro()


# ---------------------------------------------------------------------------------------------------------------
# Normalised kernel memory, the infinite-context limit, and its rate constant.


@given(p=update_problems(max_t=20), with_state=st.booleans())
def test_normalised_kernel_memory_recurrent_equals_parallel_with_positive_features(p: UpdateProblem,
                                                                                    with_state: bool) -> None:
    phi_q, phi_k = kernels.polynomial_feature_map(p.q, 2), kernels.polynomial_feature_map(p.k, 2)
    rng = np.random.default_rng(p.seed)
    state = (rng.uniform(0, 1, (p.d_v, p.d_k**2)), rng.uniform(0.1, 1, p.d_k**2)) if with_state else None
    o_1, (S_1, z_1) = upd.normalised_kernel_memory_recurrent(phi_q, phi_k, p.v, state)
    o_2, (S_2, z_2) = upd.normalised_kernel_memory_parallel(phi_q, phi_k, p.v, state)
    # o_t = N_t / D_t with N_t = sum_{i<=t} (phi_q_t . phi_k_i) v_i (+ S0 phi_q_t) and D_t the same sum without
    # v_i (+ z0 . phi_q_t). Each form evaluates N_t and D_t with at most T + d_phi additions of products, so its
    # errors are bounded by gamma = (T + d_phi) u times the sums of absolute values (Higham, ch. 3):
    # |dN_t| <= gamma Nabs_t, |dD_t| <= gamma Dabs_t with Nabs_t = sum |phi_q_t| . |phi_k_i| |v_i| (+ |S0| |phi_q_t|)
    # and Dabs_t likewise. The features are signed (degree-2 products), so phi_q . phi_k may cancel: Nabs, Dabs use
    # the elementwise absolute features, not |phi_q . phi_k|. To first order |do_t| <= gamma (Nabs_t + |o_t| Dabs_t)
    # / |D_t| for each form (z0 . phi_q may be negative, so D_t is not always positive); the difference of two
    # forms is at most twice that; factor 8 more for the division, the final state's accumulation order and
    # second-order terms.
    abs_products = np.tril(np.abs(phi_q) @ np.abs(phi_k).T)
    denominators = np.tril(phi_q @ phi_k.T).sum(axis=1) + (phi_q @ state[1] if state else 0)
    abs_numerators = abs_products @ np.abs(p.v) + (np.abs(phi_q) @ np.abs(state[0]).T if state else 0)
    abs_denominators = abs_products.sum(axis=1) + (np.abs(phi_q) @ state[1] if state else 0)
    row_scale = (abs_numerators + np.abs(o_1) * abs_denominators[:, None]) / np.abs(denominators)[:, None]
    gamma = (p.T + p.d_k**2) * UNIT_ROUNDOFF
    assert np.all(np.abs(o_1 - o_2) <= 16 * gamma * np.maximum(1.0, row_scale)), p.repro()
    budget = 16 * gamma * max(1.0, float(row_scale.max()))
    assert np.abs(S_1 - S_2).max() <= budget * max(1.0, float(np.abs(S_1).max()))
    assert np.abs(z_1 - z_2).max() <= budget * max(1.0, float(np.abs(z_1).max()))


def test_normalised_kernel_memory_rejects_a_zero_denominator() -> None:
    phi = np.array([[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="z_t"):
        upd.normalised_kernel_memory_recurrent(phi[::-1], phi, np.ones((2, 1)))
    with pytest.raises(ValueError, match="z_t"):
        upd.normalised_kernel_memory_parallel(phi[::-1], phi, np.ones((2, 1)))


def _mp_gaussian_expectation(f: Callable[[Any], Any], mean: float, std: float) -> Any:
    density = lambda x: mpmath.exp(-((x - mean) ** 2) / (2 * std**2)) / (std * mpmath.sqrt(2 * mpmath.pi))  # noqa: E731
    return mpmath.quad(lambda x: f(x) * density(x), [-mpmath.inf, mean, mpmath.inf])


@pytest.mark.parametrize(("q", "a", "b", "mu", "sigma", "tau"),
                         [(1.0, 2.0, 0.5, 0.0, 1.0, 1.0), (-1.5, 0.7, -1.0, 0.3, 0.8, 2.0),
                          (2.0, -1.0, 0.0, -0.5, 1.5, 0.7)])
def test_infinite_context_limit_matches_quadrature_in_one_dimension(q: float, a: float, b: float, mu: float,
                                                                     sigma: float, tau: float) -> None:
    """UPD.10a against E[v kappa] / E[kappa] by mpmath quadrature (30 digits): catches Sigma q vs q, tau vs tau^2."""
    with mpmath.workdps(30):
        kappa = lambda x: mpmath.exp(q * x / tau)  # noqa: E731
        numerator = _mp_gaussian_expectation(lambda x: (a * x + b) * kappa(x), mu, sigma)
        denominator = _mp_gaussian_expectation(kappa, mu, sigma)
        expected = float(numerator / denominator)
    limit = upd.softmax_infinite_context_limit(np.array([q]), np.array([[a]]), np.array([b]), np.array([mu]),
                                               np.array([[sigma**2]]), tau=tau)
    assert limit[0] == pytest.approx(expected, rel=1e-13, abs=1e-13)


@pytest.mark.parametrize(("q", "a", "sigma", "tau", "noise"), [(1.0, 2.0, 1.0, 1.0, 0.5), (-1.5, 0.7, 0.8, 2.0, 0.0)])
def test_convergence_constant_matches_quadrature_in_one_dimension(q: float, a: float, sigma: float, tau: float,
                                                                   noise: float) -> None:
    """UPD.10b: E[kappa^2 ((v - L)^2)] / E[kappa]^2 with v = a k + noise, by quadrature."""
    limit = a * sigma**2 * q / tau
    with mpmath.workdps(30):
        kappa = lambda x: mpmath.exp(q * x / tau)  # noqa: E731
        second = _mp_gaussian_expectation(lambda x: kappa(x) ** 2 * ((a * x - limit) ** 2 + noise**2), 0.0, sigma)
        expected = float(second / _mp_gaussian_expectation(kappa, 0.0, sigma) ** 2)
    constant = upd.softmax_convergence_constant(np.array([q]), np.array([[a]]), np.array([[sigma**2]]), tau=tau,
                                                noise_std=noise)
    assert constant == pytest.approx(expected, rel=1e-12)


def test_infinite_context_limit_matches_a_long_context_within_its_confidence_interval() -> None:
    """Monte Carlo in d_k = 3: o_T(q) at T = 200000 lies within 5 standard errors sqrt(C / T) of the limit."""
    rng = np.random.default_rng(7)
    d_k, d_v, T, tau = 3, 2, 200_000, 1.5
    A = rng.standard_normal((d_v, d_k))
    b = rng.standard_normal(d_v)
    mu = rng.standard_normal(d_k) * 0.3
    L_chol = rng.standard_normal((d_k, d_k)) * 0.4 + np.eye(d_k)
    Sigma = L_chol @ L_chol.T
    q = rng.standard_normal(d_k) * 0.5
    k = mu + rng.standard_normal((T, d_k)) @ L_chol.T
    v = k @ A.T + b + 0.3 * rng.standard_normal((T, d_v))
    o_T = upd.softmax_fixed_query_outputs(q, k, v, tau)[-1]
    limit = upd.softmax_infinite_context_limit(q, A, b, mu, Sigma, tau=tau)
    standard_error = np.sqrt(upd.softmax_convergence_constant(q, A, Sigma, tau=tau, noise_std=0.3) / T)
    assert np.linalg.norm(o_T - limit) <= 5 * standard_error


# ---------------------------------------------------------------------------------------------------------------
# mpmath: every rule's recurrent and parallel/chunked forms at 60 digits.


def _mp(x: Array) -> Array:
    return precision.to_mp(x)


@pytest.mark.parametrize("rule", [*RULES, "kernel_memory", "softmax", "softmax_sgd", "kernel_deltanet"])
def test_recurrent_and_parallel_forms_agree_to_1e_40_at_60_digits(rule: str) -> None:
    p = UpdateProblem.sample(7, 3, 2, 3, "(0,2)", 11)
    with precision.workdps(60):
        mp = UpdateProblem(p.T, p.d_k, p.d_v, p.chunk, p.beta_regime, p.seed, *(_mp(x) for x in
                           (p.q, p.k, p.v, p.a, p.beta, p.S0)))
        pairs: list[tuple[Any, Any]] = []
        if rule in RULES:
            recurrent, parallel, chunked = RULES[rule]
            pairs.append((recurrent(mp, mp.S0), parallel(mp, mp.S0)))
            if chunked is not None:
                pairs.append((recurrent(mp, mp.S0), chunked(mp, mp.S0)))
        elif rule == "kernel_memory":
            phi_q, phi_k = kernels.polynomial_feature_map(mp.q, 2), kernels.polynomial_feature_map(mp.k, 2)
            pairs.append((upd.normalised_kernel_memory_recurrent(phi_q, phi_k, mp.v),
                          upd.normalised_kernel_memory_parallel(phi_q, phi_k, mp.v)))
        elif rule == "softmax":
            cache = (mp.k[:2], mp.v[:2])
            pairs.append((upd.softmax_attention_recurrent(mp.q, mp.k, mp.v, mpmath.mpf(2), cache),
                          upd.softmax_attention_parallel(mp.q, mp.k, mp.v, mpmath.mpf(2), cache)))
        elif rule == "softmax_sgd":
            pairs.append((upd.softmax_sgd_recurrent(mp.q, mp.k, mp.v, mpmath.mpf(2))[0],
                          upd.softmax_attention_parallel(mp.q, mp.k, mp.v, mpmath.mpf(2))[0]))
        else:
            o_u, _ = upd.kernel_deltanet_u_form(mp.q, mp.k, mp.v, mp.beta,
                                                lambda X, Y: kernels.polynomial_kernel(X, Y, 2))
            o_s, _ = upd.kernel_deltanet_state_recurrent(kernels.polynomial_feature_map(mp.q, 2),
                                                        kernels.polynomial_feature_map(mp.k, 2), mp.v, mp.beta)
            pairs.append((o_u, o_s))
        for first, second in pairs:
            for x, y in zip(_flatten(first), _flatten(second), strict=True):
                assert x.dtype == object and y.dtype == object
                assert max(abs(value) for value in (x - y).flat) < mpmath.mpf(10) ** -40, rule


def _flatten(result: Any) -> list[Array]:
    if isinstance(result, tuple):
        return [part for item in result for part in _flatten(item)]
    return [result]


# ---------------------------------------------------------------------------------------------------------------
# Input validation: every error names the argument.


def test_errors_name_the_argument() -> None:
    q = np.ones((3, 2))
    v = np.ones((3, 1))
    with pytest.raises(ValueError, match="k must have 3 rows"):
        upd.linear_attention_recurrent(q, np.ones((2, 2)), v)
    with pytest.raises(ValueError, match=r"initial_state must have shape \(d_v, d_k\) = \(1, 2\)"):
        upd.deltanet_parallel(q, q, v, np.ones(3), np.ones((2, 2)))
    with pytest.raises(ValueError, match="beta must have length 3"):
        upd.deltanet_recurrent(q, q, v, np.ones(2))
    with pytest.raises(ValueError, match=r"a \(the gates\) must be > 0"):
        upd.gated_linear_attention_parallel(q, q, v, np.array([1.0, 0.0, 0.5]))
    with pytest.raises(ValueError, match="beta must be >= 0 for Longhorn"):
        upd.longhorn_recurrent(q, q, v, np.array([1.0, -0.1, 0.5]))
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        upd.deltanet_chunked(q, q, v, np.ones(3), chunk_size=0)
    with pytest.raises(TypeError, match="chunk_size must be an int"):
        upd.gated_deltanet_chunked(q, q, v, np.ones(3), np.ones(3), chunk_size=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tau must be > 0"):
        upd.softmax_attention_recurrent(q, q, v, 0.0)
    with pytest.raises(ValueError, match="v contains NaN"):
        upd.softmax_attention_parallel(q, q, np.full((3, 1), np.nan), 1.0)
    with pytest.raises(TypeError, match="initial_state must be a cache"):
        upd.softmax_attention_parallel(q, q, v, 1.0, np.ones((2, 2)))
    with pytest.raises(TypeError, match=r"initial_state must be a pair \(S_0, z_0\)"):
        upd.normalised_kernel_memory_recurrent(q, q, v, np.ones((1, 2)))
    with pytest.raises(TypeError, match="kernel must be a Gram function"):
        upd.kernel_deltanet_u_form(q, q, v, np.ones(3), "linear")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="key_radius and query_radius must be >= 0"):
        upd.softmax_newest_weight_bounds(-1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="Sigma must have 2 rows"):
        upd.softmax_infinite_context_limit(np.ones(2), np.ones((1, 2)), Sigma=np.eye(3))
    with pytest.raises(TypeError, match="q must be a real floating array"):
        upd.softmax_fixed_query_outputs(np.array(["a", "b"]), q, v, 1.0)


def test_module_docstring_example_runs() -> None:
    import doctest

    failures, _ = doctest.testmod(upd, verbose=False)
    assert failures == 0
