"""Expressivity (equations.md section 5): the swap task, and exact trackers built from the delta rule.

The task: ``n`` boxes hold ``n`` objects, object p in box p at first; a sequence of swaps (a_t, b_t), a_t != b_t,
exchanges the contents of two boxes; a query asks which object is in box p. For n >= 5 this is the word problem of
the symmetric group, NC^1-complete.

Two trackers read the same token stream (SWAP.4): n *place* tokens (key e_p, value f_p: object p into box p), then
one *swap* token per swap (key e_a - e_b, value 0). Box codes e_p are rows of ``codes`` [n, d_k]; object codes
f_o are rows of ``values`` [n, d_v] (one-hot by default, so a read is exact when it *is* a row of the identity).

- Linear DeltaNet (SWAP.5, [literature]): S_t = S_{t-1}(I - beta_t k_t k_t^T) + beta_t v_t k_t^T, read S e_p. With
  orthonormal codes and k = e_a - e_b, beta = 2/||k||^2 = 1 makes I - beta k k^T the Householder reflection that
  exchanges e_a and e_b: exact tracking, but only for n <= d_k.
- DeltaFormer with the round kernel (SWAP.10, SWAP.11, [derived]): u_t = v_t - sum_{i<t} round(s k_t^T k_i) u_i,
  read o(p) = sum_i round(s e_p^T k_i) u_i. With codes of coherence mu < 1/7 and s = 1/(1 + mu) (SWAP.8), every
  rounded product equals the product of *orthonormal* codes in R^n, so the tracker is exactly DeltaNet with n
  orthonormal codes: exact tracking with n = 2 d_k (identity + Hadamard codes, SWAP.6). Derivation, and why the
  unscaled kernel (s = 1) is exact at d_k = 64 only through ties-to-even: docs/derivations/swap.md.

    >>> task = swap_task(n=8, T=5, seed=0)
    >>> codes = hadamard_codes(4)  # 8 codes in R^4, coherence 1/2: too coherent for the round tracker
    >>> code_coherence(codes)
    0.5
    >>> codes = hadamard_codes(256)  # 512 codes in R^256, coherence 1/16
    >>> print(f"{round_margin(code_coherence(codes)):.6f}")  # (1 - 7 mu) / (2 (1 + mu)) = 9/34
    0.264706

The task generator and token encoding are integer-valued (NumPy int64). The trackers are precision-generic: given
mpmath codes (``spec.precision.to_mp``) they run in mpmath through the same code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import mpmath
import numpy as np
import numpy.typing as npt

from spec import _validate, deltaformer, kernels, precision
from spec._types import Array

__all__ = [
    "LAYOUTS",
    "SwapTask",
    "SwapTokens",
    "code_coherence",
    "decode_objects",
    "decode_swap_tokens",
    "deltanet_swap_tracker",
    "encode_swap_tokens",
    "hadamard_codes",
    "round_margin",
    "round_scale",
    "round_tracker_read",
    "round_tracker_u",
    "softmax_tracker_read",
    "softmax_tracker_tokens",
    "softmax_tracker_u",
    "swap_permutations",
    "swap_task",
    "swap_task_batch",
    "swap_tokens",
]

Ints = npt.NDArray[np.int64]
"""An int64 array (swaps, permutations, token ids)."""

LAYOUTS = ("pair", "split")
"""Token layouts of ``encode_swap_tokens``."""

TRACKER_KERNELS = ("round", "linear")
"""Write/read kernels of the u-form tracker: round(s x^T y) (the construction) or s x^T y (linear DeltaNet)."""


@dataclass(frozen=True)
class SwapTask:
    """One swap sequence with its ground truth and queries.

    Attributes:
        n: number of boxes = number of objects.
        swaps: [T, 2] int64, row t = (a_t, b_t), a_t != b_t.
        permutations: [T + 1, n] int64; permutations[t, p] = the object in box p after the first t swaps
            (row 0 is the identity).
        queries: [Q] int64 boxes asked about after all T swaps.
        answers: [Q] int64, answers[i] = permutations[T, queries[i]].
    """

    n: int
    swaps: Ints
    permutations: Ints
    queries: Ints
    answers: Ints


@dataclass(frozen=True)
class SwapTokens:
    """A task as token sequences, one per query (see ``encode_swap_tokens`` for the layouts).

    Attributes:
        tokens: [Q, L] int64 input ids in [0, vocab_size).
        targets: [Q] int64, the object in the queried box, in [0, n) (a separate output vocabulary).
        vocab_size: number of input ids.
        layout: "pair" or "split".
    """

    tokens: Ints
    targets: Ints
    vocab_size: int
    layout: str


def _count(name: str, x: Any, *, minimum: int) -> int:
    if isinstance(x, bool) or not isinstance(x, int | np.integer):
        raise TypeError(f"{name} must be an int, got {type(x).__name__}")
    if x < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {x}")
    return int(x)


def _swaps(name: str, x: Any, n: int) -> Ints:
    """A [T, 2] integer array (T >= 0) of box pairs in [0, n) with a_t != b_t."""
    if x is None:
        raise TypeError(f"{name} must be an integer array [T, 2], got None")
    a = np.asarray(x)
    if a.size == 0 and a.ndim <= 2 and a.dtype.kind in "iuf":
        return np.zeros((0, 2), dtype=np.int64)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array [T, 2], got dtype {a.dtype}")
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"{name} must have shape [T, 2], got {a.shape}")
    if (a < 0).any() or (a >= n).any():
        raise ValueError(f"{name} must hold boxes in [0, {n}) (n = {n}), got values in [{a.min()}, {a.max()}]")
    same = np.flatnonzero(a[:, 0] == a[:, 1])
    if same.size:
        raise ValueError(f"{name} row {same[0]} swaps box {a[same[0], 0]} with itself; a_t != b_t is required")
    return a.astype(np.int64)


def _codes(name: str, x: Any) -> Array:
    codes = _validate.matrix(name, x)
    if codes.shape[0] < 2:
        raise ValueError(f"{name} must hold n >= 2 codes (rows), got {codes.shape[0]}")
    return codes


def swap_permutations(n: int, swaps: Any) -> Ints:
    """SWAP.1 [paper]: pi_0 = id, pi_t = pi_{t-1} with the contents of boxes a_t and b_t exchanged.

    Args:
        n: number of boxes (>= 2).
        swaps: [T, 2] integer box pairs, a_t != b_t; T = 0 is allowed.

    Returns:
        [T + 1, n] int64; row t is pi_t, pi_t[p] = the object in box p after t swaps. As a composition,
        pi_t = pi_{t-1} o (a_t b_t).
    """
    n = _count("n", n, minimum=2)
    swaps = _swaps("swaps", swaps, n)
    T = swaps.shape[0]
    permutations = np.empty((T + 1, n), dtype=np.int64)
    permutations[0] = np.arange(n)
    for t, (a, b) in enumerate(swaps, start=1):
        permutations[t] = permutations[t - 1]
        permutations[t, [a, b]] = permutations[t - 1, [b, a]]
    return permutations


def _draw_swaps(rng: np.random.Generator, n: int, shape: tuple[int, ...]) -> Ints:
    """SWAP.2's law for swaps of ``shape``: a uniform on [0, n), then b = (a + uniform[1, n)) mod n. -> [*shape, 2]."""
    a = rng.integers(0, n, shape)
    b = (a + rng.integers(1, n, shape)) % n
    return np.stack([a, b], axis=-1).astype(np.int64)


def swap_task(n: int, T: int, *, n_queries: int = 1, seed: int = 0) -> SwapTask:
    """SWAP.2 [derived]: T uniform swaps (a_t uniform, b_t uniform over the other n - 1 boxes), Q uniform queries.

    The task is the paper's (equations.md section 5); this sampling law is our choice. Deterministic for a seed
    (``numpy.random.default_rng(seed)``, drawn in the order a, b, queries).

    Args:
        n: boxes (>= 2). T: swaps (>= 0). n_queries: queries (>= 0). seed: a non-negative int.

    Returns:
        ``SwapTask`` with swaps [T, 2], permutations [T + 1, n] (SWAP.1), queries [Q], answers [Q].
    """
    n = _count("n", n, minimum=2)
    T = _count("T", T, minimum=0)
    n_queries = _count("n_queries", n_queries, minimum=0)
    seed = _count("seed", seed, minimum=0)
    rng = np.random.default_rng(seed)
    swaps = _draw_swaps(rng, n, (T,))
    queries = rng.integers(0, n, n_queries).astype(np.int64)
    permutations = swap_permutations(n, swaps)
    return SwapTask(n=n, swaps=swaps, permutations=permutations, queries=queries,
                    answers=permutations[T, queries].copy())


def swap_task_batch(n: int, T: int, count: int, *, seed: int | Sequence[int] = 0) -> tuple[Ints, Ints]:
    """SWAP.2b [derived]: ``count`` independent sequences of SWAP.2's law at once, with their SWAP.1 permutations.

    Same law as ``swap_task`` per sequence (a_t uniform on [0, n), b_t = (a_t + uniform[1, n)) mod n, uniform over
    the other n - 1 boxes), drawn as one batch from ``numpy.random.default_rng(seed)`` (all a, then all b), so the
    numbers differ from ``count`` calls of ``swap_task``. The permutations are SWAP.1 vectorised over sequences (a
    loop over t only): one Python step per swap instead of one per swap and sequence.

    Args:
        n: boxes (>= 2). T: swaps per sequence (>= 0). count: sequences (>= 1).
        seed: a non-negative int, or a sequence of them (entropy for ``default_rng``).

    Returns:
        (swaps [count, T, 2], permutations [count, T + 1, n]), int64; permutations[i] = swap_permutations(n, swaps[i]).
    """
    n = _count("n", n, minimum=2)
    T = _count("T", T, minimum=0)
    count = _count("count", count, minimum=1)
    entropy = [_count("seed", x, minimum=0) for x in seed] if isinstance(seed, list | tuple) else \
        _count("seed", seed, minimum=0)
    swaps = _draw_swaps(np.random.default_rng(entropy), n, (count, T))
    a, b = swaps[..., 0], swaps[..., 1]
    rows = np.arange(count)
    permutations = np.empty((count, T + 1, n), dtype=np.int64)
    permutations[:, 0] = np.arange(n)
    for t in range(T):
        current = permutations[:, t + 1]
        current[:] = permutations[:, t]
        current[rows, a[:, t]], current[rows, b[:, t]] = permutations[rows, t, b[:, t]], permutations[rows, t, a[:, t]]
    return swaps, permutations


def encode_swap_tokens(task: SwapTask, layout: str = "pair") -> SwapTokens:
    """SWAP.3 [derived]: the task as token ids, one sequence per query (our layout; the paper gives none).

    ``"pair"`` (one token per swap, L = T + 1, vocab n^2):
        swap (a, b) -> a (n - 1) + b - [b > a]   in [0, n(n - 1)), ordered pairs, so (a, b) != (b, a);
        query box p -> n (n - 1) + p              in [n(n - 1), n^2).
    ``"split"`` (two tokens per swap, L = 2 T + 2, vocab n + 1):
        box p -> p in [0, n); the sequence is a_1 b_1 a_2 b_2 ... a_T b_T QUERY p with QUERY = n.

    Targets are the object ids pi_T(p) in [0, n). ``decode_swap_tokens`` inverts both layouts.
    """
    if not isinstance(task, SwapTask):
        raise TypeError(f"task must be a SwapTask, got {type(task).__name__}")
    layout = _validate.choice("layout", layout, LAYOUTS)
    n, swaps, queries = task.n, task.swaps, task.queries
    a, b = swaps[:, 0], swaps[:, 1]
    Q = queries.shape[0]
    if layout == "pair":
        body = a * (n - 1) + b - (b > a)
        query_tokens = n * (n - 1) + queries
        vocab = n * n
    else:
        body = swaps.reshape(-1)
        query_tokens = queries
        vocab = n + 1
    prefix = np.broadcast_to(body, (Q, body.shape[0]))
    if layout == "pair":
        tokens = np.concatenate([prefix, query_tokens[:, None]], axis=1)
    else:
        tokens = np.concatenate([prefix, np.full((Q, 1), n), query_tokens[:, None]], axis=1)
    return SwapTokens(tokens=tokens.astype(np.int64), targets=task.answers.copy(), vocab_size=vocab,
                      layout=layout)


def decode_swap_tokens(tokens: Any, n: int, layout: str = "pair") -> tuple[Ints, int]:
    """SWAP.3a [derived]: one token sequence of SWAP.3 back to (swaps [T, 2], queried box p).

    Raises ValueError naming ``tokens`` if the sequence is not a valid encoding for this n and layout.
    """
    n = _count("n", n, minimum=2)
    layout = _validate.choice("layout", layout, LAYOUTS)
    seq = np.asarray(tokens)
    if seq.dtype.kind not in "iu" or seq.ndim != 1 or seq.shape[0] == 0:
        raise ValueError(f"tokens must be a non-empty 1-D integer array, got dtype {seq.dtype}, shape {seq.shape}")
    body, last = seq[:-1].astype(np.int64), int(seq[-1])
    if layout == "pair":
        if not n * (n - 1) <= last < n * n or (body < 0).any() or (body >= n * (n - 1)).any():
            raise ValueError(f"tokens is not a 'pair' encoding for n = {n}: swap ids must lie in "
                             f"[0, {n * (n - 1)}) and the last id in [{n * (n - 1)}, {n * n})")
        a = body // (n - 1)
        rest = body % (n - 1)
        b = rest + (rest >= a)
        return np.stack([a, b], axis=1), last - n * (n - 1)
    if seq.shape[0] % 2 != 0 or seq[-2] != n or (body[:-1] < 0).any() or (body[:-1] >= n).any() or not 0 <= last < n:
        raise ValueError(f"tokens is not a 'split' encoding for n = {n}: expected box ids in [0, {n}) in pairs, "
                         f"then QUERY = {n}, then a box id")
    return _swaps("tokens (decoded swaps)", body[:-1].reshape(-1, 2), n), last


def _token_inputs(codes: Any, swaps: Any, values: Any) -> tuple[Array, Ints, Array]:
    """Validated (codes [n, d_k], swaps [T, 2], values [n, d_v]; one-hot when None) in one number type."""
    codes = _codes("codes", codes)
    n = codes.shape[0]
    swaps = _swaps("swaps", swaps, n)
    values = precision.eye(n, codes) if values is None else _validate.matrix("values", values, rows=n,
                                                                              rows_of="codes")
    codes, values = _validate.unify(codes, values)
    return codes, swaps, values


def swap_tokens(codes: Any, swaps: Any, values: Any = None) -> tuple[Array, Array]:
    """SWAP.4 [literature]: keys k = (e_0, ..., e_{n-1}, e_{a_1} - e_{b_1}, ...), values (f_0, ..., f_{n-1}, 0, ...).

    Place tokens (k = e_p, v = f_p) put object p into box p; swap tokens (k = e_a - e_b, v = 0) exchange boxes.

    Args:
        codes: box codes [n, d_k] (rows e_p), n >= 2.
        swaps: [T, 2] integer box pairs in [0, n), a_t != b_t.
        values: object codes [n, d_v] (rows f_o); None means the n x n identity (one-hot objects).

    Returns:
        (K [n + T, d_k], V [n + T, d_v]) in the number type of the inputs.
    """
    codes, swaps, values = _token_inputs(codes, swaps, values)
    K = np.concatenate([codes, codes[swaps[:, 0]] - codes[swaps[:, 1]]], axis=0)
    V = np.concatenate([values, precision.zeros((swaps.shape[0], values.shape[1]), values)], axis=0)
    return K, V


def deltanet_swap_tracker(codes: Any, swaps: Any, values: Any = None, *, beta: str = "reflection",
                          init: str = "delta") -> Array:
    """SWAP.5 [literature]: S_t = S_{t-1}(I - beta_t k_t k_t^T) + beta_t v_t k_t^T over SWAP.4; reads o(p) = S e_p.

    With orthonormal codes and k = e_a - e_b (||k||^2 = 2), beta = 1 gives I - k k^T = I - 2 k k^T / ||k||^2, the
    Householder reflection that exchanges e_a and e_b, so S e_a and S e_b swap (exact tracking, n <= d_k). A unit
    key (e_a - e_b)/sqrt(2) needs beta = 2, outside the sigmoid range (0, 1) of the original DeltaNet.

    Args:
        codes [n, d_k], swaps [T, 2], values [n, d_v] or None (one-hot): as ``swap_tokens``.
        beta: "reflection": beta_t = 1/||e_p||^2 on place tokens and 2/||k_t||^2 on swap tokens, so every swap is
            an exact reflection even for non-orthogonal codes (the most favourable linear DeltaNet);
            "one": beta_t = 1 on every token (the textbook form; not a reflection when ||k||^2 != 2).
        init: "delta": S_0 = 0 and the place tokens are written by the delta rule (the same token stream as the
            round tracker); "hebbian": S_0 = sum_p f_p e_p^T and the place tokens are skipped.

    Returns:
        reads [n, d_v] after all swaps; row p is S_T e_p.
    """
    beta = _validate.choice("beta", beta, ("reflection", "one"))
    init = _validate.choice("init", init, ("delta", "hebbian"))
    K, V = swap_tokens(codes, swaps, values)
    n = _codes("codes", codes).shape[0]
    codes = K[:n]
    if init == "hebbian":
        S = V[:n].T @ codes
        start = n
    else:
        S = precision.zeros((V.shape[1], K.shape[1]), V)
        start = 0
    for t in range(start, K.shape[0]):
        k_t, v_t = K[t], V[t]
        if beta == "one":
            beta_t: Any = 1
        else:
            norm2 = k_t @ k_t
            if norm2 == 0:
                raise ValueError(f"codes give a zero key at token {t} (a zero code, or two equal codes swapped); "
                                 "beta = 2/||k||^2 is undefined")
            beta_t = (1 if t < n else 2) / norm2
        # S (I - beta k k^T) + beta v k^T, written as the SGD step S - beta (S k - v) k^T.
        S = S - beta_t * np.outer(S @ k_t - v_t, k_t)
    reads: Array = (S @ codes.T).T
    return reads


def _sylvester_hadamard(d: int) -> Array:
    H = np.ones((1, 1))
    while H.shape[0] < d:
        H = np.block([[H, H], [H, -H]])
    return H


def hadamard_codes(d_k: int, n: int | None = None, *, like: Any = None) -> Array:
    """SWAP.6 [derived]: e_p = p-th unit vector for p < d_k, e_{d_k + j} = H_j / sqrt(d_k) (Sylvester Hadamard).

    2 d_k unit vectors in R^{d_k} (two mutually unbiased bases) with coherence exactly 1/sqrt(d_k): the identity
    and the Hadamard rows are each orthonormal, and |e_i^T h_j| = 1/sqrt(d_k) across the two bases.

    Args:
        d_k: a power of two (>= 1).
        n: how many codes to return (the first n rows), 1 <= n <= 2 d_k; None means 2 d_k.
        like: an array whose number type to use (an mpmath object array gives 1/sqrt(d_k) at the working
            precision); None means float64.

    Returns:
        codes [n, d_k].
    """
    d_k = _count("d_k", d_k, minimum=1)
    if d_k & (d_k - 1):
        raise ValueError(f"d_k must be a power of two (Sylvester Hadamard), got {d_k}")
    n = 2 * d_k if n is None else _count("n", n, minimum=1)
    if n > 2 * d_k:
        raise ValueError(f"n must be <= 2 d_k = {2 * d_k} (identity + Hadamard), got {n}")
    number = np.zeros(1) if like is None else np.asarray(like)
    H = _sylvester_hadamard(d_k)
    if precision.is_mp(number):
        H = precision.to_mp(H)
    scale = precision.sqrt(precision.zeros((1,), number) + d_k)[0]
    codes: Array = np.concatenate([precision.eye(d_k, number), H / scale], axis=0)
    return codes[:n]


def code_coherence(codes: Any) -> Any:
    """SWAP.7 [literature]: mu = max_{a != b} |e_a^T e_b|, the mutual coherence of the rows of codes [n, d_k].

    Meaningful for unit-norm codes (the margin SWAP.9 assumes ||e_p|| = 1). Returns a float (or an mpmath number
    for mpmath codes).
    """
    codes = _codes("codes", codes)
    gram = np.abs(kernels.linear_kernel(codes, codes))
    n = codes.shape[0]
    off_diagonal = gram[~np.eye(n, dtype=bool)]
    return max(off_diagonal.tolist()) if precision.is_mp(codes) else float(off_diagonal.max())


def round_scale(mu: Any) -> Any:
    """SWAP.8 [derived]: s = 1 / (1 + mu), the scale inside round(s x^T y) that maximises the margin SWAP.9."""
    mu = _validate.scalar("mu", mu)
    if not 0 <= mu < 1:
        raise ValueError(f"mu must be a coherence in [0, 1), got {mu}")
    return 1 / (1 + mu)


def round_margin(mu: Any, scale: Any = None) -> Any:
    """SWAP.9 [derived]: m = 1/2 - max(4 s mu, |1 - s| + 3 s mu, 2|1 - s| + 2 s mu); m > 0 => exact tracking.

    The distance to the nearest rounding boundary of s x^T y for every pair of keys/queries of the trackers,
    in the worst case over unit-norm codes of coherence mu (true products 0, +-1, +-2 carry errors up to 4 mu,
    3 mu, 2 mu). At s = 1/(1 + mu) (SWAP.8) the three terms are equal and m = (1 - 7 mu) / (2 (1 + mu)), positive
    iff mu < 1/7; at s = 1 it is 1/2 - 4 mu (mu < 1/8, the outline's condition). ``scale`` None means SWAP.8.
    """
    mu = _validate.scalar("mu", mu)
    if not 0 <= mu < 1:
        raise ValueError(f"mu must be a coherence in [0, 1), got {mu}")
    s = round_scale(mu) if scale is None else _validate.scalar("scale", scale, positive=True)
    half = mpmath.mpf(1) / 2 if isinstance(mu, mpmath.mpf) else 0.5
    gap = abs(1 - s)
    return half - max(4 * s * mu, gap + 3 * s * mu, 2 * gap + 2 * s * mu)


def _scale_for(codes: Array, scale: Any) -> Any:
    if scale is None:
        return round_scale(code_coherence(codes))
    return _validate.scalar("scale", scale, positive=True)


def round_tracker_u(codes: Any, swaps: Any, values: Any = None, *, scale: Any = None,
                    kernel: str = "round") -> tuple[Array, Array]:
    """SWAP.10 [derived]: u_t = v_t - sum_{i<t} round(s k_t^T k_i) u_i over the tokens of SWAP.4 (DF.1, beta = 1).

    DeltaFormer's write (``spec.deltaformer.deltaformer_u`` with w = k, kernel "round"). When every rounded product
    equals the product of orthonormal codes in R^n (guaranteed by round_margin > 0), u_p = f_p for place tokens
    and u_t = f_{pi(b)} - f_{pi(a)} for swap tokens: the u-form of DeltaNet with n orthonormal codes.

    Args:
        codes [n, d_k], swaps [T, 2], values [n, d_v] or None (one-hot): as ``swap_tokens``.
        scale: s; None means round_scale(code_coherence(codes)) = 1/(1 + mu).
        kernel: "round" (the construction) or "linear" (s k_t^T k_i: linear DeltaNet in u-form, beta = 1).

    Returns:
        (K [n + T, d_k], U [n + T, d_v]).
    """
    kernel = _validate.choice("kernel", kernel, TRACKER_KERNELS)
    K, V = swap_tokens(codes, swaps, values)
    s = _scale_for(_codes("codes", codes), scale)
    U = deltaformer.deltaformer_u(K, K, V, beta=None, kernel=kernel, scale=s)
    return K, U


def round_tracker_read(codes: Any, K: Any, U: Any, *, scale: Any = None, kernel: str = "round") -> Array:
    """SWAP.11 [derived]: o(p) = sum_i round(s e_p^T k_i) u_i, the read with the write's round kernel.

    Causal by construction: the reads after the first t swaps are ``round_tracker_read(codes, K[:n + t],
    U[:n + t])``.

    Args:
        codes [n, d_k]: the box codes, used as queries q_p = e_p.
        K [L, d_k], U [L, d_v]: keys and written values of SWAP.10 (any prefix of them).
        scale, kernel: as ``round_tracker_u`` (use the same ones).

    Returns:
        reads [n, d_v]; row p is o(p). Exact tracking means reads = values[pi] (one-hot rows by default).
    """
    kernel = _validate.choice("kernel", kernel, TRACKER_KERNELS)
    codes = _codes("codes", codes)
    K = _validate.matrix("K", K, cols=codes.shape[1], cols_of="codes")
    U = _validate.matrix("U", U, rows=K.shape[0], rows_of="K")
    codes, K, U = _validate.unify(codes, K, U)
    s = _scale_for(codes, scale)
    if precision.is_mp(codes):
        s = mpmath.mpf(s)
    similarity = kernels.round_kernel(codes * s, K) if kernel == "round" else kernels.linear_kernel(codes * s, K)
    reads: Array = similarity @ U
    return reads


def softmax_tracker_tokens(codes: Any, swaps: Any, values: Any = None) -> tuple[Array, Array, Array]:
    """SWAP.13 [derived]: w, k = (e_p, e_p) per box, then per swap (-e_b, e_a), (e_a, e_b), (-e_b, e_a), (2 e_b, e_b).

    The token stream of the softmax-read tracker (docs/derivations/swap.md, section 11). Every *key* is a single box
    code; the write vector w differs from the key (the public code's write = q). Values: f_p for place tokens, 0
    for the four tokens of a swap, which with beta = 1 realise the elementary operations
    a <- a + b, b <- b - a, a <- a + b, b <- -b on the box contents (their product exchanges a and b).

    Args:
        codes [n, d_k], swaps [T, 2], values [n, d_v] or None (one-hot): as ``swap_tokens``.

    Returns:
        (W, K [n + 4T, d_k], V [n + 4T, d_v]) in the number type of the inputs.
    """
    codes, swaps, values = _token_inputs(codes, swaps, values)
    e_a, e_b = codes[swaps[:, 0]], codes[swaps[:, 1]]
    per_swap_w = np.stack([-e_b, e_a, -e_b, 2 * e_b], axis=1).reshape(-1, codes.shape[1])
    per_swap_k = np.stack([e_a, e_b, e_a, e_b], axis=1).reshape(-1, codes.shape[1])
    W = np.concatenate([codes, per_swap_w], axis=0)
    K = np.concatenate([codes, per_swap_k], axis=0)
    V = np.concatenate([values, precision.zeros((4 * swaps.shape[0], values.shape[1]), values)], axis=0)
    return W, K, V


def softmax_tracker_u(codes: Any, swaps: Any, values: Any = None, *, scale: Any = None) -> tuple[Array, Array]:
    """SWAP.14 [derived]: u_t = v_t - sum_{i<t} round(s w_t^T k_i) u_i over the tokens of SWAP.13 (DF.1, beta = 1).

    DeltaFormer's write (``spec.deltaformer.deltaformer_u``, kernel "round", w from SWAP.13). When every rounded
    product s c e_y^T e_x (c in {-1, 1, 2}) equals c [x = y] (true for coherence mu < 1/3 at s = 1/(1 + mu)), the
    sum of the u over the tokens whose key is e_x is the content of box x, exactly.

    Returns:
        (K [n + 4T, d_k], U [n + 4T, d_v]).
    """
    W, K, V = softmax_tracker_tokens(codes, swaps, values)
    s = _scale_for(_codes("codes", codes), scale)
    U = deltaformer.deltaformer_u(W, K, V, beta=None, kernel="round", scale=s)
    return K, U


def softmax_tracker_read(codes: Any, K: Any, U: Any, *, tau: Any) -> Array:
    """SWAP.15 [derived]: o(p) = sum_i softmax_i(tau e_p^T k_i) u_i, DeltaFormer's softmax read-out (kappa_2).

    With the keys of SWAP.13 (single codes, coherence mu) and tau (1 - mu) > ln(2 L max|u|), L = len(K), the read
    is the box content divided by the number of tokens keyed e_p, plus less than half of it elsewhere, so
    ``decode_objects`` recovers the object. Causal by construction: read a prefix of (K, U) ending after a swap.

    Args:
        codes [n, d_k]: the box codes, used as queries.
        K [L, d_k], U [L, d_v]: keys and written values of SWAP.14 (any prefix of them).
        tau: the read's inverse temperature (> 0).

    Returns:
        reads [n, d_v].
    """
    codes = _codes("codes", codes)
    K = _validate.matrix("K", K, cols=codes.shape[1], cols_of="codes")
    U = _validate.matrix("U", U, rows=K.shape[0], rows_of="K")
    codes, K, U = _validate.unify(codes, K, U)
    tau = _validate.scalar("tau", tau, positive=True)
    reads: Array = kernels.softmax_kernel(codes, K, tau=1 / tau) @ U
    return reads


def decode_objects(reads: Any, values: Any = None) -> Ints:
    """SWAP.12 [derived]: object(p) = argmax_o f_o^T o(p), the nearest object code by inner product.

    reads [n, d_v], values [n_objects, d_v] (None: one-hot, so the argmax of the read) -> [n] int64.
    Ties go to the smallest object id (NumPy argmax).
    """
    reads = precision.to_float64(_validate.matrix("reads", reads))
    if values is not None:
        values = precision.to_float64(_validate.matrix("values", values, cols=reads.shape[1], cols_of="reads"))
        reads = reads @ values.T
    objects: Ints = np.argmax(reads, axis=1).astype(np.int64)
    return objects
