"""DF.*: DeltaFormer's equivalent forms agree, the float64 spec agrees with mpmath, decoding equals the full pass.

Three independent witnesses of the same numbers:
1. the five forms of u inside the spec (recurrence, LU solve, chunked, Neumann, repeated squaring);
2. the same spec code run at 60 digits with mpmath (the precision-generic oracle);
3. ``_independent_u`` / ``_independent_attn`` below: the recurrence written again with Python lists and mpmath
   scalars, sharing no code with the spec, so a bug common to all spec forms (say a wrong normaliser) is caught.

Float64 error model (componentwise, for comparing any two forms or float64 against mpmath). Write A = diag(beta) P
and M = I + A (unit lower triangular). Substitution is backward stable: the computed u solves (M + dM) u = v with
|dM| <= gamma |M|, so |du| <= gamma |M^-1| |M| |u| <= gamma (I - |A|)^-1 (I + |A|) |u|, using
|M^-1| = |sum_n (-A)^n| <= sum_n |A|^n = (I - |A|)^-1 (finite: A is nilpotent). The entries of P carry their own
rounding, |dP| <= (d_k + 2 + max|s|) eps |P| for scores s (the exp's relative error grows with |s|), which moves u by
at most (I - |A|)^-1 |beta| |dP| |u|. Summing the n-term Neumann series or forming the repeated-squaring products
adds at most T log2(T) eps (I - |A|)^-1 |V| per entry. With gamma = (2 T + d_k + max|s| + T log2 T + 4) eps the
budget for the difference of two computed results is 2 gamma G, G = (I - |A|)^-1 ((I + |A|) |u| + |V|).
The LU solve (DF.3) pivots: on a unit lower-triangular M with large sub-diagonal entries, partial pivoting swaps rows
and the factors can grow, so its backward error is |dM| <= gamma_3T |L||U| (Higham, Accuracy and Stability, Thm 9.3),
not gamma |M|. Its budget adds gamma_3T (I - |A|)^-1 |L||U| |u|, with L, U the factors of the same pivoted
elimination (``_gepp_abs_factors``). The chunked form (DF.4) solves each diagonal block the same way, so its budget
adds the same term with |L||U| of each diagonal block in place of that block of |M| (``_lu_term``).
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
from hypothesis import assume, example, given, target
from hypothesis import strategies as st

from spec import deltaformer as df
from spec import precision
from spec._types import Array

EPS = 2.0**-53
PRIMES_AND_EDGES = [1, 2, 3, 5, 7, 11, 13, 17, 23, 31]


def _beta(rng: np.random.Generator, regime: str, T: int) -> Array:
    if regime == "unit":
        return rng.uniform(0, 1, T) * (1 - 1e-12) + 1e-12  # (0, 1]
    if regime == "below_two":
        return rng.uniform(1e-12, 2, T)  # (0, 2)
    return rng.normal(0, 1.5, T)  # unconstrained, either sign


@st.composite
def problems(draw: st.DrawFn, max_t: int = 31) -> dict[str, object]:
    """Sizes and regimes from Hypothesis, values from a seeded generator (shrinks toward small, simple cases)."""
    T = draw(st.one_of(st.sampled_from([t for t in PRIMES_AND_EDGES if t <= max_t]), st.integers(1, max_t)))
    d_k, d_v = draw(st.integers(1, 6)), draw(st.integers(1, 4))
    kernel = draw(st.sampled_from(df.KERNELS))
    regime = draw(st.sampled_from(["unit", "below_two", "free"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    q, k = rng.standard_normal((2, T, d_k))
    v = rng.standard_normal((T, d_v))
    beta = _beta(rng, regime, T)
    write = draw(st.sampled_from(["k", "q"]))
    w = k if write == "k" else q
    if kernel == "round":
        # The round kernel is discontinuous at half-integers: two orderings of the same dot product may round to
        # different integers there. Keep scores a margin away from ties (no tie has positive probability).
        s = w @ k.T
        assume(float(np.min(np.abs(s - np.floor(s) - 0.5))) > 1e-9)
    if kernel == "exp":
        # exp scores up to e^(|s|); keep |s| moderate so the test measures rounding, not overflow.
        assume(float(np.max(np.abs(w @ k.T))) / math.sqrt(d_k) < 30)
    return {"q": q, "k": k, "v": v, "beta": beta, "w": w, "kernel": kernel, "write": write, "seed": seed,
            "regime": regime}


def _budget(P: Array, v: Array, u: Array, beta: Array, max_score: float) -> Array:
    """2 gamma G of the module docstring, componentwise [T, d_v]."""
    T, d_k = P.shape[0], v.shape[1]
    A_abs = np.abs(beta[:, None] * P)
    G = np.linalg.solve(np.eye(T) - A_abs, (np.eye(T) + A_abs) @ np.abs(u) + np.abs(v))
    gamma = (2 * T + d_k + max_score + T * math.log2(max(T, 2)) + 4) * EPS
    return 2 * gamma * G


def _gepp_abs_factors(M: Array) -> Array:
    """|L||U| of Gaussian elimination with partial pivoting of M, rows in the original order (Skeel's bound)."""
    n = M.shape[0]
    U = M.astype(np.float64).copy()
    L = np.eye(n)
    order = np.arange(n)
    for col in range(n - 1):
        pivot = col + int(np.argmax(np.abs(U[col:, col])))
        U[[col, pivot]], order[[col, pivot]] = U[[pivot, col]], order[[pivot, col]]
        L[[col, pivot], :col] = L[[pivot, col], :col]
        L[col + 1:, col] = U[col + 1:, col] / U[col, col]
        U[col + 1:] -= L[col + 1:, col:col + 1] * U[col]
    product = np.abs(L) @ np.abs(np.triu(U))
    restored = np.empty_like(product)
    restored[order] = product
    return restored


def _lu_term(A: Array, u: Array, chunk: int) -> Array:
    """gamma_3C (I - |A|)^-1 F |u|, F = |M| with each diagonal C-block replaced by its pivoted |L||U|."""
    T = A.shape[0]
    M = np.eye(T) + A
    F = np.abs(M)
    for s in range(0, T, chunk):
        e = min(s + chunk, T)
        F[s:e, s:e] = _gepp_abs_factors(M[s:e, s:e])
    gamma = 3 * chunk * EPS / (1 - 3 * chunk * EPS)
    return gamma * np.linalg.solve(np.eye(T) - np.abs(A), F @ np.abs(u))


def _ratio(a: Array, b: Array, budget: Array) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(budget, np.finfo(float).tiny)))


@given(problems())
@example({"q": np.ones((1, 1)), "k": np.ones((1, 1)), "v": np.ones((1, 1)), "beta": np.ones(1), "w": np.ones((1, 1)),
          "kernel": "softmax", "write": "k", "seed": 0, "regime": "unit"})
def test_every_form_of_u_agrees_with_the_recurrence_within_the_error_model(p: dict[str, object]) -> None:
    w, k, v, beta, kernel = p["w"], p["k"], p["v"], p["beta"], str(p["kernel"])
    assert isinstance(w, np.ndarray) and isinstance(k, np.ndarray) and isinstance(v, np.ndarray)
    assert isinstance(beta, np.ndarray)
    scale = df.default_scale(kernel, k.shape[1], v)
    u = df.deltaformer_u(w, k, v, beta, kernel=kernel)
    P = df.write_scores(w, k, kernel=kernel, scale=scale)
    budget = _budget(P, v, u, beta, float(np.max(np.abs(w @ k.T))) * scale)
    T = v.shape[0]
    forms = {"solve": df.deltaformer_u_solve(P, v, beta), "neumann": df.deltaformer_u_neumann(P, v, beta),
             "squaring": df.deltaformer_u_inverse_by_squaring(P, v, beta)}
    # every chunk size, including ones that do not divide T and ones larger than T
    forms |= {f"chunked C={c}": df.deltaformer_u_chunked(P, v, beta, c) for c in range(1, T + 2)}
    lu_terms = {"solve": _lu_term(beta[:, None] * P, u, T)}
    lu_terms |= {f"chunked C={c}": _lu_term(beta[:, None] * P, u, c) for c in range(1, T + 2)}
    ratios = {name: _ratio(form, u, budget + lu_terms.get(name, 0)) for name, form in forms.items()}
    worst = max(ratios, key=ratios.__getitem__)
    target(ratios[worst], label="error / budget")
    assert ratios[worst] <= 1.0, f"{worst}: error is {ratios[worst]:.2f} x budget (seed {p['seed']}, {kernel})"


def _independent_u(w: list[list[float]], k: list[list[float]], v: list[list[float]], beta: list[float], kernel: str,
                   scale: mpmath.mpf) -> list[list[mpmath.mpf]]:
    """The DF.1 recurrence with Python lists and mpmath scalars; shares no code with the spec."""
    u: list[list[mpmath.mpf]] = []
    for t in range(len(v)):
        scores = [scale * mpmath.fsum(mpmath.mpf(a) * mpmath.mpf(b) for a, b in zip(w[t], k[j], strict=True))
                  for j in range(t)]
        if kernel == "softmax":
            weights = [mpmath.exp(s) for s in scores]
            total = mpmath.fsum(weights)
            similarity = [x / total for x in weights]
        elif kernel == "exp":
            similarity = [mpmath.exp(s) for s in scores]
        elif kernel == "linear":
            similarity = scores
        else:
            similarity = [mpmath.nint(s) for s in scores]
        u.append([mpmath.mpf(v[t][c]) - mpmath.mpf(beta[t]) * mpmath.fsum(similarity[j] * u[j][c] for j in range(t))
                  for c in range(len(v[t]))])
    return u


def _independent_attn(q: list[list[float]], k: list[list[float]], u: list[list[mpmath.mpf]],
                      scale: mpmath.mpf) -> list[list[mpmath.mpf]]:
    """DF.8 with Python lists: o_t = sum_{j<=t} softmax_j(scale q_t . k_j) u_j."""
    out = []
    for t in range(len(u)):
        scores = [mpmath.fsum(mpmath.mpf(a) * mpmath.mpf(b) for a, b in zip(q[t], k[j], strict=True))
                  for j in range(t + 1)]
        weights = [mpmath.exp(scale * s) for s in scores]
        total = mpmath.fsum(weights)
        out.append([mpmath.fsum(weights[j] * u[j][c] for j in range(t + 1)) / total for c in range(len(u[0]))])
    return out


def _max_diff(a: Array, b: list[list[mpmath.mpf]]) -> mpmath.mpf:
    return max(abs(a[i, j] - b[i][j]) for i in range(a.shape[0]) for j in range(a.shape[1]))


@pytest.mark.parametrize("write", ["k", "q"])
@pytest.mark.parametrize("kernel", df.KERNELS)
def test_deltaformer_attn_agrees_with_an_independent_60_digit_recurrence(kernel: str, write: str) -> None:
    rng = np.random.default_rng(sum(map(ord, kernel + write)))
    T, d_k, d_v = 7, 3, 2
    q, k = rng.standard_normal((2, T, d_k))
    v = rng.standard_normal((T, d_v))
    beta = rng.uniform(0.1, 1.9, T)
    w = k if write == "k" else q
    with precision.workdps(60):
        write_scale = 1 / mpmath.sqrt(d_k) if kernel in ("softmax", "exp") else mpmath.mpf(1)
        u_ref = _independent_u(w.tolist(), k.tolist(), v.tolist(), beta.tolist(), kernel, write_scale)
        o_ref = _independent_attn(q.tolist(), k.tolist(), u_ref, 1 / mpmath.sqrt(d_k))
        o_spec = df.deltaformer_attn(*(precision.to_mp(x) for x in (q, k, v, beta)), write=write, kernel=kernel)
        u_spec = df.deltaformer_u(*(precision.to_mp(x) for x in (w, k, v, beta)), kernel=kernel)
        # Both are exact up to 60-digit rounding of O(T^2 d) operations on O(1..100) numbers: 1e-40 is
        # conservative by ~15 digits, and a float64 contamination anywhere would show as ~1e-16.
        assert _max_diff(u_spec, u_ref) < mpmath.mpf(10) ** -40
        assert _max_diff(o_spec, o_ref) < mpmath.mpf(10) ** -40
    # float64 spec against the same independent reference, within the module's error model (max-norm form)
    o64 = df.deltaformer_attn(q, k, v, beta, write=write, kernel=kernel)
    o_ref64 = np.array([[float(x) for x in row] for row in o_ref])
    u_ref64 = np.array([[float(x) for x in row] for row in u_ref])
    P = df.write_scores(w, k, kernel=kernel, scale=float(write_scale))
    u_budget = _budget(P, v, u_ref64, beta, float(np.max(np.abs(w @ k.T))))
    # the read-out is a convex combination of u rows: its error is at most the largest u error plus the softmax
    # weights' own rounding (d_k + T) eps times max|u|
    read_budget = float(np.max(u_budget)) + (d_k + T + 4) * EPS * float(np.max(np.abs(u_ref64)))
    assert float(np.max(np.abs(o64 - o_ref64))) <= read_budget


@given(problems(max_t=8))
def test_float64_spec_agrees_with_its_own_60_digit_run(p: dict[str, object]) -> None:
    w, k, v, beta, kernel = p["w"], p["k"], p["v"], p["beta"], str(p["kernel"])
    assert isinstance(w, np.ndarray) and isinstance(k, np.ndarray) and isinstance(v, np.ndarray)
    assert isinstance(beta, np.ndarray)
    u64 = df.deltaformer_u(w, k, v, beta, kernel=kernel)
    with precision.workdps(60):
        u_mp = precision.to_float64(df.deltaformer_u(*(precision.to_mp(x) for x in (w, k, v, beta)), kernel=kernel))
    scale = df.default_scale(kernel, k.shape[1], v)
    P = df.write_scores(w, k, kernel=kernel, scale=scale)
    ratio = _ratio(u64, u_mp, _budget(P, v, u_mp, beta, float(np.max(np.abs(w @ k.T))) * scale))
    target(ratio, label="error / budget")
    assert ratio <= 1.0


def test_every_form_agrees_to_1e_40_at_60_digits() -> None:
    rng = np.random.default_rng(60)
    T, d_k, d_v = 6, 3, 2
    for kernel in df.KERNELS:
        w, k = rng.standard_normal((2, T, d_k))
        v = rng.standard_normal((T, d_v))
        beta = rng.uniform(0.1, 1.9, T)
        with precision.workdps(60):
            w_, k_, v_, b_ = (precision.to_mp(x) for x in (w, k, v, beta))
            u = df.deltaformer_u(w_, k_, v_, b_, kernel=kernel)
            P = df.write_scores(w_, k_, kernel=kernel, scale=df.default_scale(kernel, d_k, v_))
            forms = [df.deltaformer_u_solve(P, v_, b_), df.deltaformer_u_neumann(P, v_, b_),
                     df.deltaformer_u_inverse_by_squaring(P, v_, b_)]
            forms += [df.deltaformer_u_chunked(P, v_, b_, c) for c in (1, 4, 5, 7)]
            for form in forms:
                assert form.dtype == object
                assert max(abs(x) for x in (form - u).flat) < mpmath.mpf(10) ** -40, kernel


@given(problems(max_t=17))
def test_decoding_token_by_token_equals_the_full_forward(p: dict[str, object]) -> None:
    q, k, v, beta = p["q"], p["k"], p["v"], p["beta"]
    assert isinstance(q, np.ndarray) and isinstance(k, np.ndarray) and isinstance(v, np.ndarray)
    assert isinstance(beta, np.ndarray)
    kernel, write = str(p["kernel"]), str(p["write"])
    o = df.deltaformer_attn(q, k, v, beta, write=write, kernel=kernel)
    cache_k, cache_u = np.zeros((0, k.shape[1])), np.zeros((0, v.shape[1]))
    u = df.deltaformer_u(q if write == "q" else k, k, v, beta, kernel=kernel)
    T, d_k = k.shape
    # u rows are computed by the same operations in the same order (write_similarity_row), so the caches are equal
    # to the last bit. The read-out's scores are q_t . k_j once as a row of Q K^T and once as K q_t, which BLAS may
    # round differently: |ds| <= (d_k + 1) eps max|s| each, moving the softmax weights by at most 2 max|ds| in sum,
    # plus (T + 2) eps for normalising, so |do| <= (4 (d_k + 1) max|s| + 2 T + 4) eps max|u|.
    max_score = float(np.max(np.abs(q @ k.T))) / math.sqrt(d_k)
    budget = (4 * (d_k + 1) * max_score + 2 * T + 4) * EPS * float(np.max(np.abs(u)))
    for t in range(T):
        o_t, cache_k, cache_u = df.deltaformer_decode_step(cache_k, cache_u, q[t], k[t], v[t], beta[t], write=write,
                                                           kernel=kernel)
        assert float(np.max(np.abs(o_t - o[t]))) <= budget
    np.testing.assert_array_equal(cache_u, u)


@given(problems(max_t=13), st.integers(0, 12))
def test_outputs_before_t_do_not_depend_on_tokens_after_t(p: dict[str, object], cut: int) -> None:
    q, k, v, beta = (np.array(p[name]) for name in ("q", "k", "v", "beta"))
    T = v.shape[0]
    assume(cut < T - 1)
    o = df.deltaformer_attn(q, k, v, beta, write=str(p["write"]), kernel=str(p["kernel"]))
    rng = np.random.default_rng(1)
    q2, k2, v2 = q.copy(), k.copy(), v.copy()
    q2[cut + 1:], k2[cut + 1:], v2[cut + 1:] = rng.standard_normal((3, T - cut - 1, 1))
    o2 = df.deltaformer_attn(q2, k2, v2, beta, write=str(p["write"]), kernel=str(p["kernel"]))
    np.testing.assert_array_equal(o2[: cut + 1], o[: cut + 1])


def test_one_token_gives_v_and_first_row_is_v() -> None:
    v = np.array([[1.5, -2.0]])
    for kernel in df.KERNELS:
        np.testing.assert_array_equal(df.deltaformer_u([[0.3]], [[0.7]], v, kernel=kernel), v)
        np.testing.assert_array_equal(df.deltaformer_attn([[0.3]], [[0.7]], v, kernel=kernel), v)
    rng = np.random.default_rng(0)
    w, k, v3 = rng.standard_normal((3, 5, 2))
    np.testing.assert_array_equal(df.deltaformer_u(w, k, v3)[0], v3[0])


def test_orthonormal_keys_write_nothing_to_subtract_with_the_linear_kernel() -> None:
    # kappa_1(k_t, k_j) = k_t . k_j = 0 for j < t, so u = v exactly, for any beta.
    keys = np.linalg.qr(np.random.default_rng(3).standard_normal((6, 6)))[0]
    v = np.random.default_rng(4).standard_normal((6, 3))
    u = df.deltaformer_u(keys, keys, v, np.full(6, 1.7), kernel="linear")
    np.testing.assert_allclose(u, v, rtol=0, atol=16 * EPS * float(np.max(np.abs(v))))


def test_softmax_write_rows_are_probabilities_over_earlier_tokens() -> None:
    rng = np.random.default_rng(5)
    w, k = rng.standard_normal((2, 9, 4))
    P = df.write_scores(w, k, kernel="softmax", scale=0.5)
    np.testing.assert_array_equal(P[0], np.zeros(9))
    np.testing.assert_allclose(P[1:].sum(axis=1), 1.0, rtol=0, atol=9 * EPS)
    assert np.all(np.triu(P) == 0) and np.all(P >= 0)


def test_scale_none_means_inverse_sqrt_d_for_softmax_and_one_for_linear() -> None:
    rng = np.random.default_rng(6)
    q, k = rng.standard_normal((2, 5, 4))
    v = rng.standard_normal((5, 2))
    np.testing.assert_array_equal(df.deltaformer_u(k, k, v, kernel="softmax"),
                                  df.deltaformer_u(k, k, v, kernel="softmax", scale=0.5))
    np.testing.assert_array_equal(df.deltaformer_u(k, k, v, kernel="linear"),
                                  df.deltaformer_u(k, k, v, kernel="linear", scale=1.0))
    # a given scale is used for the read-out as well; None reads with 1/sqrt(d) even for the linear write
    assert not np.array_equal(df.deltaformer_attn(q, k, v, kernel="linear"),
                              df.deltaformer_attn(q, k, v, kernel="linear", scale=1.0))
    np.testing.assert_array_equal(df.deltaformer_attn(q, k, v, kernel="softmax"),
                                  df.deltaformer_attn(q, k, v, kernel="softmax", scale=0.5))


def test_inverse_by_squaring_is_exact_in_exact_arithmetic_but_not_in_float32() -> None:
    # DF.6's caveat: in low precision the powers of A grow and cancel. Stated, then measured: at c = 64 with a
    # previous-token write and beta = 1.9 the float32 evaluation loses most digits, the float64 one far fewer.
    c = 64
    P = np.diag(np.ones(c - 1), -1)
    beta = np.full(c, 1.9)
    v = np.ones((c, 1))
    exact = df.deltaformer_u_solve(P, v, beta)
    X32 = df.deltaformer_u_inverse_by_squaring(P.astype(np.float32), np.eye(c, dtype=np.float32),
                                               beta.astype(np.float32)).astype(np.float64) @ v
    rel32 = float(np.max(np.abs(X32 - exact)) / np.max(np.abs(exact)))
    rel64 = float(np.max(np.abs(df.deltaformer_u_inverse_by_squaring(P, v, beta) - exact)) / np.max(np.abs(exact)))
    assert rel64 < 1e-12 < rel32 or rel32 > 1e3 * rel64
