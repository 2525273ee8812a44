"""The round-kernel swap tracker (claims 8 and 8c): the margin formula, the lemma "positive margin implies exact
tracking" for every T, and exact integer verification of every rounded product for the shipped codes.

Construction (docs/derivations/swap.md): box codes e_p (identity + normalised Hadamard rows, n = 2 d_k, coherence
mu = 1/sqrt(d_k)); keys e_p (place tokens) and e_a - e_b (swaps); kernel round(s x^T y) with s = 1/(1 + mu).
ehat_p is the standard basis of R^n and xhat the key built from ehat; the tracker is exact when every rounded
product equals xhat^T yhat.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import numpy.typing as npt
import sympy as sp

from proofs_checks.proofs.record import Proof, Step, Verdict, conclude, declare
from proofs_checks.proofs.symbolic import equal, nc_symbols, symbols
from spec import swap_tracking as sw

__all__ = ["PROOFS"]

SHIPPED = (64, 256)
"""d_k of the shipped codes (check C8: n = 128 and n = 512)."""


def _error_classes() -> Step:
    """Every key/query pair's (|true value|, number of coherence terms), from G = I + D over all index patterns.

    Indices range over {0, 1, 2, 3}, which realises every pattern of coincidences among a, b, c, d; D is symmetric
    with zero diagonal and |D_ij| <= mu. Each pair's error x^T y - xhat^T yhat is a signed sum of D entries.
    """
    D = sp.Matrix(4, 4, lambda i, j: 0 if i == j else sp.Symbol(f"D{min(i, j)}{max(i, j)}"))
    G = sp.eye(4) + D
    unit = sp.eye(4)
    swaps = [unit[a, :] - unit[b, :] for a in range(4) for b in range(4) if a != b]
    codes = [unit[a, :] for a in range(4)]
    classes = set()
    for x in swaps + codes:
        for y in swaps + codes:
            true = (x * y.T)[0, 0]
            error = sp.expand((x * G * y.T)[0, 0] - true)
            terms = sum(abs(coefficient) for coefficient in error.as_coefficients_dict().values()) if error else 0
            classes.add((abs(true), terms))
    binding = {(0, 4), (1, 3), (2, 2)}
    dominated = all(any(v == bv and c <= bc for bv, bc in binding) for v, c in classes)
    return Step("every pair is dominated by (true 0, 4 terms), (+-1, 3), (+-2, 2)", dominated,
                f"(|true value|, terms) classes: {sorted(classes)}")


def _margin(scale_exponent: int) -> Verdict:
    """SWAP.8/9: at s = 1/(1 + mu) the three worst-case distances are equal; m = (1 - 7 mu)/(2 (1 + mu))."""
    (mu,) = symbols("mu", positive=True)
    s = (1 + mu) ** -scale_exponent
    zero, one, two = 4 * s * mu, (1 - s) + 3 * s * mu, 2 * (1 - s) + 2 * s * mu
    steps = [
        _error_classes(),
        equal("true 0 (4 terms) = true +-1 (3 terms)", zero, one),
        equal("true +-1 = true +-2 (2 terms)", one, two),
        equal("margin 1/2 - 4 s mu = (1 - 7 mu)/(2 (1 + mu))", sp.Rational(1, 2) - zero,
              (1 - 7 * mu) / (2 * (1 + mu))),
        equal("at s = 1 the margin is 1/2 - 4 mu (the outline's mu < 1/8)", sp.Rational(1, 2) - zero.subs(s, 1),
              sp.Rational(1, 2) - 4 * mu),
    ]
    return conclude(steps, "|s x^T y - xhat^T yhat| <= |1 - s| |v| + s c mu for a true value v with c coherence "
                           "terms (triangle inequality); the binding terms move in opposite directions in s, so "
                           "their common value is the minimax;")


def _tracking(unit_keys: bool) -> Verdict:
    """Positive margin => the round tracker is DeltaNet on orthonormal codes in R^n => exact after every prefix."""
    Sa, Sb, Sc, f_a, f_b = nc_symbols("Sa Sb Sc f_a f_b")
    weight = 1 / sp.sqrt(2) if unit_keys else 1
    # Swap key khat = w (ehat_a - ehat_b); khat^T ehat_a = w, khat^T ehat_b = -w, khat^T ehat_c = 0 (c not a, b).
    u = -(weight * Sa - weight * Sb)  # u = v - S khat with v = 0, S khat = w (S ehat_a - S ehat_b)
    after = {name: before + u * inner for name, before, inner in (("a", Sa, weight), ("b", Sb, -weight),
                                                                  ("c", Sc, 0))}
    f = sp.IndexedBase("f")
    q = sp.Symbol("q", integer=True)
    p, later = sp.Symbol("p", integer=True, nonnegative=True), sp.Symbol("later", integer=True, nonnegative=True)
    steps = [
        equal("place token p: S_{p-1} ehat_p = sum_{q<p} f_q ehat_q^T ehat_p = 0, so u_p = f_p",
              sp.Sum(f[q] * sp.KroneckerDelta(q, p), (q, 0, p - 1)).doit(), 0),
        equal("after the place tokens (n = p + 1 + later): S ehat_p = f_p",
              sp.Sum(f[q] * sp.KroneckerDelta(q, p), (q, 0, p + later)).doit(), f[p]),
        equal("swap step: S' ehat_a = S ehat_b", after["a"], Sb),
        equal("swap step: S' ehat_b = S ehat_a", after["b"], Sa),
        equal("swap step: S' ehat_c = S ehat_c", after["c"], Sc),
        equal("written value u = f_pi(b) - f_pi(a) (entries in {-1, 0, 1} for one-hot objects)",
              u.subs({Sa: f_a, Sb: f_b}), f_b - f_a),
    ]
    return conclude(steps, "margin > 0 means round(s x^T y) = xhat^T yhat for every pair (|y - v| < 1/2 rounds to "
                           "the integer v), so the recurrence u_t = v_t - sum round(s k_t^T k_i) u_i and the read "
                           "are the u-form of linear DeltaNet with keys xhat (beta = 1): S_t = sum u_i xhat_i^T and "
                           "the read of box p is S_t ehat_p; invariant S_t ehat_p = f_pi_t(p), induction on tokens;")


Ints = npt.NDArray[np.int64]


def _integer_gram(d_k: int) -> tuple[Ints, int]:
    """G_int = (sqrt(d_k) E)(sqrt(d_k) E)^T for the codes E (integer entries: sqrt(d_k) e_i and Hadamard +-1)."""
    root = round(d_k**0.5)
    if root * root != d_k:
        raise ValueError(f"d_k must be a perfect square for exact codes, got {d_k}")
    codes = sw.hadamard_codes(d_k)
    integer_codes = np.rint(codes * root).astype(np.int64)
    if not np.array_equal(integer_codes, codes * root):
        raise ValueError("the codes times sqrt(d_k) are not integers")
    return integer_codes @ integer_codes.T, root


def _worst_numerator(G: Ints, scaled_identity: int, numerator: int) -> int:
    """max over every key/query pair of |numerator x^T y|_G - scaled_identity xhat^T yhat| (integers)."""
    n = G.shape[0]
    worst = int(np.abs(numerator * G - scaled_identity * np.eye(n, dtype=np.int64)).max())  # e_p with e_q
    for a in range(n - 1):
        # r[b', c] for the swap key e_a - e_b, b = a + 1 + b': numerator (G_a - G_b) - scaled_identity (ehat_a - ehat_b)
        r = numerator * (G[a][None, :] - G[a + 1:])
        r[:, a] -= scaled_identity
        r[np.arange(n - a - 1), np.arange(a + 1, n)] += scaled_identity
        worst = max(worst, int(np.abs(r).max()), int((r.max(axis=1) - r.min(axis=1)).max()))
    return worst


def _shipped_codes(scaled: bool) -> Verdict:
    """Exact: unit codes, mu = 1/sqrt(d_k), margin, and every rounded product of the trackers at d_k = 64, 256."""
    steps: list[Step] = []
    for d_k in SHIPPED:
        G, root = _integer_gram(d_k)
        n = G.shape[0]
        off_diagonal = np.abs(G[~np.eye(n, dtype=bool)])
        mu = Fraction(int(off_diagonal.max()), d_k)
        s = 1 / (1 + mu) if scaled else Fraction(1)
        margin = Fraction(1, 2) - max(4 * s * mu, abs(1 - s) + 3 * s * mu, 2 * abs(1 - s) + 2 * s * mu)
        # s x^T y - xhat^T yhat = (s.num * x^T y|_G - s.den * d_k * xhat^T yhat) / (s.den * d_k)
        worst = Fraction(_worst_numerator(G, s.denominator * d_k, s.numerator), s.denominator * d_k)
        spec_margin = sw.round_margin(float(mu), float(s))
        holds = bool((np.diag(G) == d_k).all()) and mu == Fraction(1, root) and worst < Fraction(1, 2) and \
            worst <= Fraction(1, 2) - margin and margin > 0 and abs(spec_margin - float(margin)) <= 1e-15
        steps.append(Step(f"d_k={d_k}, n={n}", holds, f"unit norms, mu = {mu}, s = {s}, margin = {margin} (spec "
                                                      f"{spec_margin:.6f}), worst |s x^T y - xhat^T yhat| = {worst}"
                                                      f" over every pair of keys/queries (< 1/2 needed)"))
    return conclude(steps, "integer Gram matrix of sqrt(d_k) x codes; swap keys e_a - e_b (all pairs) and codes "
                           "e_p as keys and queries;")


PROOFS: tuple[Proof, ...] = (
    declare("SWAP.9", "at s = 1/(1 + mu) the worst-case rounding distances of the three key-pair classes are equal, "
            "and the margin is (1 - 7 mu)/(2 (1 + mu)) > 0 iff mu < 1/7", "C8c", "symbolic",
            "all mu in [0, 1) (symbolic), any unit codes", lambda: _margin(1), "s = 1/(1 + mu)^2",
            lambda: _margin(2)),
    declare("SWAP.10-11", "positive margin implies exact tracking: the round tracker's u and reads equal linear "
            "DeltaNet's on orthonormal codes in R^n, whose reads are f_pi_t(p) after every prefix", "C8",
            "symbolic", "all T and all n (induction on tokens), any codes with positive margin",
            lambda: _tracking(unit_keys=False), "unit swap keys (e_a - e_b)/sqrt 2 with beta = 1 (a projection)",
            lambda: _tracking(unit_keys=True)),
    declare("SWAP.6-codes", "identity + Hadamard codes at d_k = 64 and 256: unit norms, mu = 1/sqrt(d_k), margin "
            "1/18 and 9/34, and every rounded product s x^T y of the trackers' keys and queries within 1/2 of the "
            "orthonormal value (worst 4/9 and 4/17)", "C8c", "exact", "d_k = 64 (n = 128) and d_k = 256 "
            "(n = 512), every key/query pair", lambda: _shipped_codes(scaled=True),
            "the unscaled kernel s = 1", lambda: _shipped_codes(scaled=False)),
)
