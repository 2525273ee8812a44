"""DeltaFormer (equations.md section 4): a delta rule on the infinite-dimensional state of softmax attention.

One head, paper layout: w, k, q [T, d_k]; v, u, o [T, d_v]; beta [T]. Two stages:

1. write (DF.1): u_t = v_t - beta_t * sum_{j<t} kappa_1(w_t, k_j) u_j, with kappa_1 one of
   ``softmax`` (exp normalised over j < t: the public implementation's kernel [code], the default here as in
   flash-linear-attention), or the paper's three: ``exp``, ``linear``, ``round`` [paper];
2. read (DF.8): o_t = sum_{j<=t} softmax_{j<=t}(scale * q_t^T k_j) u_j, causal softmax attention over (q, k, u).

The write stage has five equivalent forms, deliberately independent of each other (they share no code beyond
the write-score matrix P, so each one checks the others; do not merge them):

- ``deltaformer_u_recurrence``  token by token, computing kappa_1 row by row from w and k        (DF.1)
- ``deltaformer_u_solve``       (I + diag(beta) P) U = V by a general LU solve                     (DF.3)
- ``deltaformer_u_chunked``     block forward substitution over chunks of any size                (DF.4)
- ``deltaformer_u_neumann``     U = sum_{n<T} (-diag(beta) P)^n V                                  (DF.5)
- ``deltaformer_u_inverse_by_squaring``  (I + A)^{-1} = (I - A)(I + A^2)(I + A^4)...               (DF.6)

Every function runs in float64 or, given mpmath object arrays (``spec.precision.to_mp``), at the working mpmath
precision, or, given interval arrays (``spec.precision.to_interval``), as the certified oracle returning an
enclosure of the exact result, through the same code (the round kernel raises ``IntervalAmbiguityError`` when an
interval contains a half-integer).

    >>> import numpy as np
    >>> k = np.eye(3); v = np.arange(6.0).reshape(3, 2)
    >>> deltaformer_u(k, k, v, kernel="linear")  # orthogonal keys: nothing to subtract, u = v
    array([[0., 1.],
           [2., 3.],
           [4., 5.]])
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

from spec import _validate, kernels, precision
from spec._types import Array

__all__ = [
    "KERNELS",
    "causal_softmax",
    "causal_softmax_readout",
    "default_scale",
    "deltaformer_attn",
    "deltaformer_decode_step",
    "deltaformer_u",
    "deltaformer_u_chunked",
    "deltaformer_u_inverse_by_squaring",
    "deltaformer_u_neumann",
    "deltaformer_u_recurrence",
    "deltaformer_u_solve",
    "write_scores",
    "write_similarity_row",
]

WriteKernel = Literal["softmax", "exp", "linear", "round"]
KERNELS: tuple[WriteKernel, ...] = ("softmax", "exp", "linear", "round")
"""The write similarities kappa_1 the spec defines."""


def default_scale(kernel: str, d: int, like: Array) -> Any:
    """The scale used when ``scale=None``: 1/sqrt(d) for softmax/exp, 1 for linear/round.

    Provenance: 1/sqrt(d) for softmax is the public implementation's [code]; for exp it is our choice [derived]
    (the same scale as softmax, whose normaliser it drops; the paper gives none); 1 for linear and round is ours
    [derived] (the paper writes them unscaled).

    In the number type of ``like``, so an mpmath run uses 1/sqrt(d) to the working precision, not its float64
    rounding, and an interval run an enclosure of 1/sqrt(d).
    """
    one = precision.scalar(1, like)
    if kernel in ("linear", "round"):
        return one
    root: Any = precision.sqrt(np.array([precision.scalar(d, like)]))[0]
    return one / root


def causal_softmax(scores: Array, *, strict: bool) -> Array:
    """DF.7 [code]: row-wise softmax of scores [T, T] over j < t (``strict``) or j <= t; masked entries are 0.

    A row with no admissible entry (row 0 when ``strict``) is all zeros: u_0 = v_0 has nothing to subtract.
    The row maximum over the admissible entries is subtracted first (an exact identity).
    """
    T = scores.shape[0]
    P = precision.zeros(scores.shape, scores)
    for t in range(T):
        stop = t if strict else t + 1
        if stop == 0:
            continue
        row = scores[t, :stop]
        weights = precision.exp(row - precision.softmax_shift(row))
        P[t, :stop] = weights / weights.sum()
    return P


def write_scores(w: Array, k: Array, *, kernel: str, scale: Any) -> Array:
    """DF.2 [derived]: P [T, T], P[t, j] = kappa_1(w_t, k_j) for j < t and 0 for j >= t (strictly lower).

    ``softmax``: exp(scale w_t^T k_j) normalised over j < t [code]; ``exp``: exp(scale w_t^T k_j);
    ``linear``: scale w_t^T k_j; ``round``: round(scale w_t^T k_j) [reconstructed]. exp, linear and round are the
    paper's three write kernels [paper]; the default scales are ``default_scale``'s. Built from the Gram
    functions of ``spec.kernels``; the recurrence DF.1 recomputes kappa_1 on its own.
    """
    if kernel == "softmax":
        return causal_softmax(kernels.linear_kernel(w, k) * scale, strict=True)
    if kernel == "exp":
        gram = kernels.exp_kernel(w, k, tau=1 / scale)
    elif kernel == "linear":
        gram = kernels.linear_kernel(w * scale, k)
    else:
        gram = kernels.round_kernel(w * scale, k)
    return np.tril(gram, k=-1)


def write_similarity_row(w_t: Array, K_prev: Array, *, kernel: str, scale: Any) -> Array:
    """DF.2a [derived]: kappa_1(w_t, k_j) for every earlier key j < t, one row of P computed directly.

    w_t [d_k], K_prev [t, d_k] (t >= 1) -> [t]. Used by the token recurrence and the decoding step; the matrix
    forms use ``write_scores`` instead, which shares no code with this function.
    """
    s: Array = (K_prev @ w_t) * scale
    if kernel == "softmax":
        e = precision.exp(s - precision.softmax_shift(s))
        total: Array = e.sum()
        return e / total
    if kernel == "exp":
        return precision.exp(s)
    if kernel == "linear":
        return s
    return precision.nint(s)


def deltaformer_u_recurrence(w: Array, k: Array, v: Array, beta: Array, *, kernel: str, scale: Any) -> Array:
    """DF.1 [paper][code]: u_t = v_t - beta_t sum_{j<t} kappa_1(w_t, k_j) u_j, token by token.

    The definition: [paper] for the form, [code] for beta_t and the softmax over j < t; u_0 = v_0.
    w, k [T, d_k], v [T, d_v], beta [T] -> u [T, d_v]. Inputs are assumed validated (see ``deltaformer_u``).
    """
    T = v.shape[0]
    u = precision.zeros(v.shape, v)
    for t in range(T):
        if t == 0:
            u[0] = v[0]
            continue
        kappa_1 = write_similarity_row(w[t], k[:t], kernel=kernel, scale=scale)
        u[t] = v[t] - beta[t] * (kappa_1 @ u[:t])
    return u


def deltaformer_u_solve(P: Array, v: Array, beta: Array) -> Array:
    """DF.3 [derived]: U = (I + diag(beta) P)^{-1} V, by a general LU solve (not a substitution loop).

    P [T, T] strictly lower triangular (``write_scores``), v [T, d_v], beta [T] -> u [T, d_v].
    """
    T = v.shape[0]
    return precision.solve(precision.eye(T, v) + beta[:, None] * P, v)


def deltaformer_u_chunked(P: Array, v: Array, beta: Array, chunk_size: int) -> Array:
    """DF.4 [code]: block forward substitution over chunks [s, s + C) of any size C >= 1 (C need not divide T).

    For each chunk, in order: rhs = V_c - diag(beta_c) P[c, :s] U[:s] (contributions of all earlier chunks), then
    solve the unit lower-triangular diagonal block (I + diag(beta_c) P[c, c]) U_c = rhs. -> u [T, d_v].
    ``chunk_size``: an int >= 1 (TypeError / ValueError otherwise).
    """
    chunk_size = _validate.positive_int("chunk_size", chunk_size)
    T = v.shape[0]
    u = precision.zeros(v.shape, v)
    for s in range(0, T, chunk_size):
        e = min(s + chunk_size, T)
        rhs = v[s:e] - beta[s:e, None] * (P[s:e, :s] @ u[:s])
        block = precision.eye(e - s, v) + beta[s:e, None] * P[s:e, s:e]
        u[s:e] = precision.solve(block, rhs)
    return u


def deltaformer_u_neumann(P: Array, v: Array, beta: Array) -> Array:
    """DF.5 [derived]: U = sum_{n=0}^{T-1} (-diag(beta) P)^n V; finite because diag(beta) P is nilpotent.

    P [T, T] strictly lower triangular, v [T, d_v], beta [T] -> u [T, d_v].
    """
    term = v.copy()
    total = v.copy()
    for _ in range(1, v.shape[0]):
        term = -(beta[:, None] * (P @ term))
        total = total + term
    return total


def deltaformer_u_inverse_by_squaring(P: Array, v: Array, beta: Array) -> Array:
    """DF.6 [reconstructed]: (I + A)^{-1} = (I - A)(I + A^2)(I + A^4)...(I + A^{2^{m-1}}), A = diag(beta) P.

    Exact once 2^m >= T (A^T = 0); m = max(1, ceil(log2 T)) factors. Exact in exact arithmetic; in fp16/fp32
    the powers of A can grow large and cancel, which is why kernels solve by substitution instead.
    -> u [T, d_v].
    """
    T = v.shape[0]
    identity = precision.eye(T, v)
    A: Array = beta[:, None] * P
    inverse: Array = identity - A
    power = A
    for _ in range(1, max(1, math.ceil(math.log2(T)))):
        power = power @ power
        inverse = inverse @ (identity + power)
    return inverse @ v


def causal_softmax_readout(q: Array, k: Array, u: Array, scale: Any) -> Array:
    """DF.8 [paper][code]: o_t = sum_{j<=t} softmax_{j<=t}(scale q_t^T k_j) u_j (kappa_2, diagonal included).

    [paper]: the read-out is kappa_2 = causal softmax attention over (q, k, u). [code]: the scale (1/sqrt(d_k) by
    default) and the diagonal j = t included, as the public implementation reads.

    q, k [T, d_k], u [T, d_v] -> o [T, d_v].
    """
    return causal_softmax(kernels.linear_kernel(q, k) * scale, strict=False) @ u


_NO_Q = object()
"""``_inputs``'s marker for "no q argument" (deltaformer_u); a q of None is a missing array, not this."""


def _inputs(w: Any, k: Any, v: Any, beta: Any, kernel: Any, scale: Any, names: tuple[str, str],
            q: Any = _NO_Q) -> tuple[Array, Array, Array, Array, Array, str, Any]:
    """Validate (w, k, v, beta and q if the caller has one) and unify their number type; resolve ``scale``.

    ``names`` = (name of w, name of the caller). Returns (w, k, v, beta, q, kernel, scale); q is w when the caller
    has none.
    """
    w_name, caller = names
    kernel = _validate.choice("kernel", kernel, KERNELS)
    w = _validate.matrix(w_name, w)
    T, d_k = w.shape
    k = _validate.matrix("k", k, rows=T, rows_of=w_name, cols=d_k, cols_of=w_name)
    v = _validate.matrix("v", v, rows=T, rows_of=w_name)
    b = np.ones(T) if beta is None else _validate.vector("beta", beta, length=T, length_of=w_name)
    q = w if q is _NO_Q else _validate.matrix("q", q, rows=T, rows_of=w_name, cols=d_k, cols_of=w_name)
    w, k, v, b, q = _validate.unify(w, k, v, b, q)
    if scale is None:
        scale = default_scale(kernel, d_k, v)
    else:
        scale = precision.scalar(_validate.scalar(f"scale (of {caller})", scale), v)
    return w, k, v, b, q, kernel, scale


def deltaformer_u(w: Any, k: Any, v: Any, beta: Any = None, *, kernel: str = "softmax", scale: Any = None) -> Array:
    """DF.1 [paper][code]: DeltaFormer's written values u_t = v_t - beta_t sum_{j<t} kappa_1(w_t, k_j) u_j.

    Args:
        w: write vectors [T, d_k] (the keys in the paper, the queries in the public implementation).
        k: keys [T, d_k].
        v: values [T, d_v].
        beta: per-token strength [T], any real value (unconstrained, as the public code); None means ones.
        kernel: kappa_1, one of "softmax" (normalised over j < t: the public implementation's kernel [code], the
            default, as flash-linear-attention), or the paper's three [paper]: "exp", "linear", "round" (our
            reading of round is [reconstructed]).
        scale: multiplies w_t^T k_j inside kappa_1; None means 1/sqrt(d_k) for softmax [code] and exp (our choice
            [derived]), 1 for linear/round (``default_scale``).

    Returns:
        u [T, d_v], float64 (or mpmath when any input is an mpmath object array). u_0 = v_0; T = 1 returns v.

    Raises:
        TypeError: non-real input (complex, strings) or a non-numeric ``scale``.
        ValueError: wrong rank, mismatched T or d_k, empty sequence, NaN/Inf, wrong beta length, unknown kernel.
    """
    w, k, v, b, _, kernel, scale = _inputs(w, k, v, beta, kernel, scale, ("w", "deltaformer_u"))
    return deltaformer_u_recurrence(w, k, v, b, kernel=kernel, scale=scale)


def deltaformer_attn(q: Any, k: Any, v: Any, beta: Any = None, *, write: str = "k", kernel: str = "softmax",
                     scale: Any = None) -> Array:
    """DF.9 [paper][code]: DeltaFormer attention, o = causal_softmax(scale Q K^T) U with U from DF.1.

    Args:
        q, k: queries and keys [T, d_k]. v: values [T, d_v]. beta: [T] or None (ones).
        write: "k" uses w = k in the write similarity (the paper's k-k form); "q" uses w = q (the public code).
        kernel: the write similarity kappa_1 (see ``deltaformer_u``). The read-out is always causal softmax.
        scale: None means 1/sqrt(d_k) for the read-out and ``deltaformer_u``'s default for the write; a number
            is used for both.

    Returns:
        o [T, d_v].
    """
    _validate.choice("write", write, ("k", "q"))
    w, k, v, b, q, kernel, write_scale = _inputs(k, k, v, beta, kernel, scale, ("k", "deltaformer_attn"), q=q)
    if write == "q":
        w = q
    read_scale = default_scale("softmax", k.shape[1], v) if scale is None else write_scale
    u = deltaformer_u_recurrence(w, k, v, b, kernel=kernel, scale=write_scale)
    return causal_softmax_readout(q, k, u, read_scale)


def deltaformer_decode_step(cache_k: Any, cache_u: Any, q_t: Any, k_t: Any, v_t: Any, beta_t: Any = 1.0, *,
                            write: str = "k", kernel: str = "softmax",
                            scale: Any = None) -> tuple[Array, Array, Array]:
    """DF.10 [derived]: one decoding step over a (k, u) cache instead of a (k, v) cache.

    u_t = v_t - beta_t sum_{j<t} kappa_1(w_t, k_j) u_j (one attention of w_t over the cache), append (k_t, u_t),
    then o_t = sum_{j<=t} softmax(scale q_t^T k_j) u_j.

    Args:
        cache_k [t, d_k], cache_u [t, d_v]: keys and written values of the earlier tokens (t may be 0).
        q_t, k_t [d_k], v_t [d_v]: the new token. beta_t: a real number. write, kernel, scale: as deltaformer_attn.

    Returns:
        (o_t [d_v], cache_k [t + 1, d_k], cache_u [t + 1, d_v]). Feeding tokens one at a time from empty caches
        gives exactly the rows of ``deltaformer_attn`` (tests/test_spec_deltaformer.py).
    """
    _validate.choice("write", write, ("k", "q"))
    kernel = _validate.choice("kernel", kernel, KERNELS)
    q_t = _validate.vector("q_t", q_t)
    k_t = _validate.vector("k_t", k_t, length=q_t.shape[0], length_of="q_t")
    v_t = _validate.vector("v_t", v_t)
    d_k, d_v = q_t.shape[0], v_t.shape[0]
    cache_k = _validate.matrix("cache_k", cache_k, cols=d_k, cols_of="q_t", allow_empty=True)
    cache_u = _validate.matrix("cache_u", cache_u, rows=cache_k.shape[0], rows_of="cache_k", cols=d_v,
                               cols_of="v_t", allow_empty=True)
    beta = _validate.vector("beta_t", np.array([beta_t]) if np.ndim(beta_t) == 0 else beta_t, length=1,
                            length_of="one token")
    cache_k, cache_u, q_t, k_t, v_t, beta = _validate.unify(cache_k, cache_u, q_t, k_t, v_t, beta)
    write_scale = (default_scale(kernel, d_k, v_t) if scale is None
                   else precision.scalar(_validate.scalar("scale", scale), v_t))
    read_scale = default_scale("softmax", d_k, v_t) if scale is None else write_scale
    w_t = q_t if write == "q" else k_t
    keys = np.concatenate([cache_k, k_t[None]], axis=0)
    u_all = np.concatenate([cache_u, v_t[None]], axis=0)
    if cache_k.shape[0] > 0:
        u_all[-1] = v_t - beta[0] * (write_similarity_row(w_t, cache_k, kernel=kernel, scale=write_scale) @ cache_u)
    scores = (keys @ q_t) * read_scale
    e = precision.exp(scores - precision.softmax_shift(scores))
    o_t = (e / e.sum()) @ u_all
    return o_t, keys, u_all
