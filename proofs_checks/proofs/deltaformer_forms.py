"""The DeltaFormer write's equivalent forms (claims 6 and 7) and the growth of u (claim 12), proved for every T.

Notation (docs/derivations/deltaformer.md): M = I + diag(beta) P with P strictly lower triangular (any write
kernel: softmax, exp, linear, round all give such a P), M U = V stacks the recurrence DF.1. The inductions work on
blocks with noncommutative symbols, so one check covers every block size: a leading block (the rows already
solved) and the next block (one token, or one chunk of any size). Lower triangularity is what makes the leading
rows of M U = V a system in the leading unknowns only.
"""

from __future__ import annotations

import itertools

import sympy as sp

from proofs_checks.proofs.record import Proof, Step, Verdict, conclude, declare
from proofs_checks.proofs.symbolic import Expr, equal, nc_symbols, symbols

__all__ = ["PROOFS"]


def _unit_lower_inverse() -> list[Step]:
    """Every unit lower-triangular L is invertible and L^-1 is unit lower triangular (induction on the size).

    Base: size 1, L = [1]. Step: [[L, 0], [l, 1]] has the inverse [[L^-1, 0], [-l L^-1, 1]] (checked on both
    sides), which is unit lower triangular when L^-1 is.
    """
    L, row = nc_symbols("L row")
    grown = sp.Matrix([[L, 0], [row, 1]])
    inverse = sp.Matrix([[L**-1, 0], [-row * L**-1, 1]])
    return [
        equal("inverse base (size 1)", sp.Matrix([[1]]) * sp.Matrix([[1]]), sp.eye(1)),
        equal("inverse step, right", grown * inverse, sp.eye(2)),
        equal("inverse step, left", inverse * grown, sp.eye(2)),
    ]


def _block_step(M11: Expr, B2: Expr, P21: Expr, M22: Expr, V1: Expr, V2: Expr, rhs: Expr) -> Step:
    """Rows [0, e) of M U = V hold when U1 = M11^-1 V1 (hypothesis) and U2 = M22^-1 rhs (the block's solve)."""
    U1 = M11**-1 * V1
    U2 = M22**-1 * rhs
    M = sp.Matrix([[M11, 0], [B2 * P21, M22]])
    return equal("block step: M[:e, :e] [U1; U2] = [V1; V2]", M * sp.Matrix([U1, U2]), sp.Matrix([V1, V2]))


def _chunked(beta_on_earlier_chunks: bool) -> Verdict:
    """DF.4 = DF.3 for every partition: induction on chunks, the chunk being a block of any size."""
    M11, B2, P21, M22, V1, V2 = nc_symbols("M11 B2 P21 M22 V1 V2")
    U1 = M11**-1 * V1
    earlier = (B2 if beta_on_earlier_chunks else 1) * P21 * U1
    steps = _unit_lower_inverse()
    steps.append(equal("base: first chunk (no earlier rows), M22 U2 = V2", M22 * (M22**-1 * V2), V2))
    steps.append(_block_step(M11, B2, P21, M22, V1, V2, V2 - earlier))
    return conclude(steps, "M22 = I + diag(beta_c) P[c, c] is unit lower triangular, hence invertible (lemma); "
                           "hypothesis: the earlier rows hold U1 = M11^-1 V1; chunk step U2 = M22^-1 (V2 - "
                           "diag(beta_c) P[c, :s] U1).")


def _recurrence(beta_in_recurrence: bool) -> Verdict:
    """DF.1 = DF.3: the token recurrence is block forward substitution with blocks of one token."""
    M11, P21, V1, v = nc_symbols("M11 P21 V1 v")
    (beta,) = symbols("beta")
    U1 = M11**-1 * V1
    token = v - (beta if beta_in_recurrence else 1) * P21 * U1
    steps = _unit_lower_inverse()
    # One token: its diagonal block is 1 + beta * P[t, t] = 1 (P strictly lower), its row of P is P21.
    steps.append(equal("token step: row t of M U = V", beta * P21 * U1 + 1 * token, v))
    steps.append(equal("base: t = 0, u_0 = v_0 (P has no entry left of the diagonal)", v, v))
    return conclude(steps, "hypothesis: u_{<t} = M[:t, :t]^-1 V[:t]; step: u_t = v_t - beta_t P[t, :t] u_{<t} "
                           "(DF.1) solves row t.")


def _strictly_lower_powers() -> list[Step]:
    """A strictly lower of size T has A^T = 0 (outer induction on T, inner induction on the power n).

    Split A of size T + 1 as [[A1, 0], [a, 0]] (A1 strictly lower of size T, a the last row). Inner claim:
    A^n = [[X A1, 0], [a X, 0]] with X = A1^(n-1): base n = 1 (X = I), step A^(n+1) = A^n A. Outer: at n = T + 1,
    X = A1^T = 0 by hypothesis, so A^(T+1) = 0. Also diag(beta) P is strictly lower when P is.
    """
    A1, a, X, B1, P1, p = nc_symbols("A1 a X B1 P1 p")
    (b,) = symbols("b")
    A = sp.Matrix([[A1, 0], [a, 0]])
    power = sp.Matrix([[X * A1, 0], [a * X, 0]])
    next_power = sp.Matrix([[(X * A1) * A1, 0], [a * (X * A1), 0]])
    return [
        equal("diag(beta) P keeps the block form [[B1 P1, 0], [b p, 0]]",
              sp.Matrix([[B1, 0], [0, b]]) * sp.Matrix([[P1, 0], [p, 0]]), sp.Matrix([[B1 * P1, 0], [b * p, 0]])),
        equal("power base n = 1", power.subs(X, 1), A),
        equal("power step A^n A = form at n + 1", power * A, next_power),
        equal("outer step: A1^T = 0 gives A^(T+1) = 0", power.subs(X, 0), sp.zeros(2, 2)),
        equal("outer base T = 1: A = [0]", sp.Matrix([[0]]) ** 1, sp.zeros(1, 1)),
    ]


def _neumann(sign: int) -> Verdict:
    """DF.5: (I + A) sum_{n<k} (-A)^n = I - (-A)^k for every k (induction on k), so the sum is (I + A)^-1 at k = T."""
    A, X = nc_symbols("A X")
    # Hypothesis (I + A) S_k = I - X with X = (-A)^k; S_{k+1} = S_k + X and (-A)^(k+1) = -A X.
    residual_step = (1 + A) * X + (1 - X) - (1 - (sign * A) * X)
    steps = _strictly_lower_powers()
    steps.append(equal("telescoping base k = 0: (I + A) 0 = I - (-A)^0", (1 + A) * 0, 1 - 1))
    steps.append(equal("telescoping step: (I + A)(S_k + X) = I - (-A) X", residual_step, 0))
    return conclude(steps, "A = diag(beta) P is strictly lower (so A^T = 0) and (I + A) S_T = I - (-A)^T = I, "
                           "hence S_T = (I + A)^-1 and U = S_T V.")


def _squaring(first_factor_sign: int, later_factor_sign: int) -> Verdict:
    """DF.6: (I + A) P_m = I - A^(2^m) for every m >= 1 (induction on m); P_m = (I + A)^-1 once 2^m >= T."""
    A, X = nc_symbols("A X")
    base = (1 + A) * (1 + first_factor_sign * A)
    # Hypothesis (I + A) P_m = I - X with X = A^(2^m); P_{m+1} = P_m (I + X), and X X = A^(2^(m+1)).
    step = (1 - X) * (1 + later_factor_sign * X)
    steps = [
        equal("base m = 1: (I + A)(I - A) = I - A^2", base, 1 - A * A),
        equal("step: (I + A) P_m (I + A^(2^m)) = (I - X)(I + X) = I - X^2", step, 1 - X * X),
        *_strictly_lower_powers(),
    ]
    return conclude(steps, "the spec multiplies P_{m+1} = P_m (I + A^(2^m)) with A^(2^m) by squaring; when "
                           "2^m >= T, A^(2^m) = A^T A^(2^m - T) = 0, so (I + A) P_m = I.")


def _explicit_forms(drop_beta_in_chunks: bool) -> Verdict:
    """All five forms as explicit rational functions of symbolic P entries and beta, T <= 4, every partition."""
    steps: list[Step] = []
    for T in range(1, 5):
        p = {(i, j): sp.Symbol(f"p{i}{j}") for i in range(T) for j in range(i)}
        beta = sp.symbols(f"b0:{T}")
        v = sp.Matrix(sp.symbols(f"v0:{T}"))
        P = sp.Matrix([[p.get((i, j), 0) for j in range(T)] for i in range(T)])
        B = sp.diag(*beta)
        u = sp.zeros(T, 1)
        for t in range(T):
            u[t] = v[t] - beta[t] * sum((P[t, j] * u[j] for j in range(t)), sp.Integer(0))
        forms = {"solve": (sp.eye(T) + B * P).LUsolve(v)}
        A = B * P
        forms["neumann"] = sum((((-A) ** n) * v for n in range(T)), sp.zeros(T, 1))
        inverse, power = sp.eye(T) - A, A
        for _ in range(1, max(1, (T - 1).bit_length())):
            power = power * power
            inverse = inverse * (sp.eye(T) + power)
        forms["squaring"] = inverse * v
        for cuts in itertools.product((False, True), repeat=T - 1):
            starts = [0] + [i + 1 for i, cut in enumerate(cuts) if cut] + [T]
            chunked = sp.zeros(T, 1)
            for s, e in itertools.pairwise(starts):
                beta_c = B[s:e, s:e]
                rhs = v[s:e, :] - (beta_c if not drop_beta_in_chunks else sp.eye(e - s)) * P[s:e, :s] * chunked[:s, :]
                chunked[s:e, :] = (sp.eye(e - s) + beta_c * P[s:e, s:e]).LUsolve(rhs)
            forms[f"chunks {[e - s for s, e in itertools.pairwise(starts)]}"] = chunked
        for name, form in forms.items():
            step = equal(f"T={T} {name}", form, u)
            if not step.holds:
                return conclude([step])
        steps.append(Step(f"T={T}", True, f"{len(forms)} forms equal the recurrence"))
    return conclude(steps, "every entry of P and beta a free symbol:")


def _growth(sign_alternates: bool) -> Verdict:
    """C12: the previous-token write with v_t = (-1)^t gives u_t = (-1)^t sum_{n<=t} b^n, every t (induction).

    Also the bound's recursion: V + b V sum_{n<t} b^n = V sum_{n<=t} b^n (the algebra of the bound's induction step;
    its inequality step |sum_j p_tj u_j| <= max_j |u_j| holds because row t of the softmax P is a probability vector).
    """
    b, V = symbols("b V")
    t = sp.Symbol("t", integer=True, positive=True)
    n = sp.Symbol("n", integer=True, nonnegative=True)
    geometric = sp.Sum(b**n, (n, 0, t - 1))
    target = sp.Sum(b**n, (n, 0, t))
    previous = (-1) ** (t - 1) * geometric
    v_t = (-1) ** t if sign_alternates else 1
    steps = [
        equal("attainment base t = 0: u_0 = v_0 = 1 = sum_{n<=0} b^n", sp.Sum(b**n, (n, 0, 0)).doit(), 1),
        equal("attainment step: v_t - b u_{t-1} = (-1)^t sum_{n<=t} b^n", v_t - b * previous,
              (-1) ** t * target),
        equal("bound step: V + b V sum_{n<t} b^n = V sum_{n<=t} b^n", V + b * V * geometric, V * target),
    ]
    return conclude(steps, "hypothesis u_{t-1} = (-1)^(t-1) sum_{n<t} b^n;")


PROOFS: tuple[Proof, ...] = (
    declare("DF.1=DF.3", "the token recurrence u_t = v_t - beta_t sum_{j<t} P_tj u_j equals U = (I + diag(beta) "
            "P)^-1 V for every strictly lower P (every write kernel) and every beta",
            "C6", "symbolic", "all T (induction on tokens; unit-lower inverse by induction on size)",
            lambda: _recurrence(beta_in_recurrence=True),
            "the recurrence without beta_t equals the solve", lambda: _recurrence(beta_in_recurrence=False)),
    declare("DF.4=DF.3", "block forward substitution over chunks of any sizes equals (I + diag(beta) P)^-1 V",
            "C6", "symbolic", "all T and every chunk partition (induction on chunks, noncommutative blocks)",
            lambda: _chunked(beta_on_earlier_chunks=True),
            "the chunk step without diag(beta_c) on the earlier chunks' contribution",
            lambda: _chunked(beta_on_earlier_chunks=False)),
    declare("DF.5=DF.3", "U = sum_{n<T} (-diag(beta) P)^n V equals (I + diag(beta) P)^-1 V (A^T = 0 for strictly "
            "lower A)", "C6", "symbolic", "all T (induction on k for the telescoping sum, on T for nilpotency)",
            lambda: _neumann(sign=-1), "the series sum_n A^n (sign dropped)", lambda: _neumann(sign=1)),
    declare("DF.forms-T<=4", "recurrence = solve = Neumann = repeated squaring = chunked (every partition), as "
            "explicit rational functions of free symbols P_tj, beta_t, v_t", "C6", "symbolic",
            "T <= 4, all 2^(T-1) chunk partitions", lambda: _explicit_forms(drop_beta_in_chunks=False),
            "chunked form with beta dropped on earlier chunks", lambda: _explicit_forms(drop_beta_in_chunks=True)),
    declare("DF.6", "(I + A)^-1 = (I - A)(I + A^2)(I + A^4)...(I + A^(2^(m-1))) for strictly lower A of size <= 2^m",
            "C7", "symbolic", "all m >= 1 (induction on m) and every size <= 2^m",
            lambda: _squaring(first_factor_sign=-1, later_factor_sign=1),
            "factors (I - A^(2^i)) for i >= 1", lambda: _squaring(first_factor_sign=-1, later_factor_sign=-1)),
    declare("DF.growth", "previous-token write, v_t = (-1)^t: u_t = (-1)^t sum_{n<=t} beta^n (the bound "
            "||u_t|| <= ||v|| sum_{n<=t} beta^n is attained)", "C12", "symbolic", "all t (induction on t)",
            lambda: _growth(sign_alternates=True), "v_t = 1 for every t", lambda: _growth(sign_alternates=False)),
)
