"""Associative memory (equations.md section 1): write values under keys, read them back with a query.

One memory, paper layout: keys K [N, d_k], values V [N, d_v], state S [d_v, d_k], read ``S @ q``. A query is a
vector q [d_k] (read -> [d_v]) or a stack Q [m, d_k] (read -> [m, d_v], one row per query).

- linear memory:  S = sum_i v_i k_i^T (AM.1), one step S_t = S_{t-1} + v_t k_t^T (AM.2), read f_S(q) = S q (AM.3);
- kernel memory:  o(q) = sum_i v_i kappa(k_i, q) with any Gram-matrix kernel of ``spec.kernels`` (AM.4), and for a
  kernel with a finite feature map phi the state form S = sum_i v_i phi(k_i)^T, o = S phi(q) (AM.5, AM.6);
- retrieval with q = k_i splits into signal c v_i, c = kappa(k_i, k_i) (AM.7, AM.8), and noise
  r = sum_{j != i} v_j kappa(k_j, k_i) (AM.9); the retrieval SNR of ``spec.snr`` is the ratio of their energies.
  This split is ours ([derived]): the source documents name the retrieval SNR, not the decomposition.

A kernel is passed as a Gram function ``kernel(X [n, d], Y [m, d]) -> [n, m]``, e.g. ``spec.kernels.relu_kernel``
or ``functools.partial(spec.kernels.exp_kernel, tau=2.0)``; a feature map as ``phi(X [n, d]) -> [n, D]``.
Everything runs in float64 or, given mpmath object arrays (``spec.precision.to_mp``), at the working precision.

    >>> import numpy as np
    >>> K = np.eye(3); V = np.arange(6.0).reshape(3, 2)
    >>> memory_read(memory_write(K, V), K[1])  # orthonormal keys: exact recall of v_1
    array([2., 3.])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from spec import _validate, precision
from spec._types import Array

__all__ = [
    "FeatureMap",
    "GramKernel",
    "kernel_memory_read",
    "kernel_memory_state",
    "kernel_memory_state_read",
    "memory_read",
    "memory_write",
    "memory_write_step",
    "retrieval_noise",
    "retrieval_signal",
    "signal_coefficient",
]

GramKernel = Callable[[Array, Array], Array]
"""kappa as a Gram function: (X [n, d], Y [m, d]) -> G [n, m], G[a, b] = kappa(x_a, y_b)."""
FeatureMap = Callable[[Array], Array]
"""phi as a row map: X [n, d] -> Phi [n, D], with phi(x)^T phi(y) = kappa(x, y)."""


def _keys_values(K: Any, V: Any) -> tuple[Array, Array]:
    K = _validate.matrix("K", K)
    V = _validate.matrix("V", V, rows=K.shape[0], rows_of="K")
    K, V = _validate.unify(K, V)
    return K, V


def _query(name: str, q: Any, d: int, d_of: str) -> Array:
    """A query vector [d] or stack [m, d] (validated)."""
    if np.ndim(q) == 1:
        return _validate.vector(name, q, length=d, length_of=d_of)
    return _validate.matrix(name, q, cols=d, cols_of=d_of)


def _index(i: Any, N: int) -> int:
    if isinstance(i, bool) or not isinstance(i, int | np.integer):
        raise TypeError(f"i must be an int index into the N = {N} stored pairs, got {type(i).__name__}")
    if not 0 <= i < N:
        raise ValueError(f"i must satisfy 0 <= i < N = {N} (the number of stored pairs, rows of K), got {i}")
    return int(i)


def _gram(kernel: Any, X: Array, Y: Array) -> Array:
    """kernel(X, Y), checked to be a callable returning an [n, m] Gram matrix."""
    if not callable(kernel):
        raise TypeError(f"kernel must be a Gram function (X [n, d], Y [m, d]) -> [n, m], got {type(kernel).__name__}")
    G = np.asarray(kernel(X, Y))
    if G.shape != (X.shape[0], Y.shape[0]):
        raise ValueError(f"kernel must return a Gram matrix of shape {(X.shape[0], Y.shape[0])}, got {G.shape}")
    return G


def memory_write(K: Any, V: Any) -> Array:
    """AM.1 [paper]: S = sum_i v_i k_i^T = V^T K, the linear associative memory of N pairs (batch form).

    K [N, d_k], V [N, d_v] -> S [d_v, d_k]. Equal to N steps of AM.2 from S_0 = 0 (tests/test_spec_memory.py).
    Source: equations.md section 1.
    """
    K, V = _keys_values(K, V)
    S: Array = V.T @ K
    return S


def memory_write_step(S: Any, k: Any, v: Any) -> Array:
    """AM.2 [paper]: S_t = S_{t-1} + v_t k_t^T, one write of the pair (k_t, v_t) (linear attention's update).

    S [d_v, d_k], k [d_k], v [d_v] -> S [d_v, d_k] (a new array; S is not modified).
    """
    S = _validate.matrix("S", S)
    d_v, d_k = S.shape
    k = _validate.vector("k", k, length=d_k, length_of="S's columns, d_k")
    v = _validate.vector("v", v, length=d_v, length_of="S's rows, d_v")
    S, k, v = _validate.unify(S, k, v)
    updated: Array = S + v[:, None] * k[None, :]
    return updated


def memory_read(S: Any, q: Any) -> Array:
    """AM.3 [paper]: f_S(q) = S q, retrieval from the linear memory.

    S [d_v, d_k]; q [d_k] -> [d_v], or Q [m, d_k] -> [m, d_v] (row a is S q_a).
    """
    S = _validate.matrix("S", S)
    q = _query("q", q, S.shape[1], "S's columns, d_k")
    S, q = _validate.unify(S, q)
    out: Array = q @ S.T
    return out


def kernel_memory_read(K: Any, V: Any, q: Any, kernel: Any) -> Array:
    """AM.4 [paper]: o(q) = sum_i v_i kappa(k_i, q), the kernel memory read in Gram form (no state).

    K [N, d_k], V [N, d_v]; q [d_k] -> [d_v], or Q [m, d_k] -> [m, d_v]. ``kernel`` is a Gram function; it is
    called as kernel(Q, K), i.e. kappa(q_a, k_i), which equals kappa(k_i, q_a) for the symmetric kernels and, for
    ``spec.kernels.softmax_kernel``, normalises over the stored keys as softmax attention does. Equal to the state
    form AM.5 + AM.6 when the kernel has a finite feature map (tests/test_spec_memory.py).
    """
    K, V = _keys_values(K, V)
    q = _query("q", q, K.shape[1], "K's columns, d_k")
    K, V, q = _validate.unify(K, V, q)
    Q = q[None, :] if q.ndim == 1 else q
    out: Array = _gram(kernel, Q, K) @ V
    return out[0] if q.ndim == 1 else out


def kernel_memory_state(K: Any, V: Any, feature_map: Any) -> Array:
    """AM.5 [paper]: S = sum_i v_i phi(k_i)^T = V^T phi(K), the kernel memory's state for a finite feature map.

    K [N, d_k], V [N, d_v], feature_map phi: [N, d_k] -> [N, D]  ->  S [d_v, D].
    """
    K, V = _keys_values(K, V)
    if not callable(feature_map):
        raise TypeError(f"feature_map must be a row map X [n, d] -> [n, D], got {type(feature_map).__name__}")
    Phi = np.asarray(feature_map(K))
    if Phi.ndim != 2 or Phi.shape[0] != K.shape[0]:
        raise ValueError(f"feature_map must return [N, D] with N = {K.shape[0]} rows, got shape {Phi.shape}")
    S: Array = V.T @ Phi
    return S


def kernel_memory_state_read(S: Any, q: Any, feature_map: Any) -> Array:
    """AM.6 [paper]: o(q) = S phi(q), the kernel memory read from its state S [d_v, D].

    q [d_k] -> [d_v], or Q [m, d_k] -> [m, d_v]. ``feature_map`` must map to the D columns of S.
    """
    S = _validate.matrix("S", S)
    q = _validate.vector("q", q) if np.ndim(q) == 1 else _validate.matrix("q", q)
    S, q = _validate.unify(S, q)
    if not callable(feature_map):
        raise TypeError(f"feature_map must be a row map X [n, d] -> [n, D], got {type(feature_map).__name__}")
    Q = q[None, :] if q.ndim == 1 else q
    Phi = np.asarray(feature_map(Q))
    if Phi.ndim != 2 or Phi.shape[1] != S.shape[1]:
        raise ValueError(f"feature_map must return D = {S.shape[1]} columns (S's columns), got shape {Phi.shape}")
    out: Array = Phi @ S.T
    return out[0] if q.ndim == 1 else out


def signal_coefficient(k_i: Any, kernel: Any) -> Any:
    """AM.7 [derived]: c = kappa(k_i, k_i), the signal coefficient of a retrieval with q = k_i (k_i^T k_i if linear).

    k_i [d_k] -> a scalar (float64 or mpmath.mpf).
    """
    k_i = _validate.vector("k_i", k_i)
    return _gram(kernel, k_i[None, :], k_i[None, :])[0, 0]


def retrieval_signal(K: Any, V: Any, i: Any, kernel: Any) -> Array:
    """AM.8 [derived]: signal = c v_i with c = kappa(k_i, k_i), the part of the read at q = k_i that is v_i's own.

    K [N, d_k], V [N, d_v], i in [0, N) -> [d_v].
    """
    K, V = _keys_values(K, V)
    i = _index(i, K.shape[0])
    signal: Array = signal_coefficient(K[i], kernel) * V[i]
    return signal


def retrieval_noise(K: Any, V: Any, i: Any, kernel: Any) -> Array:
    """AM.9 [derived]: r = sum_{j != i} v_j kappa(k_j, k_i), the crosstalk of the other N - 1 pairs at q = k_i.

    K [N, d_k], V [N, d_v], i in [0, N) -> [d_v]; N = 1 gives r = 0. Computed as an explicit sum over j != i,
    independently of AM.4 (the tests check read(k_i) = signal + noise).
    """
    K, V = _keys_values(K, V)
    i = _index(i, K.shape[0])
    others = np.arange(K.shape[0]) != i
    weights = _gram(kernel, K[others], K[i][None, :])[:, 0]
    noise: Array = weights @ V[others] if others.any() else precision.zeros((V.shape[1],), V)
    return noise
