"""The update rules (claims 5, 9, 11): recurrent = parallel = chunked, the kernelised DeltaNet's u-form, and
softmax attention as SGD with step 1/t, each by induction on tokens (and on chunks) for every T.

Notation (docs/derivations/updates.md), column vectors: state S [d_v, d_k], key k, value v, query q; ``kt`` is
k^T. The tokens already seen are stacked as noncommutative blocks: ``K`` (rows k_i^T), ``Vt`` / ``Ut`` (columns
v_i / u_i), so sum_{i<=t} v_i (k_i^T x) = Vt K x for any x. The invariant of each induction is the parallel
form's state after t tokens; the step appends one token as a block column / row, [Vt, v] [K; kt] = Vt K + v kt.
Row t of a parallel form's triangular system is solved by forward substitution, which equals the solve
(proof DF.1=DF.3), so the new row of U is the recurrence's written value.
"""

from __future__ import annotations

import sympy as sp

from proofs_checks.proofs.record import Proof, Step, Verdict, conclude, declare
from proofs_checks.proofs.symbolic import Expr, equal, nc_symbols, symbols

__all__ = ["PROOFS"]


def _appended(columns: Expr, column: Expr, rows: Expr, row: Expr) -> Expr:
    """[columns, column] [rows; row] as one block product (the sum over tokens grown by one token)."""
    return (sp.Matrix([[columns, column]]) * sp.Matrix([[rows], [row]]))[0, 0]


def _linear_attention(drop_initial_state: bool) -> Verdict:
    """UPD.1a = UPD.1b: invariant S_t = S_0 + Vt K (the parallel state); o_t = S_t q_t is the parallel row."""
    S0, Vt, K, v, kt, q = nc_symbols("S0 Vt K v kt q")
    S_t = S0 + Vt * K
    recurrent = S_t + v * kt
    parallel_state = (0 if drop_initial_state else S0) + _appended(Vt, v, K, kt)
    steps = [
        equal("base t = 0: S_0 = S_0 + (empty sum)", S0 + 0, S0),
        equal("step: S_t + v k^T = S_0 + [Vt, v][K; k^T]", recurrent, parallel_state),
        equal("read: S_{t+1} q = Q S_0^T row + (Q K^T (.) M) V row", recurrent * q,
              S0 * q + _appended(Vt, v, K, kt) * q),
    ]
    return conclude(steps, "invariant S_t = S_0 + sum_{i<=t} v_i k_i^T;")


def _gated_linear_attention(decay_with_gate: bool) -> Verdict:
    """UPD.2a = UPD.2b: invariant S_t = g_t (S_0 + sum_i v_i k_i^T / g_i), g_t = prod_{s<=t} a_s = exp(b_t)."""
    S0, Wt, K, v, kt, q = nc_symbols("S0 Wt K v kt q")
    a, g, b = symbols("a g b", positive=True)
    S_t = g * (S0 + Wt * K)
    g_next = a * g if decay_with_gate else g
    recurrent = a * S_t + v * kt
    parallel_state = g_next * (S0 + _appended(Wt, v / g_next, K, kt))
    steps = [
        equal("g_{t+1} = exp(b_t + log a_{t+1}) = a_{t+1} g_t", sp.exp(b + sp.log(a)), a * sp.exp(b)),
        equal("D_ti = exp(b_t - b_i) = g_t / g_i", sp.exp(b - sp.log(g)), sp.exp(b) / g),
        equal("base t = 0: S_0 = g_0 S_0, g_0 = 1", 1 * S0, S0),
        equal("step: a S_t + v k^T = g_{t+1}(S_0 + [Wt, v/g_{t+1}][K; k^T])", recurrent, parallel_state),
        equal("read: S_{t+1} q = g_{t+1} S_0 q + sum_i D_{t+1,i} (k_i^T q) v_i", recurrent * q, parallel_state * q),
    ]
    return conclude(steps, "Wt holds the columns v_i / g_i;")


def _deltanet_token_steps(S0_in_rhs: bool) -> list[Step]:
    """DeltaNet's token step: S_t = S_0 + Ut K, the new row u = beta (v - S_0 k - Ut K k) of the parallel system."""
    S0, Ut, K, v, k, kt, q = nc_symbols("S0 Ut K v k kt q")
    (beta,) = symbols("beta")
    S_t = S0 + Ut * K
    u = beta * (v - (S0 * k if S0_in_rhs else 0) - Ut * K * k)
    recurrent = S_t * (1 - beta * k * kt) + beta * v * kt
    return [
        equal("base t = 0: S_0 = S_0 + (empty sum)", S0 + 0, S0),
        equal("token step: S_t (I - beta k k^T) + beta v k^T = S_0 + [Ut, u][K; k^T]", recurrent,
              S0 + _appended(Ut, u, K, kt)),
        equal("read: S_{t+1} q = Q S_0^T row + (Q K^T (.) M) U row", recurrent * q,
              S0 * q + _appended(Ut, u, K, kt) * q),
    ]


def _wy_split(gated: bool, beta_in_w: bool) -> Step:
    """The chunk's rows (row-stacked): T_c diag(beta)(V_c - diag(g) K_c S^T) = U~ - W S^T (UPD.3c / UPD.4c)."""
    Tc, B, G, Vc, Kc, St = nc_symbols("Tc B G Vc Kc St")
    decay = G if gated else 1
    W = Tc * (B if beta_in_w else 1) * decay * Kc
    U_tilde = Tc * B * Vc
    return equal("chunk split: T_c diag(beta)(V_c - diag(g) K_c S^T) = U~ - W S^T",
                 Tc * B * (Vc - decay * Kc * St), U_tilde - W * St)


def _deltanet(S0_in_rhs: bool) -> Verdict:
    """UPD.3a = UPD.3b = UPD.3c: token induction for the parallel form, chunk induction for the chunked one."""
    steps = [*_deltanet_token_steps(S0_in_rhs), _wy_split(gated=False, beta_in_w=True)]
    return conclude(steps, "invariant S_t = S_0 + sum_{i<=t} u_i k_i^T (u from the parallel system); a chunk is "
                           "the parallel form from the carried state S (valid for every chunk length by the token "
                           "induction), computed as U~ - W S^T; its end state S + U_c^T K_c is the recurrent state, "
                           "so the chunked form follows by induction on chunks;")


def _gated_deltanet(gate_on_state: bool) -> Verdict:
    """UPD.4a = UPD.4b = UPD.4c: invariant S_t = g_t (S_0 + sum_i u_i k_i^T / g_i); chunks restart g."""
    S0, Wt, K, v, k, kt, q = nc_symbols("S0 Wt K v k kt q")
    a, g, beta = symbols("a g beta", positive=True)
    S_t = g * (S0 + Wt * K)
    g_next = a * g
    # Row t+1 of (I + diag(beta)(tril(K K^T, -1) (.) Gamma)) U = diag(beta)(V - diag(g) K S_0^T).
    u = beta * (v - g_next * S0 * k - g_next * Wt * K * k)
    recurrent = (a if gate_on_state else 1) * S_t * (1 - beta * k * kt) + beta * v * kt
    parallel_state = g_next * (S0 + _appended(Wt, u / g_next, K, kt))
    steps = [
        equal("base t = 0: S_0 = g_0 S_0, g_0 = 1", 1 * S0, S0),
        equal("token step: a S_t (I - beta k k^T) + beta v k^T = g_{t+1}(S_0 + [Wt, u/g_{t+1}][K; k^T])",
              recurrent, parallel_state),
        equal("read: S_{t+1} q = diag(g) Q S_0^T row + (Q K^T (.) Gamma) U row", recurrent * q, parallel_state * q),
        _wy_split(gated=True, beta_in_w=True),
    ]
    return conclude(steps, "Wt holds the columns u_i / g_i, Gamma_ti = g_t / g_i; a chunk is the parallel form "
                           "from the carried state with g restarted, end state g_last S + sum (g_last/g_i) u_i "
                           "k_i^T; induction on chunks as for DeltaNet;")


def _longhorn(beta_in_denominator: bool) -> Verdict:
    """UPD.5: the implicit step's stationarity S_t - S_{t-1} = beta (v - S_t k) k^T holds for DeltaNet's step with e."""
    S, v, k, kt = nc_symbols("S v k kt")
    beta, kk = symbols("beta kk", positive=True)
    e = beta / (1 + (beta if beta_in_denominator else 1) * kk)
    S_new = S + e * (v - S * k) * kt
    stationarity = sp.expand(S_new - S - beta * (v - S_new * k) * kt).subs(kt * k, kk)
    steps = [
        equal("S_t = S + e (v - S k) k^T solves S_t - S = beta (v - S_t k) k^T (k^T k = kk)", stationarity, 0),
        equal("Longhorn's step is DeltaNet's with beta -> e", S * (1 - e * k * kt) + e * v * kt, S_new),
    ]
    return conclude(steps, "the objective ||S - S_{t-1}||^2 + beta ||S k - v||^2 is strictly convex (beta >= 0), "
                           "so its stationary point is the step; the parallel and chunked forms are DeltaNet's "
                           "(proof UPD.3) with beta_t -> e_t, which that proof allows (any scalar per token);")


def _normalised_kernel_memory(initial_normaliser: bool) -> Verdict:
    """UPD.6b = UPD.6c: numerator as linear attention on features, denominator z_t^T phi_q by the same induction."""
    S0, Vt, Phi, v, phit, z0t, ones, phi_q = nc_symbols("S0 Vt Phi v phit z0t ones phi_q")
    z_t = z0t + ones * Phi
    recurrent_z = z_t + phit
    parallel_z = (z0t if initial_normaliser else 0) + _appended(ones, 1, Phi, phit)
    steps = [
        equal("numerator step: S_t + v phi^T = S_0 + [Vt, v][Phi; phi^T]", S0 + Vt * Phi + v * phit,
              S0 + _appended(Vt, v, Phi, phit)),
        equal("normaliser step: z_t^T + phi^T = z_0^T + [1, 1][Phi; phi^T]", recurrent_z, parallel_z),
        equal("denominator: z_{t+1}^T phi_q = z_0^T phi_q + sum_{i<=t+1} phi_i^T phi_q", recurrent_z * phi_q,
              z0t * phi_q + _appended(ones, 1, Phi, phit) * phi_q),
        equal("base t = 0", z0t + 0, z0t),
    ]
    return conclude(steps, "invariants S_t = S_0 + sum v_i phi_i^T, z_t^T = z_0^T + 1^T Phi; the output is their "
                           "ratio in both forms;")


def _softmax_shift(shift_in_denominator: bool) -> Verdict:
    """UPD.7b = UPD.7c: the cache read equals the masked row; subtracting the row maximum m is exact, every length."""
    N, D, s, v, m = symbols("N D s v m")
    # Hypothesis over n admitted entries: sum e^{s_i - m} v_i = e^{-m} N, sum e^{s_i - m} = e^{-m} D.
    numerator = sp.exp(-m) * N + sp.exp(s - m) * v
    denominator = (sp.exp(-m) if shift_in_denominator else 1) * D + sp.exp(s - m)
    steps = [
        equal("base n = 1", sp.exp(s - m) * v, sp.exp(-m) * (sp.exp(s) * v)),
        equal("numerator step", numerator, sp.exp(-m) * (N + sp.exp(s) * v)),
        equal("ratio: shifted read = unshifted read", numerator / denominator,
              (N + sp.exp(s) * v) / (D + sp.exp(s))),
    ]
    return conclude(steps, "the cache after t tokens is [K_0; k_1..k_t], the admitted entries of row t (one "
                           "output coordinate v at a time);")


def _kernel_deltanet(beta_in_u: bool) -> Verdict:
    """UPD.11a = UPD.12: invariant S_t = sum_{i<=t} u_i phi_i^T = U Phit, kappa(k, k_i) = phi_i^T phi(k)."""
    U, Phit, v, phi, phit, phi_q = nc_symbols("U Phit v phi phit phi_q")
    (beta,) = symbols("beta")
    S_t = U * Phit
    u = (beta if beta_in_u else 1) * (v - U * (Phit * phi))
    state_step = S_t - beta * (S_t * phi - v) * phit
    steps = [
        equal("base t = 0: S_0 = 0 = U Phit with no columns", sp.Matrix(0, 0, []) * sp.Matrix(0, 0, []),
              sp.Matrix(0, 0, [])),
        equal("step: S_t - beta (S_t phi - v) phi^T = [U, u][Phit; phi^T]", state_step, _appended(U, u, Phit, phit)),
        equal("read: S_{t+1} phi(q) = sum_{i<=t+1} kappa(q, k_i) u_i", state_step * phi_q,
              _appended(U, u, Phit, phit) * phi_q),
    ]
    return conclude(steps, "u_t = beta_t (v_t - sum_{i<t} kappa(k_t, k_i) u_i) = beta_t (v_t - U (Phit phi_t));")


def _softmax_sgd(step_offset: int) -> Verdict:
    """UPD.8: with step 1/t the coefficients are c_{t,i} = 1/t for every t, so Sbar_t = S_t / t; outputs agree."""
    t = sp.Symbol("t", integer=True, positive=True)
    eta = 1 / (t + step_offset)
    Sbar, S, v, phit = nc_symbols("Sbar S v phit")
    n, d, x, y = symbols("n d x y")
    steps = [
        equal("coefficient base t = 1: c_{1,1} = eta_1 = 1", eta.subs(t, 1), 1),
        equal("coefficient step: (1 - eta_t) / (t - 1) = 1/t (t >= 2)", (1 - eta) / (t - 1), 1 / t),
        equal("newest coefficient: eta_t = 1/t", eta, 1 / t),
        equal("SGD step: Sbar - eta (Sbar - v phi^T) = (1 - eta) Sbar + eta v phi^T",
              Sbar - eta * (Sbar - v * phit), (1 - eta) * Sbar + eta * v * phit),
        equal("gradient of (x - y)^2 / 2 in x (Frobenius, entrywise)", sp.diff((x - y) ** 2 / 2, x), x - y),
        equal("Sbar_t = S_t / t: (1 - 1/t) S_{t-1}/(t-1) + (1/t) v phi^T = (S_{t-1} + v phi^T)/t",
              (1 - 1 / t) * S / (t - 1) + v * phit / t, (S + v * phit) / t),
        equal("output: (n/t) / (d/t) = n/d", (n / t) / (d / t), n / d),
    ]
    return conclude(steps, "hypothesis c_{t-1,i} = 1/(t-1) for i < t;")


PROOFS: tuple[Proof, ...] = (
    declare("UPD.11=UPD.12", "kernelised DeltaNet: the state form S_t = S_{t-1} - beta_t (S_{t-1} phi_t - v_t) "
            "phi_t^T equals the u-form (written values, outputs, S_T = sum u_i phi_i^T)", "C5", "symbolic",
            "all T, every feature map (induction on tokens)", lambda: _kernel_deltanet(beta_in_u=True),
            "the u-form without beta_t", lambda: _kernel_deltanet(beta_in_u=False)),
    declare("UPD.8", "softmax attention as SGD with step 1/t: every coefficient c_{t,i} = 1/t (Sbar_t = S_t / t) "
            "and the outputs equal causal softmax attention", "C9", "symbolic", "all t (induction on t)",
            lambda: _softmax_sgd(step_offset=0), "step 1/(t+1)", lambda: _softmax_sgd(step_offset=1)),
    declare("UPD.1", "linear attention: recurrent = parallel (outputs and S_T)", "C11", "symbolic",
            "all T (induction on tokens)", lambda: _linear_attention(drop_initial_state=False),
            "parallel state without S_0", lambda: _linear_attention(drop_initial_state=True)),
    declare("UPD.2", "gated linear attention: recurrent = parallel with decay exp(b_t - b_i)", "C11", "symbolic",
            "all T (induction on tokens)", lambda: _gated_linear_attention(decay_with_gate=True),
            "decay g_{t+1} = g_t (gate ignored)", lambda: _gated_linear_attention(decay_with_gate=False)),
    declare("UPD.3", "DeltaNet: recurrent = parallel (UT solve) = chunked (WY form, any partition)", "C11",
            "symbolic", "all T and every chunk partition (induction on tokens, then on chunks)",
            lambda: _deltanet(S0_in_rhs=True), "initial state dropped from the parallel right-hand side",
            lambda: _deltanet(S0_in_rhs=False)),
    declare("UPD.4", "Gated DeltaNet: recurrent = parallel (gated UT solve) = chunked (any partition)", "C11",
            "symbolic", "all T and every chunk partition (induction on tokens, then on chunks)",
            lambda: _gated_deltanet(gate_on_state=True), "recurrence without the gate a_t on the state",
            lambda: _gated_deltanet(gate_on_state=False)),
    declare("UPD.5", "Longhorn: the implicit step is DeltaNet's with e_t = beta_t / (1 + beta_t ||k_t||^2), so "
            "recurrent = parallel = chunked", "C11", "symbolic", "all T and every chunk partition (via UPD.3)",
            lambda: _longhorn(beta_in_denominator=True), "e_t = beta_t / (1 + ||k_t||^2)",
            lambda: _longhorn(beta_in_denominator=False)),
    declare("UPD.6", "normalised kernel memory: recurrent = parallel (numerator, normaliser, output)", "C11",
            "symbolic", "all T (induction on tokens)", lambda: _normalised_kernel_memory(initial_normaliser=True),
            "parallel normaliser without z_0", lambda: _normalised_kernel_memory(initial_normaliser=False)),
    declare("UPD.7", "softmax attention: the cache read equals the masked parallel row, the max shift is exact",
            "C11", "symbolic", "all T and every cache length (induction on admitted entries)",
            lambda: _softmax_shift(shift_in_denominator=True), "shift applied to the numerator only",
            lambda: _softmax_shift(shift_in_denominator=False)),
)
