"""Claims 5, 9, 10 and 11 of equations.md section 6: the memory-update framework (section 3).

- C5   kernelised DeltaNet in state form equals its u-form (kernel trick), linear and polynomial kernels.
- C9   softmax attention equals SGD with step 1/t on the normalised memory (Sbar_t = S_t / t, same outputs).
- C9b  the newest token's softmax weight is Theta(1/t): t w_t stays inside [e^{-2 R_k R_q / tau}, e^{2 R_k R_q / tau}].
- C10  for an i.i.d. Gaussian context o_t(q) converges to its closed-form limit at rate t^{-1/2} (fitted slope).
- C10b ... with the closed-form constant: t E||o_t(q) - lim||^2 -> C (Monte Carlo mean within 4 standard errors).
- C11  every update rule's recurrent form equals its parallel and chunked forms (every chunk size, initial state).

Identity checks (C5, C9, C11) run the precision-generic spec at ``profile.dps`` digits. Error model: each form is a
backward-stable sequence of O(T^2) operations on numbers of size at most the largest output, and the solve-based
forms are amplified by the condition number of their unit lower-triangular system, so two forms differ by at most
c * T^2 * cond_inf * max(1, max|output|) * 10^-dps; we take c = 10 (as the DeltaFormer checks do) and report the
worst relative difference divided by 10 T^2 cond_inf 10^-dps against 1. A float64 contamination would show as a
ratio near 10^(dps - 16), a wrong rule as a ratio near 10^dps.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import mpmath
import numpy as np

from proofs_checks.claims.declaration import Check, Figure, Outcome, Profile
from spec import kernels, precision
from spec import updates as upd
from spec._types import F64, Array

__all__ = ["CHECKS", "FIGURES"]

_SIZES = ((1, 2, 2), (5, 3, 2), (8, 3, 2), (13, 4, 3))
"""(T, d_k, d_v) of the small problems the identities are evaluated on."""


def _max_abs(x: Array) -> mpmath.mpf:
    return max((abs(value) for value in np.asarray(x).flat), default=mpmath.mpf(0))


def _cond_inf(M: Array) -> mpmath.mpf:
    inverse = precision.solve(M, precision.eye(M.shape[0], M))
    return _max_abs(np.abs(M).sum(axis=1)) * _max_abs(np.abs(inverse).sum(axis=1))


def _delta_system(k: Array, beta: Array, a: Array | None = None) -> Array:
    """I + diag(beta)(tril(K K^T, -1) ⊙ Γ): the unit lower-triangular system the delta-rule solves invert."""
    T = k.shape[0]
    gram = np.tril(k @ k.T, -1)
    if a is not None:
        log_a = precision.log(a)
        b = np.cumsum(log_a)
        gram = gram * np.tril(precision.exp(np.tril(b[:, None] - b[None, :])))
    system: Array = precision.eye(T, k) + beta[:, None] * gram
    return system


def _unit_rows(x: F64) -> F64:
    out: F64 = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def _relative_gap(x: Array, y: Array, size: mpmath.mpf) -> mpmath.mpf:
    return _max_abs(x - y) / max(size, mpmath.mpf(1))


# ------------------------------------------------------------------------------------------------------------- C11


def _rule_pairs(rng: np.random.Generator, T: int, d_k: int, d_v: int
                ) -> list[tuple[str, tuple[Array, Any], list[tuple[Array, Any]], Array | None]]:
    """For each rule: (name, recurrent (o, state), [parallel and chunked (o, state)], system matrix or None)."""
    q = precision.to_mp(rng.standard_normal((T, d_k)))
    k = precision.to_mp(_unit_rows(rng.standard_normal((T, d_k))))
    v = precision.to_mp(rng.standard_normal((T, d_v)))
    S0 = precision.to_mp(rng.standard_normal((d_v, d_k)))
    a = precision.to_mp(rng.uniform(0.5, 1.0, T))
    beta = precision.to_mp(rng.uniform(0.05, 1.95, T))
    chunks = range(1, T + 1)
    pairs: list[tuple[str, tuple[Array, Any], list[tuple[Array, Any]], Array | None]] = [
        ("linear attention", upd.linear_attention_recurrent(q, k, v, S0),
         [upd.linear_attention_parallel(q, k, v, S0)], None),
        ("gated linear attention", upd.gated_linear_attention_recurrent(q, k, v, a, S0),
         [upd.gated_linear_attention_parallel(q, k, v, a, S0)], None),
        ("DeltaNet", upd.deltanet_recurrent(q, k, v, beta, S0),
         [upd.deltanet_parallel(q, k, v, beta, S0)]
         + [upd.deltanet_chunked(q, k, v, beta, S0, chunk_size=c) for c in chunks], _delta_system(k, beta)),
        ("Gated DeltaNet", upd.gated_deltanet_recurrent(q, k, v, a, beta, S0),
         [upd.gated_deltanet_parallel(q, k, v, a, beta, S0)]
         + [upd.gated_deltanet_chunked(q, k, v, a, beta, S0, chunk_size=c) for c in chunks],
         _delta_system(k, beta, a)),
        ("Longhorn", upd.longhorn_recurrent(q, k, v, beta, S0),
         [upd.longhorn_parallel(q, k, v, beta, S0)]
         + [upd.longhorn_chunked(q, k, v, beta, S0, chunk_size=c) for c in chunks],
         _delta_system(k, beta / (1 + beta))),  # ||k|| = 1, so e = beta / (1 + beta)
    ]
    phi_q, phi_k = kernels.polynomial_feature_map(q, 2), kernels.polynomial_feature_map(k, 2)
    state0 = (precision.to_mp(rng.uniform(0, 1, (d_v, d_k**2))), precision.to_mp(rng.uniform(0, 1, d_k**2)))
    pairs.append(("normalised kernel memory", upd.normalised_kernel_memory_recurrent(phi_q, phi_k, v, state0),
                  [upd.normalised_kernel_memory_parallel(phi_q, phi_k, v, state0)], None))
    tau = mpmath.sqrt(d_k)
    cache = (k[:2] * 2, v[:2])
    pairs.append(("softmax attention", upd.softmax_attention_recurrent(q, k, v, tau, cache),
                  [upd.softmax_attention_parallel(q, k, v, tau, cache)], None))
    return pairs


def _state_parts(state: Any) -> list[Array]:
    return list(state) if isinstance(state, tuple) else [state]


def _recurrent_equals_parallel(profile: Profile) -> Outcome:
    """C11: max over rules and sizes of |parallel/chunked - recurrent| (outputs and final state), relative."""
    rng = np.random.default_rng(profile.seed + 11)
    worst = mpmath.mpf(0)
    worst_rule = ""
    comparisons = 0
    with precision.workdps(profile.dps):
        for T, d_k, d_v in _SIZES:
            for name, (o, state), others, system in _rule_pairs(rng, T, d_k, d_v):
                cond = _cond_inf(system) if system is not None else mpmath.mpf(1)
                bound = 10 * T**2 * cond * mpmath.mpf(10) ** (-profile.dps)
                parts = [o, *_state_parts(state)]
                size = max(_max_abs(x) for x in parts)
                for o_other, state_other in others:
                    for x, y in zip(parts, [o_other, *_state_parts(state_other)], strict=True):
                        ratio = _relative_gap(x, y, size) / bound
                        comparisons += 1
                        if ratio > worst:
                            worst, worst_rule = ratio, name
    return Outcome(measured=float(worst), bound=1.0, passed=bool(worst <= 1),
                   detail=f"{comparisons} (form, output/state) comparisons, 7 rules, T in "
                          f"{[s[0] for s in _SIZES]}, every chunk size 1..T, initial state nonzero, at "
                          f"{profile.dps} digits; measured = worst relative gap / (10 T^2 cond 10^-dps)"
                          f" ({worst_rule or 'all exact'})")


# ------------------------------------------------------------------------------------------------------------- C5


def _kernelised_deltanet(profile: Profile) -> Outcome:
    """C5: the state form S_t = S_{t-1} - beta_t (S_{t-1} phi_t - v_t) phi_t^T equals the u-form, o and S_T."""
    rng = np.random.default_rng(profile.seed + 5)
    worst = mpmath.mpf(0)
    cases = 0
    feature_maps: list[tuple[str, Callable[[Array], Array], Callable[[Array, Array], Array]]] = [
        ("linear", kernels.linear_feature_map, kernels.linear_kernel),
        ("poly2", lambda X: kernels.polynomial_feature_map(X, 2), lambda X, Y: kernels.polynomial_kernel(X, Y, 2)),
        ("poly3", lambda X: kernels.polynomial_feature_map(X, 3), lambda X, Y: kernels.polynomial_kernel(X, Y, 3)),
    ]
    with precision.workdps(profile.dps):
        for T, d_k, d_v in _SIZES:
            for _, phi, kappa in feature_maps:
                q = precision.to_mp(rng.standard_normal((T, d_k)))
                k = precision.to_mp(_unit_rows(rng.standard_normal((T, d_k))))
                v = precision.to_mp(rng.standard_normal((T, d_v)))
                beta = precision.to_mp(rng.uniform(-0.5, 1.95, T))
                o_state, S_T = upd.kernel_deltanet_state_recurrent(phi(q), phi(k), v, beta)
                o_u, U = upd.kernel_deltanet_u_form(q, k, v, beta, kappa)
                system = precision.eye(T, v) + beta[:, None] * np.tril(kappa(k, k), -1)
                bound = 10 * T**2 * _cond_inf(system) * mpmath.mpf(10) ** (-profile.dps)
                S_from_u = U.T @ phi(k)  # S_T = sum_i u_i phi(k_i)^T
                size = max(_max_abs(o_state), _max_abs(S_T))
                worst = max(worst, _relative_gap(o_state, o_u, size) / bound,
                            _relative_gap(S_T, S_from_u, size) / bound)
                cases += 1
    return Outcome(measured=float(worst), bound=1.0, passed=bool(worst <= 1),
                   detail=f"{cases} problems (linear, (x^T y)^2, (x^T y)^3 kernels; T in {[s[0] for s in _SIZES]}; "
                          f"beta in (-0.5, 1.95)) at {profile.dps} digits; outputs and S_T = sum u_i phi(k_i)^T; "
                          f"measured = worst relative gap / (10 T^2 cond 10^-dps)")


# ------------------------------------------------------------------------------------------------------------- C9


def _softmax_is_sgd(profile: Profile) -> Outcome:
    """C9: the SGD recursion with step 1/t gives the softmax outputs and Sbar_t = S_t / t (every c_{t,i} = 1/t)."""
    rng = np.random.default_rng(profile.seed + 9)
    worst = mpmath.mpf(0)
    with precision.workdps(profile.dps):
        for T, d_k, d_v in _SIZES:
            q, k = (precision.to_mp(x) for x in rng.standard_normal((2, T, d_k)))
            v = precision.to_mp(rng.standard_normal((T, d_v)))
            tau = mpmath.sqrt(d_k)
            o_softmax, _ = upd.softmax_attention_parallel(q, k, v, tau)
            K, V, c = k[:0], v[:0], precision.zeros((0,), v)
            bound = 10 * T**2 * mpmath.mpf(10) ** (-profile.dps)
            for t in range(1, T + 1):
                K, V, c = upd.softmax_sgd_step(K, V, c, k[t - 1], v[t - 1])
                o_t = upd.softmax_sgd_read(K, V, c, q[t - 1], tau)
                gap_o = _relative_gap(o_t, o_softmax[t - 1], _max_abs(v))
                gap_c = _max_abs(c * t - 1)  # Sbar_t = S_t / t  <=>  every coefficient is 1/t
                worst = max(worst, gap_o / bound, gap_c / bound)
    return Outcome(measured=float(worst), bound=1.0, passed=bool(worst <= 1),
                   detail=f"T in {[s[0] for s in _SIZES]}, tau = sqrt(d_k), at {profile.dps} digits; measured = "
                          f"max(|o_sgd - o_softmax| / max|v|, max_i |t c_(t,i) - 1|) / (10 T^2 10^-dps)")


def _newest_weights(q_rows: Array, k: Array, tau: float) -> F64:
    """t w_t for t = 1..T: the newest token's weight among the stored keys, via the SGD state (UPD.8, UPD.8a)."""
    K, V, c = k[:0], np.zeros((0, 1)), np.zeros(0)
    scaled = np.empty(k.shape[0])
    for t in range(1, k.shape[0] + 1):
        K, V, c = upd.softmax_sgd_step(K, V, c, k[t - 1], np.zeros(1))
        scaled[t - 1] = t * upd.softmax_sgd_weights(K, c, q_rows[t - 1], tau)[-1]
    return scaled


def _in_ball(rng: np.random.Generator, radius: float, T: int, d: int) -> F64:
    directions = rng.standard_normal((T, d))
    radii = radius * rng.uniform(0, 1, (T, 1)) ** (1 / d)
    points: F64 = radii * directions / np.linalg.norm(directions, axis=1, keepdims=True)
    return points


def _newest_weight_theta(profile: Profile) -> Outcome:
    """C9b: e^{-2 R_k R_q / tau} <= t w_t <= e^{2 R_k R_q / tau} for keys and queries in balls; near-attained."""
    rng = np.random.default_rng(profile.seed + 90)
    R_k, R_q, tau, d = 1.0, 1.0, 1.0, 3
    lower, upper = upd.softmax_newest_weight_bounds(R_k, R_q, tau)
    # The SGD state grows with t, so a stream costs O(T^2): thorough runs twice as long and twice as many streams.
    T, streams = (1500, 4) if profile.samples == 1 else (3000, 8)
    curves = [_newest_weights(_in_ball(rng, R_q, T, d), _in_ball(rng, R_k, T, d), tau) for _ in range(streams)]
    # Adversarial streams (one query q0 on the sphere): every earlier key anti-aligned with q0 and the newest
    # aligned gives t w_t = t e / ((t - 1) e^-1 + e) -> e^2; the reverse tends to e^-2.
    q0 = np.eye(d)[0] * R_q
    earlier = np.tile(q0 * R_k / R_q, (T - 1, 1))
    queries = np.tile(q0, (T, 1))
    high = _newest_weights(queries, np.concatenate([-earlier, q0[None] * R_k / R_q]), tau)[-1]
    low = _newest_weights(queries, np.concatenate([earlier, -q0[None] * R_k / R_q]), tau)[-1]
    random_high = max(float(c.max()) for c in curves)
    random_low = min(float(c.min()) for c in curves)
    highest, lowest = max(float(high), random_high), min(float(low), random_low)
    expected_high = T * np.e / ((T - 1) / np.e + np.e)
    passed = lower <= lowest and highest <= upper and abs(high - expected_high) <= 1e-12 * expected_high
    return Outcome(measured=highest, bound=upper, passed=bool(passed),
                   detail=f"T = {T}, d = {d}, R_k = R_q = tau = 1: max_t t w_t = {highest:.4f} <= e^2 = {upper:.4f}, "
                          f"min_t t w_t = {lowest:.4f} >= e^-2 = {lower:.4f}; {streams} random streams in the ball "
                          f"span [{random_low:.3f}, {random_high:.3f}], adversarial streams "
                          f"reach {float(high):.4f} and {float(low):.4f} (the bounds, as t -> inf)")


# ------------------------------------------------------------------------------------------------------------- C10


_D_K, _D_V, _TAU, _NOISE, _Q_NORM = 4, 2, 2.0, 0.5, 2.0
"""The Gaussian context of C10: k ~ N(0, I_4), v = A k + 0.5 eps (A standard normal), tau = 2, ||q|| = 2."""
_T_MIN, _T_MAX, _POINTS, _SEEDS = 128, 8192, 13, 512
"""C10 fits over 13 log-spaced t in [128, 8192], averaging squared errors over 512 contexts (x profile.samples)."""
_SLOPE_TOLERANCE = 0.1
"""C10 passes if |slope + 1/2| <= 0.1. Calibration: over 6 base seeds with 1024 contexts each the fitted slope had
mean -0.487 and standard deviation 0.008, so about 0.011 with the 512 contexts used here: 0.1 is about 9
standard deviations, while a wrong limit (an error floor) pulls the slope towards 0 (10% off: -0.31)."""


def _rate_problem(seed: int) -> tuple[F64, F64, F64, float]:
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((_D_V, _D_K))
    q = rng.standard_normal(_D_K)
    q = _Q_NORM * q / np.linalg.norm(q)
    limit: F64 = upd.softmax_infinite_context_limit(q, A, tau=_TAU)
    constant = float(upd.softmax_convergence_constant(q, A, tau=_TAU, noise_std=_NOISE))
    return A, q, limit, constant


def _squared_errors(profile: Profile) -> tuple[F64, F64, float]:
    """(t, ||o_t(q) - lim||^2 per context [contexts, len(t)], the constant C of UPD.10b). float64 Monte Carlo."""
    A, q, limit, constant = _rate_problem(profile.seed + 10)
    T = _T_MAX
    ts = np.unique(np.geomspace(_T_MIN, T, _POINTS).astype(int))
    rng = np.random.default_rng(profile.seed + 100)
    seeds = _SEEDS * profile.samples
    squared = np.empty((seeds, len(ts)))
    for s in range(seeds):
        k = rng.standard_normal((T, _D_K))
        v = k @ A.T + _NOISE * rng.standard_normal((T, _D_V))
        o = upd.softmax_fixed_query_outputs(q, k, v, _TAU)
        squared[s] = ((o[ts - 1] - limit) ** 2).sum(axis=1)
    return ts.astype(np.float64), squared, constant


def _rate_curve(profile: Profile) -> tuple[F64, F64, float]:
    """(t, root-mean-square error of o_t(q) over the contexts, the constant C of UPD.10b)."""
    ts, squared, constant = _squared_errors(profile)
    rms: F64 = np.sqrt(squared.mean(axis=0))
    return ts, rms, constant


def _convergence_rate(profile: Profile) -> Outcome:
    """C10: the slope of log RMS error against log t, fitted over t in [128, 8192], is -1/2 +- 0.1.

    measured = |slope + 1/2|; the slope itself is in the detail line.
    """
    ts, rms, constant = _rate_curve(profile)
    slope = float(np.polyfit(np.log(ts), np.log(rms), 1)[0])
    passed = abs(slope + 0.5) <= _SLOPE_TOLERANCE
    seeds = _SEEDS * profile.samples
    return Outcome(measured=abs(slope + 0.5), bound=_SLOPE_TOLERANCE, passed=bool(passed),
                   detail=f"fitted slope {slope:.3f} (pass: |slope + 0.5| <= {_SLOPE_TOLERANCE}); {seeds} i.i.d. "
                          f"Gaussian contexts, t in [{int(ts[0])}, {int(ts[-1])}]; t MSE / C at t = {int(ts[-1])}: "
                          f"{ts[-1] * rms[-1] ** 2 / constant:.3f} (closed-form constant C = {constant:.3f})")


_CONSTANT_BIAS_ALLOWANCE = 0.05
"""C10b: the delta method's O(1/t) corrections at t >= 2000; the measured bias over seeds was about -0.02."""


def _convergence_constant(profile: Profile) -> Outcome:
    """C10b: t E||o_t(q) - lim||^2 / C -> 1 with C closed form (UPD.10b), averaged over the 4 largest t.

    Per context, x = mean over the 4 largest t of t ||o_t - lim||^2 / C; the estimate is the mean of x over the
    contexts with its standard error. Pass if |estimate - 1| <= 4 standard errors + 0.05 (the O(1/t) corrections).
    """
    ts, squared, constant = _squared_errors(profile)
    per_context = (ts[-4:] * squared[:, -4:] / constant).mean(axis=1)
    estimate = float(per_context.mean())
    standard_error = float(per_context.std(ddof=1) / np.sqrt(len(per_context)))
    bound = 4 * standard_error + _CONSTANT_BIAS_ALLOWANCE
    return Outcome(measured=abs(estimate - 1), bound=bound, passed=abs(estimate - 1) <= bound,
                   detail=f"t MSE / C = {estimate:.3f} +- {standard_error:.3f} (1 s.e.) over {len(per_context)} "
                          f"contexts at t in [{int(ts[-4])}, {int(ts[-1])}]; C = {constant:.3f}; pass: "
                          f"|estimate - 1| <= 4 s.e. + {_CONSTANT_BIAS_ALLOWANCE}")


def _render_convergence(profile: Profile, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts, rms, constant = _rate_curve(profile)
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.loglog(ts, rms, "o-", label="RMS error of o_t(q) (Monte Carlo)")
    axis.loglog(ts, np.sqrt(constant / ts), "k:", label=r"$\sqrt{C/t}$, C closed form (UPD.10b)")
    axis.loglog(ts, rms[0] * np.sqrt(ts[0] / ts), "--", color="grey", label=r"$t^{-1/2}$ through the first point")
    axis.set_xlabel("context length t")
    axis.set_ylabel("||o_t(q) - lim o(q)|| (RMS over contexts)")
    axis.set_title("Softmax attention's infinite-context convergence")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


CHECKS = (
    Check(id="C5", claim="kernelised DeltaNet: the state form S_t = S_{t-1} - beta_t (S_{t-1} phi_t - v_t) phi_t^T "
                         "equals the u-form (outputs and S_T), linear and polynomial kernels, at high precision",
          provenance="derived",
          spec_functions=("spec.updates.kernel_deltanet_state_recurrent", "spec.updates.kernel_deltanet_step",
                          "spec.updates.kernel_deltanet_u_form"),
          run=_kernelised_deltanet),
    Check(id="C9", claim="softmax attention = SGD with step 1/t: Sbar_t = (1 - 1/t) Sbar_{t-1} + (1/t) v_t phi_t^T "
                         "has every coefficient 1/t (Sbar_t = S_t / t) and the causal softmax outputs",
          provenance="derived",
          spec_functions=("spec.updates.softmax_sgd_step", "spec.updates.softmax_sgd_read",
                          "spec.updates.softmax_sgd_weights", "spec.updates.softmax_attention_parallel"),
          run=_softmax_is_sgd),
    Check(id="C9b", claim="the newest token's weight is Theta(1/t): e^-2 <= t w_t <= e^2 for keys and queries in "
                          "the unit ball (tau = 1), measured over random and adversarial streams",
          provenance="derived",
          spec_functions=("spec.updates.softmax_sgd_step", "spec.updates.softmax_sgd_weights",
                          "spec.updates.softmax_newest_weight_bounds"),
          run=_newest_weight_theta),
    Check(id="C10", claim="for an i.i.d. Gaussian context o_t(q) -> A (mu + Sigma q / tau) + b at rate t^-1/2: "
                          "fitted log-log slope of the RMS error within 0.1 of -1/2",
          provenance="derived",
          spec_functions=("spec.updates.softmax_fixed_query_outputs", "spec.updates.softmax_infinite_context_limit",
                          "spec.updates.softmax_convergence_constant"),
          run=_convergence_rate),
    Check(id="C10b", claim="the t^-1/2 rate has the closed-form constant: t E||o_t(q) - lim||^2 -> "
                           "C = e^(q^T Sigma q / tau^2)(||A Sigma q / tau||^2 + tr(A Sigma A^T) + d_v s^2)",
          provenance="derived",
          spec_functions=("spec.updates.softmax_fixed_query_outputs", "spec.updates.softmax_infinite_context_limit",
                          "spec.updates.softmax_convergence_constant"),
          run=_convergence_constant),
    Check(id="C11", claim="every update rule (linear, gated linear, DeltaNet, Gated DeltaNet, Longhorn, normalised "
                          "kernel memory, softmax): recurrent form = parallel form = chunked form (all chunk sizes)",
          provenance="derived",
          spec_functions=tuple(f"spec.updates.{name}" for name in upd.__all__
                               if name.endswith(("_recurrent", "_parallel", "_chunked"))
                               and not name.startswith(("kernel_deltanet", "softmax_sgd"))),
          run=_recurrent_equals_parallel),
)

FIGURES = (
    Figure(filename="softmax_convergence.png",
           caption="Softmax attention with a fixed query over a growing i.i.d. Gaussian context: the RMS error of "
                   "o_t(q) against its closed-form limit falls like t^-1/2, on the closed-form constant sqrt(C/t).",
           render=_render_convergence),
)
