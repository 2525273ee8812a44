"""The certified oracle: the spec run on mpmath.iv intervals returns enclosures of the exact result.

Each test compares the interval spec at 60 digits with an independent recurrence written here with plain Python
lists of mpmath numbers at 100 digits (no spec code, no NumPy). The 100-digit values are within ~1e-95 of the exact
real results, while the 60-digit enclosures round outward at ~1e-60, so an exact value that lies in an enclosure
puts the 100-digit value in it too. A test fails if an enclosure misses the reference (a rounding the wrong way, an
operation that escaped interval arithmetic, a formula that differs from the recurrence) or if it is wider than
1e-25 (an enclosure that says nothing). Inputs are float64 numbers, which both sides read exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import mpmath
import numpy as np
import pytest
from mpmath import iv

from spec import deltaformer as df
from spec import kernels, precision
from spec import updates as upd
from spec._types import Array
from spec.precision import IntervalAmbiguityError, to_interval, workdps

ORACLE_DPS, REFERENCE_DPS, MAX_WIDTH = 60, 100, 1e-25
SIZES = ((1, 3, 2), (2, 3, 2), (7, 3, 2), (12, 4, 3))
"""(T, d_k, d_v) of the problems."""

Rows = list[list[mpmath.mpf]]


# --------------------------------------------------------------------------------------------------------------
# The independent reference: plain lists, mpmath at REFERENCE_DPS.


def _rows(x: Array) -> Rows:
    return [[mpmath.mpf(float(value)) for value in row] for row in np.atleast_2d(x)]


def _dot(x: Sequence[Any], y: Sequence[Any]) -> Any:
    return mpmath.fsum(a * b for a, b in zip(x, y, strict=True))


def _reference_u(w: Rows, k: Rows, v: Rows, beta: list[Any], kernel: str, scale: Any) -> Rows:
    """u_t = v_t - beta_t sum_{j<t} kappa_1(w_t, k_j) u_j, token by token."""
    u: Rows = []
    for t in range(len(v)):
        scores = [scale * _dot(w[t], k[j]) for j in range(t)]
        if kernel == "softmax":
            weights = [mpmath.exp(s) for s in scores]
            kappa = [e / mpmath.fsum(weights) for e in weights]
        elif kernel == "exp":
            kappa = [mpmath.exp(s) for s in scores]
        else:
            kappa = scores
        u.append([v[t][c] - beta[t] * mpmath.fsum(kappa[j] * u[j][c] for j in range(t)) for c in range(len(v[t]))])
    return u


def _reference_softmax_read(q: Rows, k: Rows, values: Rows, scale: Any) -> Rows:
    """o_t = sum_{j<=t} exp(scale q_t^T k_j) x_j / sum_{j<=t} exp(scale q_t^T k_j)."""
    out: Rows = []
    for t in range(len(q)):
        weights = [mpmath.exp(scale * _dot(q[t], k[j])) for j in range(t + 1)]
        total = mpmath.fsum(weights)
        out.append([mpmath.fsum(weights[j] * values[j][c] for j in range(t + 1)) / total
                    for c in range(len(values[0]))])
    return out


def _assert_encloses(enclosure: Array, reference: Rows | list[Any], what: str) -> None:
    flat_reference = [x for row in reference for x in (row if isinstance(row, list) else [row])]
    flat_enclosure = list(np.asarray(enclosure).flat)
    assert len(flat_reference) == len(flat_enclosure), what
    for index, (interval, exact) in enumerate(zip(flat_enclosure, flat_reference, strict=True)):
        assert isinstance(interval, precision.Interval), f"{what}: entry {index} is {type(interval).__name__}"
        assert exact in interval, f"{what}: entry {index}: {interval} misses the reference {exact}"
        assert interval.delta < MAX_WIDTH, f"{what}: entry {index} has width {interval.delta}"


def _problem(seed: int, T: int, d_k: int, d_v: int) -> dict[str, Array]:
    rng = np.random.default_rng(seed)
    q, k = rng.standard_normal((2, T, d_k))
    return {"q": q, "k": k, "v": rng.standard_normal((T, d_v)), "beta": rng.uniform(0.05, 1.95, T)}


# --------------------------------------------------------------------------------------------------------------
# DeltaFormer


@pytest.mark.parametrize("kernel", ["softmax", "exp", "linear"])
@pytest.mark.parametrize("write", ["k", "q"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"T{s[0]}")
def test_interval_deltaformer_encloses_an_independent_100_digit_recurrence(kernel: str, write: str,
                                                                            size: tuple[int, int, int]) -> None:
    T, d_k, d_v = size
    x = _problem(7 * T + d_k, T, d_k, d_v)
    with mpmath.workdps(REFERENCE_DPS):
        q, k, v = _rows(x["q"]), _rows(x["k"]), _rows(x["v"])
        beta = [mpmath.mpf(float(b)) for b in x["beta"]]
        write_scale = 1 / mpmath.sqrt(d_k) if kernel in ("softmax", "exp") else mpmath.mpf(1)
        u_ref = _reference_u(k if write == "k" else q, k, v, beta, kernel, write_scale)
        o_ref = _reference_softmax_read(q, k, u_ref, 1 / mpmath.sqrt(d_k))
    with workdps(ORACLE_DPS):
        qi, ki, vi, bi = (to_interval(x[name]) for name in ("q", "k", "v", "beta"))
        wi = ki if write == "k" else qi
        o = df.deltaformer_attn(qi, ki, vi, bi, write=write, kernel=kernel)
        scale = df.default_scale(kernel, d_k, vi)
        P = df.write_scores(wi, ki, kernel=kernel, scale=scale)
        forms = {"recurrence": df.deltaformer_u(wi, ki, vi, bi, kernel=kernel),
                 "solve": df.deltaformer_u_solve(P, vi, bi),
                 "neumann": df.deltaformer_u_neumann(P, vi, bi),
                 "squaring": df.deltaformer_u_inverse_by_squaring(P, vi, bi)}
        forms.update({f"chunked C={c}": df.deltaformer_u_chunked(P, vi, bi, c) for c in sorted({1, 3, T})})
        cache_k, cache_u = np.zeros((0, d_k)), np.zeros((0, d_v))
        decoded = []
        for t in range(T):
            o_t, cache_k, cache_u = df.deltaformer_decode_step(cache_k, cache_u, qi[t], ki[t], vi[t], bi[t],
                                                               write=write, kernel=kernel)
            decoded.append(o_t)
    _assert_encloses(o, o_ref, f"deltaformer_attn {kernel} write={write}")
    _assert_encloses(np.stack(decoded), o_ref, f"decode steps {kernel} write={write}")
    for name, u in forms.items():
        _assert_encloses(u, u_ref, f"u by {name}, {kernel} write={write}")


def test_round_kernel_encloses_when_every_score_is_far_from_a_half_integer() -> None:
    # Integer-valued keys: every w_t^T k_j is an integer, so round() is decided and u is computed exactly.
    rng = np.random.default_rng(3)
    k = rng.integers(-1, 2, (6, 3)).astype(np.float64)
    v = rng.standard_normal((6, 2))
    with mpmath.workdps(REFERENCE_DPS):
        u_ref = _reference_u(_rows(k), _rows(k), _rows(v), [mpmath.mpf(1)] * 6, "linear", mpmath.mpf(1))
    with workdps(ORACLE_DPS):
        u = df.deltaformer_u(to_interval(k), to_interval(k), to_interval(v), kernel="round")
    _assert_encloses(u, u_ref, "round kernel on integer scores")


def test_round_kernel_raises_on_an_exact_tie() -> None:
    # w_1^T k_0 = 0.5 exactly: round(0.5) is a discontinuity, so the oracle refuses instead of picking a side.
    k = np.array([[1.0, 0.0], [0.5, 0.0]])
    with workdps(ORACLE_DPS), pytest.raises(IntervalAmbiguityError, match=r"round .*half-integer"):
        df.deltaformer_u(to_interval(k), to_interval(k), to_interval(np.ones((2, 1))), kernel="round")


def test_round_kernel_raises_when_an_input_interval_straddles_a_half_integer() -> None:
    with workdps(ORACLE_DPS):
        k = to_interval(np.array([[1.0, 0.0], [0.0, 0.0]]))
        k[1, 0] = iv.mpf(["1.49", "1.51"])
        with pytest.raises(IntervalAmbiguityError, match=r"\[1\.4"):
            df.deltaformer_u(k, k, to_interval(np.ones((2, 1))), kernel="round")


def test_relu_of_an_interval_that_contains_zero_is_the_exact_image() -> None:
    with workdps(ORACLE_DPS):
        x = np.array([iv.mpf([-1, 2]), iv.mpf([-3, -1]), iv.mpf([1, 2])], dtype=object)
        out = precision.relu(x)
    assert [(float(e.a), float(e.b)) for e in out] == [(0.0, 2.0), (0.0, 0.0), (1.0, 2.0)]


def test_softmax_of_overlapping_intervals_encloses_the_softmax_of_every_point_inside() -> None:
    # The maximum of [0, 2] and [1, 1] is undecidable; the shift must not need it, and the result must still
    # enclose softmax at every choice of the inputs (checked at the corners and the midpoint).
    with workdps(ORACLE_DPS):
        scores = np.array([[iv.mpf([0, 2]), iv.mpf(1)]], dtype=object)
        P = kernels.softmax_kernel(scores, np.eye(2), tau=1)
    for x0 in (0, 1, 2):
        with mpmath.workdps(REFERENCE_DPS):
            first = mpmath.exp(x0) / (mpmath.exp(x0) + mpmath.e)
            second = mpmath.e / (mpmath.exp(x0) + mpmath.e)
        assert first in P[0, 0] and second in P[0, 1]


def test_interval_solve_refuses_a_pivot_that_may_be_zero() -> None:
    with workdps(ORACLE_DPS):
        A = np.array([[iv.mpf([-1, 1]), iv.mpf(0)], [iv.mpf(0), iv.mpf([-1, 1])]], dtype=object)
        with pytest.raises(IntervalAmbiguityError, match="pivot"):
            precision.solve(A, to_interval(np.ones((2, 1))))


def test_workdps_scopes_both_mpmath_and_interval_precision() -> None:
    mp_before, iv_before = mpmath.mp.prec, iv.prec
    with workdps(80):
        assert mpmath.mp.dps == 80 and iv.dps == 80
    assert (mpmath.mp.prec, iv.prec) == (mp_before, iv_before)


def test_to_interval_is_exact_for_float64_and_rejects_non_real_input() -> None:
    with workdps(20):
        x = to_interval(np.array([0.1, -3.0]))
    assert all(e.delta == 0 for e in x) and float(x[0].a) == 0.1
    with pytest.raises(TypeError, match="real numeric"):
        to_interval(np.array(["a"]))


def test_interval_operand_broadcasts_over_an_array_instead_of_becoming_its_hull() -> None:
    # mpmath.iv alone reads a length-2 array as the endpoints [a, b]; the spec needs elementwise products.
    with workdps(20):
        product = iv.mpf(2) * to_interval(np.array([1.0, 3.0]))
    assert isinstance(product, np.ndarray) and [float(e.a) for e in product] == [2.0, 6.0]


# --------------------------------------------------------------------------------------------------------------
# Update rules


def _outer_update(S: Rows, decay: Any, strength: Any, k: list[Any], v: list[Any], erase: bool) -> Rows:
    """S <- decay * S (I - strength k k^T) + strength v k^T if erase, else decay * S + v k^T."""
    if not erase:
        return [[decay * S[i][j] + v[i] * k[j] for j in range(len(k))] for i in range(len(S))]
    Sk = [_dot(row, k) for row in S]
    return [[decay * (S[i][j] - strength * Sk[i] * k[j]) + strength * v[i] * k[j] for j in range(len(k))]
            for i in range(len(S))]


def _reference_rule(rule: str, q: Rows, k: Rows, v: Rows, a: list[Any], beta: list[Any], S: Rows
                    ) -> tuple[Rows, Rows]:
    outputs: Rows = []
    for t in range(len(q)):
        if rule == "linear":
            S = _outer_update(S, 1, 1, k[t], v[t], erase=False)
        elif rule == "gated linear":
            S = _outer_update(S, a[t], 1, k[t], v[t], erase=False)
        elif rule == "deltanet":
            S = _outer_update(S, 1, beta[t], k[t], v[t], erase=True)
        elif rule == "gated deltanet":
            S = _outer_update(S, a[t], beta[t], k[t], v[t], erase=True)
        else:
            e = beta[t] / (1 + beta[t] * _dot(k[t], k[t]))
            S = _outer_update(S, 1, e, k[t], v[t], erase=True)
        outputs.append([_dot(row, q[t]) for row in S])
    return outputs, S


RULES: dict[str, list[Callable[..., tuple[Array, Array]]]] = {
    "linear": [lambda q, k, v, a, b, S: upd.linear_attention_recurrent(q, k, v, S),
               lambda q, k, v, a, b, S: upd.linear_attention_parallel(q, k, v, S)],
    "gated linear": [lambda q, k, v, a, b, S: upd.gated_linear_attention_recurrent(q, k, v, a, S),
                     lambda q, k, v, a, b, S: upd.gated_linear_attention_parallel(q, k, v, a, S)],
    "deltanet": [lambda q, k, v, a, b, S: upd.deltanet_recurrent(q, k, v, b, S),
                 lambda q, k, v, a, b, S: upd.deltanet_parallel(q, k, v, b, S),
                 lambda q, k, v, a, b, S: upd.deltanet_chunked(q, k, v, b, S, chunk_size=3)],
    "gated deltanet": [upd.gated_deltanet_recurrent, upd.gated_deltanet_parallel,
                       lambda q, k, v, a, b, S: upd.gated_deltanet_chunked(q, k, v, a, b, S, chunk_size=3)],
    "longhorn": [lambda q, k, v, a, b, S: upd.longhorn_recurrent(q, k, v, b, S),
                 lambda q, k, v, a, b, S: upd.longhorn_parallel(q, k, v, b, S),
                 lambda q, k, v, a, b, S: upd.longhorn_chunked(q, k, v, b, S, chunk_size=3)],
}


@pytest.mark.parametrize("rule", list(RULES))
def test_interval_update_rules_enclose_an_independent_100_digit_recurrence(rule: str) -> None:
    rng = np.random.default_rng(11)
    T, d_k, d_v = 8, 3, 2
    q, k = rng.standard_normal((2, T, d_k))
    v, S0 = rng.standard_normal((T, d_v)), rng.standard_normal((d_v, d_k))
    a, beta = rng.uniform(0.5, 1.0, T), rng.uniform(0.05, 1.95, T)
    with mpmath.workdps(REFERENCE_DPS):
        o_ref, S_ref = _reference_rule(rule, _rows(q), _rows(k), _rows(v), [mpmath.mpf(float(x)) for x in a],
                                       [mpmath.mpf(float(x)) for x in beta], _rows(S0))
    with workdps(ORACLE_DPS):
        results = [form(*(to_interval(x) for x in (q, k, v, a, beta, S0))) for form in RULES[rule]]
    for index, (o, S) in enumerate(results):
        _assert_encloses(o, o_ref, f"{rule} form {index} outputs")
        _assert_encloses(S, S_ref, f"{rule} form {index} final state")


def test_interval_softmax_memory_and_sgd_forms_enclose_causal_softmax_attention() -> None:
    rng = np.random.default_rng(12)
    T, d_k, d_v = 8, 3, 2
    q, k = rng.standard_normal((2, T, d_k))
    v = rng.standard_normal((T, d_v))
    with mpmath.workdps(REFERENCE_DPS):
        o_ref = _reference_softmax_read(_rows(q), _rows(k), _rows(v), 1 / mpmath.sqrt(d_k))
    with workdps(ORACLE_DPS):
        qi, ki, vi = to_interval(q), to_interval(k), to_interval(v)
        tau = iv.sqrt(d_k)
        recurrent, _ = upd.softmax_attention_recurrent(qi, ki, vi, tau)
        parallel, _ = upd.softmax_attention_parallel(qi, ki, vi, tau)
        sgd, (_, _, c) = upd.softmax_sgd_recurrent(qi, ki, vi, tau)
    for name, o in (("recurrent", recurrent), ("parallel", parallel), ("sgd", sgd)):
        _assert_encloses(o, o_ref, f"softmax attention {name}")
    _assert_encloses(c, [mpmath.mpf(1) / T] * T, "SGD coefficients 1/T")


def test_interval_kernelised_deltanet_forms_enclose_the_state_recurrence() -> None:
    rng = np.random.default_rng(13)
    T, d_k, d_v = 7, 2, 2
    q, k = rng.standard_normal((2, T, d_k))
    v, beta = rng.standard_normal((T, d_v)), rng.uniform(-0.5, 1.95, T)

    def features(x: Rows) -> Rows:  # phi(x) = x (tensor) x, so phi(x)^T phi(y) = (x^T y)^2
        return [[a * b for a in row for b in row] for row in x]

    with mpmath.workdps(REFERENCE_DPS):
        phi_q, phi_k, v_rows = features(_rows(q)), features(_rows(k)), _rows(v)
        beta_mp = [mpmath.mpf(float(b)) for b in beta]
        S: Rows = [[mpmath.mpf(0)] * (d_k * d_k) for _ in range(d_v)]
        o_ref: Rows = []
        for t in range(T):
            residual = [_dot(row, phi_k[t]) - v_rows[t][i] for i, row in enumerate(S)]
            S = [[S[i][j] - beta_mp[t] * residual[i] * phi_k[t][j] for j in range(d_k * d_k)] for i in range(d_v)]
            o_ref.append([_dot(row, phi_q[t]) for row in S])
    with workdps(ORACLE_DPS):
        qi, ki, vi, bi = to_interval(q), to_interval(k), to_interval(v), to_interval(beta)
        o_state, _ = upd.kernel_deltanet_state_recurrent(kernels.polynomial_feature_map(qi, 2),
                                                        kernels.polynomial_feature_map(ki, 2), vi, bi)
        o_u, _ = upd.kernel_deltanet_u_form(qi, ki, vi, bi, lambda X, Y: kernels.polynomial_kernel(X, Y, 2))
    _assert_encloses(o_state, o_ref, "kernelised DeltaNet state form")
    _assert_encloses(o_u, o_ref, "kernelised DeltaNet u-form")
