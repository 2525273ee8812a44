"""The memory-update framework (equations.md section 3): every model as an online-learning step on a memory S.

One head, paper layout: q, k [T, d_k]; v, o [T, d_v]; the memory S is [d_v, d_k] and is read ``o_t = S_t q_t``
(after the step, so token t sees itself); gates ``a`` and strengths ``beta`` are [T].

| rule | step (UPD.n) | recurrent (UPD.na) | parallel / chunked (UPD.nb, UPD.nc) |
|---|---|---|---|
| linear attention | ``S_t = S_{t-1} + v_t k_t^T`` | scan | ``O = (Q K^T ⊙ M) V + Q S_0^T`` |
| gated linear attention | ``S_t = a_t S_{t-1} + v_t k_t^T`` | scan | decay ``exp(b_t - b_i)``, ``b = cumsum log a`` |
| DeltaNet | ``S_t = S_{t-1}(I - beta_t k_t k_t^T) + beta_t v_t k_t^T`` | scan | UT triangular solve; chunked WY form |
| Gated DeltaNet | ``S_t = a_t S_{t-1}(I - beta_t k_t k_t^T) + beta_t v_t k_t^T`` | scan | gated UT solve; chunked |
| Longhorn | DeltaNet with ``e_t = beta_t / (1 + beta_t k_t^T k_t)`` | scan | DeltaNet's forms with e |
| normalised kernel memory | ``S_t = S_{t-1} + v_t phi_t^T``, ``z_t = z_{t-1} + phi_t`` | scan | normalised causal |
| softmax attention | the same with phi infinite: kept as the stored keys | scan | causal softmax |

Independence, on purpose: the step functions (and the one scan driver) share no code with the parallel and
chunked forms, so ``recurrent == parallel`` is a real test (claim 11). The parallel forms solve one triangular
system for the whole sequence with the initial state in the right-hand side; the chunked forms carry the state
between chunks in the WY (UT) arrangement kernels use. Do not merge them.

Step functions take already-validated arrays (like ``spec.deltaformer.deltaformer_u_recurrence``); the
``*_recurrent``, ``*_parallel`` and ``*_chunked`` functions validate their inputs. Everything runs in float64 or,
given mpmath object arrays (``spec.precision.to_mp``), at the working mpmath precision, or on interval arrays
(``spec.precision.to_interval``), returning enclosures of the exact result. Derivations:
``docs/derivations/updates.md``.

    >>> import numpy as np
    >>> k = np.eye(3); v = np.arange(6.0).reshape(3, 2)
    >>> o, S = deltanet_recurrent(k, k, v, np.ones(3))  # orthonormal keys, beta = 1: exact recall
    >>> bool(np.array_equal(S @ k[1], v[1]))
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from spec import _validate, kernels, precision
from spec._types import Array

__all__ = [
    "deltanet_chunked",
    "deltanet_parallel",
    "deltanet_recurrent",
    "deltanet_step",
    "gated_deltanet_chunked",
    "gated_deltanet_parallel",
    "gated_deltanet_recurrent",
    "gated_deltanet_step",
    "gated_linear_attention_parallel",
    "gated_linear_attention_recurrent",
    "gated_linear_attention_step",
    "kernel_deltanet_state_recurrent",
    "kernel_deltanet_step",
    "kernel_deltanet_u_form",
    "linear_attention_parallel",
    "linear_attention_recurrent",
    "linear_attention_step",
    "longhorn_chunked",
    "longhorn_parallel",
    "longhorn_recurrent",
    "longhorn_step",
    "normalised_kernel_memory_parallel",
    "normalised_kernel_memory_read",
    "normalised_kernel_memory_recurrent",
    "normalised_kernel_memory_step",
    "softmax_attention_parallel",
    "softmax_attention_recurrent",
    "softmax_convergence_constant",
    "softmax_fixed_query_outputs",
    "softmax_infinite_context_limit",
    "softmax_memory_read",
    "softmax_memory_step",
    "softmax_newest_weight_bounds",
    "softmax_sgd_read",
    "softmax_sgd_recurrent",
    "softmax_sgd_step",
    "softmax_sgd_weights",
]

GramFunction = Callable[[Array, Array], Array]
"""A kernel as a Gram-matrix function (X [n, d], Y [m, d]) -> [n, m], as in ``spec.kernels``."""


# --------------------------------------------------------------------------------------------------------------
# Step functions: one per row of the update table. S [d_v, d_k], k [d_k], v [d_v]; scalars a, beta.


def _outer(v: Array, k: Array) -> Array:
    return v[:, None] * k[None, :]


def linear_attention_step(S: Array, k: Array, v: Array) -> Array:
    """UPD.1 [literature]: S_t = S_{t-1} + v_t k_t^T (linear attention).

    S [d_v, d_k], k [d_k], v [d_v] -> S_t [d_v, d_k]. Inputs assumed validated (see ``linear_attention_recurrent``).
    """
    S_t: Array = S + _outer(v, k)
    return S_t


def gated_linear_attention_step(S: Array, k: Array, v: Array, a: Any) -> Array:
    """UPD.2 [literature]: S_t = a_t S_{t-1} + v_t k_t^T (gated linear attention, scalar gate a_t).

    S [d_v, d_k], k [d_k], v [d_v], a a scalar -> S_t. Inputs assumed validated.
    """
    S_t: Array = a * S + _outer(v, k)
    return S_t


def deltanet_step(S: Array, k: Array, v: Array, beta: Any) -> Array:
    """UPD.3 [literature]: S_t = S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T (DeltaNet).

    One SGD step of size beta_t on ||S k_t - v_t||^2 / 2. S [d_v, d_k], k [d_k], v [d_v], beta a scalar -> S_t.
    Inputs assumed validated.
    """
    identity = precision.eye(k.shape[0], k)
    S_t: Array = S @ (identity - beta * _outer(k, k)) + beta * _outer(v, k)
    return S_t


def gated_deltanet_step(S: Array, k: Array, v: Array, a: Any, beta: Any) -> Array:
    """UPD.4 [literature]: S_t = a_t S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T (Gated DeltaNet).

    S [d_v, d_k], k [d_k], v [d_v], scalars a, beta -> S_t. Inputs assumed validated.
    """
    identity = precision.eye(k.shape[0], k)
    S_t: Array = a * S @ (identity - beta * _outer(k, k)) + beta * _outer(v, k)
    return S_t


def longhorn_step(S: Array, k: Array, v: Array, beta: Any) -> Array:
    """UPD.5 [literature]: e_t = beta_t / (1 + beta_t k_t^T k_t), S_t = S_{t-1}(I - e_t k_t k_t^T) + e_t v_t k_t^T.

    Longhorn: the closed-form (implicit) online step. S [d_v, d_k], k [d_k], v [d_v], beta >= 0 -> S_t.
    Inputs assumed validated (``longhorn_recurrent`` rejects beta < 0, where 1 + beta k^T k could vanish).
    """
    e = beta / (1 + beta * (k @ k))
    identity = precision.eye(k.shape[0], k)
    S_t: Array = S @ (identity - e * _outer(k, k)) + e * _outer(v, k)
    return S_t


def normalised_kernel_memory_step(S: Array, z: Array, phi_k: Array, v: Array) -> tuple[Array, Array]:
    """UPD.6 [literature]: S_t = S_{t-1} + v_t phi(k_t)^T, z_t = z_{t-1} + phi(k_t) (finite feature map phi).

    S [d_v, d_phi], z [d_phi], phi_k [d_phi], v [d_v] -> (S_t, z_t). Softmax attention is this with phi
    infinite-dimensional (UPD.7 keeps it as the stored keys instead). Inputs assumed validated.
    """
    return S + _outer(v, phi_k), z + phi_k


def normalised_kernel_memory_read(S: Array, z: Array, phi_q: Array) -> Array:
    """UPD.6a [literature]: o_t = S_t phi(q_t) / (z_t^T phi(q_t)).

    S [d_v, d_phi], z [d_phi], phi_q [d_phi] -> o [d_v]. The caller ensures z_t^T phi(q_t) != 0
    (``normalised_kernel_memory_recurrent`` raises ValueError otherwise).
    """
    o: Array = (S @ phi_q) / (z @ phi_q)
    return o


def softmax_memory_step(K: Array, V: Array, k: Array, v: Array) -> tuple[Array, Array]:
    """UPD.7 [literature]: S_t = S_{t-1} + v_t phi(k_t)^T, z_t = z_{t-1} + phi(k_t), phi the exp kernel's features.

    phi is infinite-dimensional, so (S_t, z_t) is held by its coefficients on the stored keys:
    S_t = V_t^T phi(K_t), z_t = phi(K_t)^T 1, and the step appends (k_t, v_t) to the cache.
    K [n, d_k], V [n, d_v] (n may be 0), k [d_k], v [d_v] -> (K_t [n + 1, d_k], V_t [n + 1, d_v]).
    """
    return np.concatenate([K, k[None]], axis=0), np.concatenate([V, v[None]], axis=0)


def softmax_memory_read(K: Array, V: Array, q: Array, tau: Any) -> Array:
    """UPD.7a [paper]: o_t = S_t phi(q_t) / (z_t^T phi(q_t)) = sum_i v_i kappa(k_i, q_t) / sum_i kappa(k_i, q_t).

    kappa(x, y) = exp(x^T y / tau) (KER.3); the normalised form is KER.4. K [n, d_k], V [n, d_v] with n >= 1,
    q [d_k] -> o [d_v].
    """
    weights: Array = kernels.softmax_kernel(q[None], K, tau)[0]
    return weights @ V


def kernel_deltanet_step(S: Array, phi_k: Array, v: Array, beta: Any) -> Array:
    """UPD.11 [derived]: S_t = S_{t-1} - beta_t (S_{t-1} phi(k_t) - v_t) phi(k_t)^T (kernelised DeltaNet, state form).

    S [d_v, d_phi], phi_k [d_phi], v [d_v], beta a scalar -> S_t. The same rule as UPD.3 on features phi(k),
    written as the gradient step the paper uses. Inputs assumed validated.
    """
    S_t: Array = S - beta * _outer(S @ phi_k - v, phi_k)
    return S_t


# --------------------------------------------------------------------------------------------------------------
# The recurrent forms: one scan driver, one validated entry point per rule.

Step = Callable[[Array, int], Array]


def _scan(step: Step, S0: Array, read: Callable[[Array, int], Array], T: int) -> tuple[Array, Array]:
    """S_t = step(S_{t-1}, t), o_t = read(S_t, t) for t = 0..T-1; returns (stacked o, S_T)."""
    S = S0
    outputs = []
    for t in range(T):
        S = step(S, t)
        outputs.append(read(S, t))
    return np.stack(outputs), S


def _qkv(q: Any, k: Any, v: Any, initial_state: Any, extra: dict[str, Any]) -> tuple[Array, ...]:
    """Validate q, k [T, d_k], v [T, d_v], S_0 [d_v, d_k] (zeros if None) and the [T] vectors in ``extra``."""
    q = _validate.matrix("q", q)
    T, d_k = q.shape
    k = _validate.matrix("k", k, rows=T, rows_of="q", cols=d_k, cols_of="q")
    v = _validate.matrix("v", v, rows=T, rows_of="q")
    d_v = v.shape[1]
    if initial_state is not None and np.shape(initial_state) != (d_v, d_k):
        raise ValueError(f"initial_state must have shape (d_v, d_k) = ({d_v}, {d_k}) from v and q, "
                         f"got {np.shape(initial_state)}")
    S0 = np.zeros((d_v, d_k)) if initial_state is None else _validate.matrix("initial_state", initial_state)
    vectors = [_validate.vector(name, x, length=T, length_of="q") for name, x in extra.items()]
    for name, x in zip(extra, vectors, strict=True):
        if name == "a" and not all(value > 0 for value in x.flat):
            raise ValueError("a (the gates) must be > 0 (the parallel forms use log a); got a value <= 0")
    return _validate.unify(q, k, v, S0, *vectors)


def _nonnegative(name: str, x: Array, rule: str) -> None:
    if not all(value >= 0 for value in x.flat):
        raise ValueError(f"{name} must be >= 0 for {rule} (1 + beta k^T k must stay positive); got a negative value")


def linear_attention_recurrent(q: Any, k: Any, v: Any, initial_state: Any = None) -> tuple[Array, Array]:
    """UPD.1a [literature]: S_t = S_{t-1} + v_t k_t^T, o_t = S_t q_t for t = 1..T, from S_0.

    q, k [T, d_k], v [T, d_v], initial_state S_0 [d_v, d_k] or None (zeros) -> (o [T, d_v], S_T [d_v, d_k]).
    Raises TypeError / ValueError (naming the argument) for non-real, mis-shaped, empty or non-finite input.
    """
    q, k, v, S0 = _qkv(q, k, v, initial_state, {})
    return _scan(lambda S, t: linear_attention_step(S, k[t], v[t]), S0, lambda S, t: S @ q[t], q.shape[0])


def gated_linear_attention_recurrent(q: Any, k: Any, v: Any, a: Any, initial_state: Any = None
                                     ) -> tuple[Array, Array]:
    """UPD.2a [literature]: S_t = a_t S_{t-1} + v_t k_t^T, o_t = S_t q_t, from S_0.

    q, k [T, d_k], v [T, d_v], a [T] with a_t > 0 (gates, usually in (0, 1]), initial_state [d_v, d_k] or None
    -> (o [T, d_v], S_T). ValueError if some a_t <= 0.
    """
    q, k, v, S0, a = _qkv(q, k, v, initial_state, {"a": a})
    return _scan(lambda S, t: gated_linear_attention_step(S, k[t], v[t], a[t]), S0, lambda S, t: S @ q[t],
                 q.shape[0])


def deltanet_recurrent(q: Any, k: Any, v: Any, beta: Any, initial_state: Any = None) -> tuple[Array, Array]:
    """UPD.3a [literature]: S_t = S_{t-1}(I - beta_t k_t k_t^T) + beta_t v_t k_t^T, o_t = S_t q_t, from S_0.

    q, k [T, d_k], v [T, d_v], beta [T] (any real; the usual range is (0, 2) or (0, 1]), initial_state or None
    -> (o [T, d_v], S_T [d_v, d_k]). Orthonormal keys with beta = 1 store each v_t exactly: S_T k_t = v_t.
    """
    q, k, v, S0, beta = _qkv(q, k, v, initial_state, {"beta": beta})
    return _scan(lambda S, t: deltanet_step(S, k[t], v[t], beta[t]), S0, lambda S, t: S @ q[t], q.shape[0])


def gated_deltanet_recurrent(q: Any, k: Any, v: Any, a: Any, beta: Any, initial_state: Any = None
                             ) -> tuple[Array, Array]:
    """UPD.4a [literature]: S_t = a_t S_{t-1}(I - beta_t k_t k_t^T) + beta_t v_t k_t^T, o_t = S_t q_t, from S_0.

    q, k [T, d_k], v [T, d_v], a [T] > 0, beta [T] any real, initial_state or None -> (o [T, d_v], S_T).
    """
    q, k, v, S0, a, beta = _qkv(q, k, v, initial_state, {"a": a, "beta": beta})
    return _scan(lambda S, t: gated_deltanet_step(S, k[t], v[t], a[t], beta[t]), S0, lambda S, t: S @ q[t],
                 q.shape[0])


def longhorn_recurrent(q: Any, k: Any, v: Any, beta: Any, initial_state: Any = None) -> tuple[Array, Array]:
    """UPD.5a [literature]: Longhorn's step UPD.5 token by token, o_t = S_t q_t, from S_0.

    q, k [T, d_k], v [T, d_v], beta [T] >= 0, initial_state or None -> (o [T, d_v], S_T). ValueError if beta < 0.
    """
    q, k, v, S0, beta = _qkv(q, k, v, initial_state, {"beta": beta})
    _nonnegative("beta", beta, "Longhorn")
    return _scan(lambda S, t: longhorn_step(S, k[t], v[t], beta[t]), S0, lambda S, t: S @ q[t], q.shape[0])


def _kernel_memory_inputs(phi_q: Any, phi_k: Any, v: Any, initial_state: Any
                          ) -> tuple[Array, Array, Array, Array, Array]:
    if initial_state is None:
        q, k, v, S0 = _qkv(phi_q, phi_k, v, None, {})
        return q, k, v, S0, precision.zeros((q.shape[1],), q)
    if not isinstance(initial_state, tuple) or len(initial_state) != 2:
        raise TypeError(f"initial_state must be a pair (S_0, z_0) or None, got {type(initial_state).__name__}")
    q, k, v, S0 = _qkv(phi_q, phi_k, v, initial_state[0], {})
    z0 = _validate.vector("initial_state z_0", initial_state[1], length=q.shape[1], length_of="phi_q (d_phi)")
    q, k, v, S0, z0 = _validate.unify(q, k, v, S0, z0)
    return q, k, v, S0, z0


def _require_nonzero(denominators: Array) -> None:
    if any(value == 0 for value in denominators.flat):
        raise ValueError("z_t^T phi(q_t) is 0 for some t: the normalised read-out is undefined there; use a kernel "
                         "with positive values (e.g. non-negative features)")


def normalised_kernel_memory_recurrent(phi_q: Any, phi_k: Any, v: Any, initial_state: Any = None
                                       ) -> tuple[Array, tuple[Array, Array]]:
    """UPD.6b [literature]: (S_t, z_t) by UPD.6, o_t = S_t phi(q_t) / (z_t^T phi(q_t)), from (S_0, z_0).

    phi_q, phi_k [T, d_phi] (features of queries and keys), v [T, d_v], initial_state (S_0 [d_v, d_phi],
    z_0 [d_phi]) or None (zeros) -> (o [T, d_v], (S_T, z_T)). ValueError if some z_t^T phi(q_t) = 0.
    """
    q, k, v, S0, z0 = _kernel_memory_inputs(phi_q, phi_k, v, initial_state)
    S, z = S0, z0
    outputs, denominators = [], []
    for t in range(q.shape[0]):
        S, z = normalised_kernel_memory_step(S, z, k[t], v[t])
        denominators.append(z @ q[t])
        if denominators[-1] == 0:
            _require_nonzero(np.array(denominators))
        outputs.append(normalised_kernel_memory_read(S, z, q[t]))
    return np.stack(outputs), (S, z)


def softmax_attention_recurrent(q: Any, k: Any, v: Any, tau: Any, initial_state: Any = None
                                ) -> tuple[Array, tuple[Array, Array]]:
    """UPD.7b [literature]: softmax attention as a kernel memory: append (k_t, v_t) (UPD.7), read UPD.7a.

    q, k [T, d_k], v [T, d_v], tau > 0, initial_state a cache (K_0 [n, d_k], V_0 [n, d_v]) or None (empty)
    -> (o [T, d_v], (K_T, V_T)). With no initial cache this is causal softmax attention with scale 1/tau.
    """
    q, k, v, _ = _qkv(q, k, v, None, {})
    tau = _validate.scalar("tau", tau, positive=True)
    K0, V0 = _softmax_cache(initial_state, q, v)
    q, k, v, K0, V0 = _validate.unify(q, k, v, K0, V0)
    K, V = K0, V0
    outputs = []
    for t in range(q.shape[0]):
        K, V = softmax_memory_step(K, V, k[t], v[t])
        outputs.append(softmax_memory_read(K, V, q[t], tau))
    return np.stack(outputs), (K, V)


def _softmax_cache(initial_state: Any, q: Array, v: Array) -> tuple[Array, Array]:
    d_k, d_v = q.shape[1], v.shape[1]
    if initial_state is not None and (not isinstance(initial_state, tuple) or len(initial_state) != 2):
        raise TypeError(f"initial_state must be a cache (K_0, V_0) or None, got {type(initial_state).__name__}")
    if initial_state is None or np.size(initial_state[0]) == 0:
        return np.zeros((0, d_k)), np.zeros((0, d_v))
    K0 = _validate.matrix("initial_state K_0", initial_state[0], cols=d_k, cols_of="q")
    V0 = _validate.matrix("initial_state V_0", initial_state[1], rows=K0.shape[0], rows_of="K_0", cols=d_v,
                          cols_of="v")
    return K0, V0


# --------------------------------------------------------------------------------------------------------------
# Parallel and chunked forms: independent of the step functions and of the scan (on purpose).


def _causal(X: Array) -> Array:
    """X ⊙ M with M the causal mask, diagonal included."""
    return np.tril(X)


def _decay_matrix(log_a: Array) -> tuple[Array, Array]:
    """(b, D): b_t = sum_{s<=t} log a_s, D[t, i] = exp(b_t - b_i) for i <= t and 0 above the diagonal."""
    b = np.cumsum(log_a)
    difference = np.tril(b[:, None] - b[None, :])  # zero above the diagonal, so exp cannot overflow there
    return b, np.tril(precision.exp(difference))


def linear_attention_parallel(q: Any, k: Any, v: Any, initial_state: Any = None) -> tuple[Array, Array]:
    """UPD.1b [literature]: O = (Q K^T ⊙ M) V + Q S_0^T, S_T = S_0 + V^T K (M causal, diagonal included).

    Same contract as ``linear_attention_recurrent``; shares no code with it.
    """
    q, k, v, S0 = _qkv(q, k, v, initial_state, {})
    o: Array = _causal(q @ k.T) @ v + q @ S0.T
    return o, S0 + v.T @ k


def gated_linear_attention_parallel(q: Any, k: Any, v: Any, a: Any, initial_state: Any = None
                                    ) -> tuple[Array, Array]:
    """UPD.2b [derived]: O = (Q K^T ⊙ D) V + diag(exp b) Q S_0^T, D_ti = exp(b_t - b_i) [i <= t], b = cumsum log a.

    S_T = exp(b_T) S_0 + sum_i exp(b_T - b_i) v_i k_i^T. Same contract as ``gated_linear_attention_recurrent``.
    """
    q, k, v, S0, a = _qkv(q, k, v, initial_state, {"a": a})
    b, D = _decay_matrix(precision.log(a))
    g = precision.exp(b)
    o: Array = ((q @ k.T) * D) @ v + g[:, None] * (q @ S0.T)
    S_T: Array = g[-1] * S0 + (D[-1][:, None] * v).T @ k
    return o, S_T


def deltanet_parallel(q: Any, k: Any, v: Any, beta: Any, initial_state: Any = None) -> tuple[Array, Array]:
    """UPD.3b [derived]: U = (I + diag(beta) tril(K K^T, -1))^{-1} diag(beta)(V - K S_0^T), O = Q S_0^T + (Q K^T ⊙ M) U.

    S_T = S_0 + U^T K, where u_t = beta_t (v_t - S_{t-1} k_t) is the written value (S_t = S_0 + sum u_i k_i^T).
    One general LU solve for the whole sequence (``spec.precision.solve``). Same contract as
    ``deltanet_recurrent``; shares no code with it.
    """
    q, k, v, S0, beta = _qkv(q, k, v, initial_state, {"beta": beta})
    return _delta_parallel(q, k, v, beta, S0)


def _delta_parallel(q: Array, k: Array, v: Array, beta: Array, S0: Array) -> tuple[Array, Array]:
    T = q.shape[0]
    system = precision.eye(T, v) + beta[:, None] * np.tril(k @ k.T, -1)
    U = precision.solve(system, beta[:, None] * (v - k @ S0.T))
    o: Array = q @ S0.T + _causal(q @ k.T) @ U
    return o, S0 + U.T @ k


def deltanet_chunked(q: Any, k: Any, v: Any, beta: Any, initial_state: Any = None, *, chunk_size: int = 64
                     ) -> tuple[Array, Array]:
    """UPD.3c [derived]: per chunk c, W = T_c diag(beta) K_c, Ũ = T_c diag(beta) V_c, U_c = Ũ - W S^T (WY / UT form).

    T_c = (I + diag(beta_c) tril(K_c K_c^T, -1))^{-1}; then O_c = Q_c S^T + (Q_c K_c^T ⊙ M) U_c and
    S <- S + U_c^T K_c. Chunks [s, s + C) of any size C >= 1 (C need not divide T; the last chunk is shorter).
    Same contract as ``deltanet_recurrent``.
    """
    q, k, v, S0, beta = _qkv(q, k, v, initial_state, {"beta": beta})
    C = _validate.positive_int("chunk_size", chunk_size)
    T = q.shape[0]
    S = S0
    o = precision.zeros(v.shape, v)
    for s in range(0, T, C):
        e = min(s + C, T)
        Kc, Vc, Qc, bc = k[s:e], v[s:e], q[s:e], beta[s:e]
        system = precision.eye(e - s, v) + bc[:, None] * np.tril(Kc @ Kc.T, -1)
        W = precision.solve(system, bc[:, None] * Kc)
        U_tilde = precision.solve(system, bc[:, None] * Vc)
        U = U_tilde - W @ S.T
        o[s:e] = Qc @ S.T + _causal(Qc @ Kc.T) @ U
        S = S + U.T @ Kc
    return o, S


def gated_deltanet_parallel(q: Any, k: Any, v: Any, a: Any, beta: Any, initial_state: Any = None
                            ) -> tuple[Array, Array]:
    """UPD.4b [derived]: (I + diag(beta)(tril(K K^T,-1) ⊙ Γ)) U = diag(beta)(V - diag(g) K S_0^T), O = (QK^T ⊙ Γ)U + ...

    In full: O = diag(g) Q S_0^T + (Q K^T ⊙ Γ) U (Γ includes the diagonal, Γ_tt = 1).
    g_t = prod_{s<=t} a_s = exp(b_t), Γ_ti = g_t / g_i = exp(b_t - b_i) for i <= t (0 above), b = cumsum log a;
    S_T = g_T S_0 + sum_i Γ_Ti u_i k_i^T. One LU solve for the whole sequence. Same contract as
    ``gated_deltanet_recurrent``.
    """
    q, k, v, S0, a, beta = _qkv(q, k, v, initial_state, {"a": a, "beta": beta})
    T = q.shape[0]
    b, Gamma = _decay_matrix(precision.log(a))
    g = precision.exp(b)
    system = precision.eye(T, v) + beta[:, None] * (np.tril(k @ k.T, -1) * Gamma)
    U = precision.solve(system, beta[:, None] * (v - g[:, None] * (k @ S0.T)))
    o: Array = g[:, None] * (q @ S0.T) + ((q @ k.T) * Gamma) @ U
    S_T: Array = g[-1] * S0 + (Gamma[-1][:, None] * U).T @ k
    return o, S_T


def gated_deltanet_chunked(q: Any, k: Any, v: Any, a: Any, beta: Any, initial_state: Any = None, *,
                           chunk_size: int = 64) -> tuple[Array, Array]:
    """UPD.4c [derived]: per chunk, W = T_c diag(beta g) K_c, Ũ = T_c diag(beta) V_c, U_c = Ũ - W S^T, gated.

    Within a chunk g_t = prod_{s in chunk, s<=t} a_s, Γ_ti = g_t / g_i,
    T_c = (I + diag(beta)(tril(K K^T, -1) ⊙ Γ))^{-1};
    O_c = diag(g) Q_c S^T + (Q_c K_c^T ⊙ Γ) U_c; S <- g_last S + sum_i (g_last / g_i) u_i k_i^T. Any C >= 1.
    """
    q, k, v, S0, a, beta = _qkv(q, k, v, initial_state, {"a": a, "beta": beta})
    C = _validate.positive_int("chunk_size", chunk_size)
    T = q.shape[0]
    S = S0
    o = precision.zeros(v.shape, v)
    log_a = precision.log(a)
    for s in range(0, T, C):
        e = min(s + C, T)
        Kc, Vc, Qc, bc = k[s:e], v[s:e], q[s:e], beta[s:e]
        b, Gamma = _decay_matrix(log_a[s:e])
        g = precision.exp(b)
        system = precision.eye(e - s, v) + bc[:, None] * (np.tril(Kc @ Kc.T, -1) * Gamma)
        W = precision.solve(system, (bc * g)[:, None] * Kc)
        U_tilde = precision.solve(system, bc[:, None] * Vc)
        U = U_tilde - W @ S.T
        o[s:e] = g[:, None] * (Qc @ S.T) + ((Qc @ Kc.T) * Gamma) @ U
        S = g[-1] * S + (Gamma[-1][:, None] * U).T @ Kc
    return o, S


def _longhorn_strength(k: Array, beta: Array) -> Array:
    """e_t = beta_t / (1 + beta_t ||k_t||^2), row by row."""
    squared_norms: Array = (k * k).sum(axis=1)
    e: Array = beta / (1 + beta * squared_norms)
    return e


def longhorn_parallel(q: Any, k: Any, v: Any, beta: Any, initial_state: Any = None) -> tuple[Array, Array]:
    """UPD.5b [derived]: DeltaNet's parallel form UPD.3b with beta_t replaced by e_t = beta_t / (1 + beta_t ||k_t||^2).

    Same contract as ``longhorn_recurrent`` (beta >= 0).
    """
    q, k, v, S0, beta = _qkv(q, k, v, initial_state, {"beta": beta})
    _nonnegative("beta", beta, "Longhorn")
    return _delta_parallel(q, k, v, _longhorn_strength(k, beta), S0)


def longhorn_chunked(q: Any, k: Any, v: Any, beta: Any, initial_state: Any = None, *, chunk_size: int = 64
                     ) -> tuple[Array, Array]:
    """UPD.5c [derived]: DeltaNet's chunked form UPD.3c with beta_t replaced by e_t = beta_t / (1 + beta_t ||k_t||^2).

    Same contract as ``longhorn_recurrent`` (beta >= 0), chunks of any size C >= 1.
    """
    q, k, v, S0, beta = _qkv(q, k, v, initial_state, {"beta": beta})
    _nonnegative("beta", beta, "Longhorn")
    return deltanet_chunked(q, k, v, _longhorn_strength(k, beta), S0, chunk_size=chunk_size)


def normalised_kernel_memory_parallel(phi_q: Any, phi_k: Any, v: Any, initial_state: Any = None
                                      ) -> tuple[Array, tuple[Array, Array]]:
    """UPD.6c [literature]: O = ((Φ_q Φ_k^T ⊙ M) V + Φ_q S_0^T) / ((Φ_q Φ_k^T ⊙ M) 1 + Φ_q z_0), row-wise.

    S_T = S_0 + V^T Φ_k, z_T = z_0 + Φ_k^T 1. Same contract as ``normalised_kernel_memory_recurrent``.
    """
    q, k, v, S0, z0 = _kernel_memory_inputs(phi_q, phi_k, v, initial_state)
    A = _causal(q @ k.T)
    denominators: Array = A.sum(axis=1) + q @ z0
    _require_nonzero(denominators)
    o: Array = (A @ v + q @ S0.T) / denominators[:, None]
    return o, (S0 + v.T @ k, z0 + k.sum(axis=0))


def softmax_attention_parallel(q: Any, k: Any, v: Any, tau: Any, initial_state: Any = None
                               ) -> tuple[Array, tuple[Array, Array]]:
    """UPD.7c [literature]: O = softmax_causal(Q [K_0; K]^T / tau) [V_0; V], row t admitting the cache and j <= t.

    The whole score matrix at once, masked; the row maximum over admitted entries is subtracted (exact).
    Same contract as ``softmax_attention_recurrent``; shares no code with it.
    """
    q, k, v, _ = _qkv(q, k, v, None, {})
    tau = _validate.scalar("tau", tau, positive=True)
    K0, V0 = _softmax_cache(initial_state, q, v)
    q, k, v, K0, V0 = _validate.unify(q, k, v, K0, V0)
    n0, T = K0.shape[0], q.shape[0]
    K_all, V_all = np.concatenate([K0, k]), np.concatenate([V0, v])
    admitted = np.arange(n0 + T)[None, :] <= n0 + np.arange(T)[:, None]
    scores = (q @ K_all.T) / tau
    row_max = precision.softmax_shift(np.where(admitted, scores, scores.min()), axis=1)
    weights = np.where(admitted, precision.exp(np.where(admitted, scores - row_max[:, None], 0)), 0)
    o: Array = (weights @ V_all) / weights.sum(axis=1)[:, None]
    return o, (K_all, V_all)


# --------------------------------------------------------------------------------------------------------------
# Softmax attention as SGD with step 1/t, and its infinite-context limit (equations.md section 3, [derived]).


def softmax_sgd_step(K: Array, V: Array, c: Array, k: Array, v: Array) -> tuple[Array, Array, Array]:
    """UPD.8 [derived]: Sbar_t = (1 - 1/t) Sbar_{t-1} + (1/t) v_t phi(k_t)^T, zbar_t likewise, t = n + 1.

    phi is the exp kernel's infinite feature map, so Sbar_t = sum_i c_i v_i phi(k_i)^T and zbar_t = sum_i c_i phi(k_i)
    are held by the stored keys and their coefficients: the step scales c by (1 - 1/t) and appends (k_t, v_t)
    with coefficient 1/t. K [n, d_k], V [n, d_v], c [n] (n may be 0), k [d_k], v [d_v] -> (K_t, V_t, c_t).
    It is the SGD step Sbar_t = Sbar_{t-1} - (1/t) grad L_t(Sbar_{t-1}) on L_t(S) = ||S - v_t phi(k_t)^T||_F^2 / 2
    (docs/derivations/updates.md); with c_0 empty it gives c_t = (1/t, ..., 1/t), i.e. Sbar_t = S_t / t.
    """
    t = c.shape[0] + 1
    step = (precision.zeros((1,), k)[0] + 1) / t  # 1/t in the number type of k
    K_t, V_t = np.concatenate([K, k[None]]), np.concatenate([V, v[None]])
    return K_t, V_t, np.concatenate([(1 - step) * c, np.array([step], dtype=c.dtype)])


def softmax_sgd_weights(K: Array, c: Array, q: Array, tau: Any) -> Array:
    """UPD.8a [derived]: w_i = c_i kappa(k_i, q) / sum_j c_j kappa(k_j, q), kappa(x, y) = exp(x^T y / tau).

    The weight of stored token i in o_t = Sbar_t phi(q) / (zbar_t^T phi(q)). K [n, d_k], c [n] (n >= 1), q [d_k]
    -> [n]. The largest score is subtracted before exp (a common factor that cancels in the ratio).
    """
    scores = (K @ q) / tau
    kappa = precision.exp(scores - precision.softmax_shift(scores))
    weighted: Array = c * kappa
    total: Array = weighted.sum()
    return weighted / total


def softmax_sgd_read(K: Array, V: Array, c: Array, q: Array, tau: Any) -> Array:
    """UPD.8b [derived]: o_t = Sbar_t phi(q_t) / (zbar_t^T phi(q_t)) = sum_i w_i v_i with w from UPD.8a.

    K [n, d_k], V [n, d_v], c [n], q [d_k] -> o [d_v].
    """
    return softmax_sgd_weights(K, c, q, tau) @ V


def softmax_sgd_recurrent(q: Any, k: Any, v: Any, tau: Any) -> tuple[Array, tuple[Array, Array, Array]]:
    """UPD.8c [derived]: softmax attention run as SGD with step 1/t (UPD.8, read UPD.8b), from Sbar_0 = 0.

    q, k [T, d_k], v [T, d_v], tau > 0 -> (o [T, d_v], (K_T, V_T, c_T)). c_T = (1/T, ..., 1/T), i.e.
    Sbar_T = S_T / T, and o equals causal softmax attention (claim 9).
    """
    q, k, v, _ = _qkv(q, k, v, None, {})
    tau = _validate.scalar("tau", tau, positive=True)
    K, V, c = k[:0], v[:0], precision.zeros((0,), v)
    outputs = []
    for t in range(q.shape[0]):
        K, V, c = softmax_sgd_step(K, V, c, k[t], v[t])
        outputs.append(softmax_sgd_read(K, V, c, q[t], tau))
    return np.stack(outputs), (K, V, c)


def softmax_newest_weight_bounds(key_radius: float, query_radius: float, tau: float) -> tuple[float, float]:
    """UPD.9 [derived]: exp(-2 R_k R_q / tau) <= t w_t <= exp(2 R_k R_q / tau) for ||k_i|| <= R_k, ||q|| <= R_q.

    w_t is the newest token's softmax weight among t stored keys (UPD.8a with c = 1/t): each kappa lies in
    [exp(-R_k R_q / tau), exp(R_k R_q / tau)], so w_t = Theta(1/t). Returns (lower, upper). float64.
    """
    R_k = _validate.scalar("key_radius", key_radius)
    R_q = _validate.scalar("query_radius", query_radius)
    tau = _validate.scalar("tau", tau, positive=True)
    if R_k < 0 or R_q < 0:
        raise ValueError(f"key_radius and query_radius must be >= 0, got {R_k} and {R_q}")
    exponent = 2 * R_k * R_q / tau
    return float(np.exp(-exponent)), float(np.exp(exponent))


def softmax_fixed_query_outputs(q: Any, k: Any, v: Any, tau: Any) -> Array:
    """UPD.10 [paper]: o_t(q) = sum_{i<=t} kappa(k_i, q) v_i / sum_{i<=t} kappa(k_i, q) for every t (one fixed q).

    q [d_k], k [T, d_k], v [T, d_v], tau > 0 -> [T, d_v], by cumulative sums. The largest score is subtracted
    (a factor common to every t, so exact). The softmax memory read with a fixed query, as the context grows.
    """
    q = _validate.vector("q", q)
    k = _validate.matrix("k", k, cols=q.shape[0], cols_of="q")
    v = _validate.matrix("v", v, rows=k.shape[0], rows_of="k")
    tau = _validate.scalar("tau", tau, positive=True)
    q, k, v = _validate.unify(q, k, v)
    scores = (k @ q) / tau
    kappa = precision.exp(scores - precision.softmax_shift(scores))
    numerators: Array = np.cumsum(kappa[:, None] * v, axis=0)
    denominators: Array = np.cumsum(kappa)
    return numerators / denominators[:, None]


def _gaussian_context(q: Any, A: Any, b: Any, mu: Any, Sigma: Any, tau: Any) -> tuple[Array, ...]:
    q = _validate.vector("q", q)
    d_k = q.shape[0]
    A = _validate.matrix("A", A, cols=d_k, cols_of="q")
    b = np.zeros(A.shape[0]) if b is None else _validate.vector("b", b, length=A.shape[0], length_of="A")
    mu = np.zeros(d_k) if mu is None else _validate.vector("mu", mu, length=d_k, length_of="q")
    Sigma = np.eye(d_k) if Sigma is None else _validate.matrix("Sigma", Sigma, rows=d_k, rows_of="q", cols=d_k,
                                                                 cols_of="q")
    tau = _validate.scalar("tau", tau, positive=True)
    q, A, b, mu, Sigma = _validate.unify(q, A, b, mu, Sigma)
    return q, A, b, mu, Sigma, np.array(tau, dtype=q.dtype)


def softmax_infinite_context_limit(q: Any, A: Any, b: Any = None, mu: Any = None, Sigma: Any = None, *,
                                   tau: Any = 1.0) -> Array:
    """UPD.10a [derived]: lim_t o_t(q) = E[v kappa(k,q)] / E[kappa(k,q)] = A (mu + Sigma q / tau) + b.

    For an i.i.d. context k ~ N(mu, Sigma), v = A k + b + eps with eps zero-mean and independent of k, and
    kappa(k, q) = exp(q^T k / tau): the exp kernel tilts N(mu, Sigma) to N(mu + Sigma q / tau, Sigma) (Gaussian
    MGF). q [d_k], A [d_v, d_k], b [d_v] (None: 0), mu [d_k] (None: 0), Sigma [d_k, d_k] (None: I) -> [d_v].
    v independent of k is A = 0 with b = E[v].
    """
    q, A, b, mu, Sigma, tau_array = _gaussian_context(q, A, b, mu, Sigma, tau)
    tau = tau_array[()]
    limit: Array = A @ (mu + Sigma @ q / tau) + b
    return limit


def softmax_convergence_constant(q: Any, A: Any, Sigma: Any = None, *, tau: Any = 1.0, noise_std: Any = 0.0
                                 ) -> Any:
    """UPD.10b [derived]: t E||o_t(q) - lim||^2 -> e^{q^T Sigma q/tau^2} (||A Sigma q/tau||^2+tr(A Sigma A^T) + d_v s^2)

    s = noise_std, the standard deviation of each entry of the value noise.

    The t^{-1/2} rate with its constant: o_t is a ratio of sample means (the delta method), for the Gaussian
    context of ``softmax_infinite_context_limit`` with noise eps ~ N(0, sigma^2 I). Independent of mu and b.
    q [d_k], A [d_v, d_k], Sigma (None: I), noise_std sigma >= 0 -> a scalar.
    """
    q, A, _, _, Sigma, tau_array = _gaussian_context(q, A, None, None, Sigma, tau)
    tau = tau_array[()]
    sigma = _validate.scalar("noise_std", noise_std)
    tilt = q @ Sigma @ q / tau**2
    shift = A @ Sigma @ q / tau
    variance = shift @ shift + np.trace(A @ Sigma @ A.T) + A.shape[0] * sigma**2
    constant: Any = precision.exp(np.array([tilt]))[0] * variance
    return constant


# --------------------------------------------------------------------------------------------------------------
# Kernelised DeltaNet: state form vs u-form (claim 5).


def kernel_deltanet_state_recurrent(phi_q: Any, phi_k: Any, v: Any, beta: Any, initial_state: Any = None
                                    ) -> tuple[Array, Array]:
    """UPD.11a [derived]: S_t = S_{t-1} - beta_t (S_{t-1} phi(k_t) - v_t) phi(k_t)^T, o_t = S_t phi(q_t), from S_0.

    phi_q, phi_k [T, d_phi] (a finite feature map applied to q and k, e.g. ``spec.kernels.polynomial_feature_map``),
    v [T, d_v], beta [T] any real, initial_state [d_v, d_phi] or None -> (o [T, d_v], S_T [d_v, d_phi]).
    """
    q, k, v, S0, beta = _qkv(phi_q, phi_k, v, initial_state, {"beta": beta})
    return _scan(lambda S, t: kernel_deltanet_step(S, k[t], v[t], beta[t]), S0, lambda S, t: S @ q[t], q.shape[0])


def kernel_deltanet_u_form(q: Any, k: Any, v: Any, beta: Any, kernel: GramFunction) -> tuple[Array, Array]:
    """UPD.12 [derived]: u_t = beta_t (v_t - sum_{i<t} kappa(k_t, k_i) u_i), o_t = sum_{i<=t} kappa(q_t, k_i) u_i.

    The kernel trick applied to UPD.11a from S_0 = 0: S_t = sum_{i<=t} u_i phi(k_i)^T, so only kappa is needed.
    q, k [T, d_k], v [T, d_v], beta [T], kernel a Gram function (X, Y) -> [n, m] (``spec.kernels``)
    -> (o [T, d_v], U [T, d_v]). Row by row; the Gram rows are computed per token.
    """
    q, k, v, _, beta = _qkv(q, k, v, None, {"beta": beta})
    if not callable(kernel):
        raise TypeError(f"kernel must be a Gram function (X, Y) -> [n, m], got {type(kernel).__name__}")
    T = q.shape[0]
    U = precision.zeros(v.shape, v)
    o = precision.zeros(v.shape, v)
    for t in range(T):
        U[t] = beta[t] * (v[t] - kernel(k[t:t + 1], k[:t])[0] @ U[:t])
        o[t] = kernel(q[t:t + 1], k[:t + 1])[0] @ U[:t + 1]
    return o, U
