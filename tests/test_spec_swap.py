"""Tests of spec.swap_tracking (SWAP.1 - SWAP.12, equations.md section 5).

Oracles, none of them the spec itself: a naive list-based simulation of the swaps (ground truth), a brute-force
enumeration of every pair of keys (for the margin SWAP.9), linear DeltaNet's state form against its u-form, and
the spec's own mpmath run against its float64 run.

Which sizes satisfy the round tracker's coherence condition (identity + Hadamard codes, mu = 1/sqrt(d_k)):
d_k = 16 (mu = 1/4) does not (margin < 0, and the tracker does fail, see below); d_k = 64 (mu = 1/8) does with
s = 1/(1 + mu) = 8/9 (margin 1/18) and sits exactly on the boundary with s = 1 (ties at +-1/2); d_k >= 128 does
with either scale. So the Hypothesis tests of exactness beyond d_k run at d_k = 64, n = 128.
"""

from __future__ import annotations

import itertools
from typing import Any

import mpmath
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spec import precision
from spec import swap_tracking as sw

UNIT_ROUNDOFF = 2.0**-53


def naive_permutations(n: int, swaps: Any) -> list[list[int]]:
    """The ground truth by the most literal simulation: a list of box contents, exchanged swap by swap."""
    boxes = list(range(n))
    history = [boxes.copy()]
    for a, b in swaps.tolist():
        boxes[a], boxes[b] = boxes[b], boxes[a]
        history.append(boxes.copy())
    return history


def one_hot(objects: Any, n: int) -> Any:
    return np.eye(n)[objects]


# --- SWAP.1, SWAP.2: the task ---------------------------------------------------------------------------------

@given(n=st.integers(2, 12), T=st.integers(0, 40), seed=st.integers(0, 2**32 - 1), Q=st.integers(0, 5))
def test_every_prefix_permutation_matches_a_naive_simulation(n: int, T: int, seed: int, Q: int) -> None:
    task = sw.swap_task(n, T, n_queries=Q, seed=seed)
    assert task.swaps.shape == (T, 2) and task.swaps.dtype == np.int64
    assert ((task.swaps >= 0) & (task.swaps < n)).all()
    assert (task.swaps[:, 0] != task.swaps[:, 1]).all()
    assert task.permutations.tolist() == naive_permutations(n, task.swaps)
    assert task.answers.tolist() == [task.permutations[T][p] for p in task.queries.tolist()]


@given(n=st.integers(2, 9), T=st.integers(0, 30), seed=st.integers(0, 2**32 - 1))
def test_the_generator_is_deterministic_for_a_seed(n: int, T: int, seed: int) -> None:
    first, second = sw.swap_task(n, T, n_queries=3, seed=seed), sw.swap_task(n, T, n_queries=3, seed=seed)
    for name in ("swaps", "permutations", "queries", "answers"):
        assert np.array_equal(getattr(first, name), getattr(second, name)), name


def test_different_seeds_give_different_sequences() -> None:
    assert not np.array_equal(sw.swap_task(10, 50, seed=1).swaps, sw.swap_task(10, 50, seed=2).swaps)


def test_swaps_are_uniform_over_ordered_pairs_of_distinct_boxes() -> None:
    # n = 4: 12 ordered pairs, each with probability 1/12. Chi-square with 11 degrees of freedom: P(X > 45) ~ 4e-6,
    # so a fixed seed passes unless the law is wrong (b drawn with b = a allowed, or b biased, moves X by ~1e3).
    swaps = sw.swap_task(4, 60_000, seed=5).swaps
    counts = np.zeros((4, 4))
    np.add.at(counts, (swaps[:, 0], swaps[:, 1]), 1)
    expected = 60_000 / 12
    chi2 = (((counts - expected) ** 2 / expected) * (1 - np.eye(4))).sum()
    assert np.trace(counts) == 0
    assert chi2 < 45, chi2


@given(n=st.integers(2, 9), T=st.integers(0, 25), count=st.integers(1, 6), seed=st.integers(0, 2**32 - 1))
def test_batched_tasks_match_the_naive_simulation_row_by_row(n: int, T: int, count: int, seed: int) -> None:
    """SWAP.2b: every sequence of the batch is valid and its permutations are SWAP.1's (the list simulation)."""
    swaps, permutations = sw.swap_task_batch(n, T, count, seed=seed)
    assert swaps.shape == (count, T, 2) and permutations.shape == (count, T + 1, n)
    assert ((swaps >= 0) & (swaps < n)).all() and (swaps[..., 0] != swaps[..., 1]).all()
    for i in range(count):
        assert permutations[i].tolist() == naive_permutations(n, swaps[i])
    again = sw.swap_task_batch(n, T, count, seed=seed)
    assert np.array_equal(again[0], swaps) and np.array_equal(again[1], permutations)


def test_batched_tasks_draw_swaps_uniformly_over_ordered_pairs() -> None:
    # the same chi-square as for swap_task: n = 4, 12 cells, 11 degrees of freedom, P(X > 45) ~ 4e-6
    swaps, _ = sw.swap_task_batch(4, 600, 100, seed=[5, 1])
    counts = np.zeros((4, 4))
    np.add.at(counts, (swaps[..., 0].ravel(), swaps[..., 1].ravel()), 1)
    expected = 60_000 / 12
    chi2 = (((counts - expected) ** 2 / expected) * (1 - np.eye(4))).sum()
    assert np.trace(counts) == 0
    assert chi2 < 45, chi2


def test_swap_permutations_accepts_an_empty_sequence() -> None:
    assert sw.swap_permutations(3, np.zeros((0, 2), dtype=int)).tolist() == [[0, 1, 2]]


# --- SWAP.3: token layouts --------------------------------------------------------------------------------------

@given(n=st.integers(2, 9), T=st.integers(0, 20), seed=st.integers(0, 2**32 - 1), layout=st.sampled_from(sw.LAYOUTS))
def test_decoding_an_encoded_task_gives_back_its_swaps_and_queries(n: int, T: int, seed: int, layout: str) -> None:
    task = sw.swap_task(n, T, n_queries=3, seed=seed)
    encoded = sw.encode_swap_tokens(task, layout)
    length = T + 1 if layout == "pair" else 2 * T + 2
    assert encoded.tokens.shape == (3, length)
    assert ((encoded.tokens >= 0) & (encoded.tokens < encoded.vocab_size)).all()
    assert encoded.vocab_size == (n * n if layout == "pair" else n + 1)
    assert np.array_equal(encoded.targets, task.answers)
    for sequence, box in zip(encoded.tokens, task.queries.tolist(), strict=True):
        swaps, query = sw.decode_swap_tokens(sequence, n, layout)
        assert np.array_equal(swaps.reshape(-1, 2), task.swaps) and query == box


@pytest.mark.parametrize("n", [2, 3, 7])
def test_pair_layout_gives_every_ordered_swap_and_every_query_its_own_id(n: int) -> None:
    pairs = np.array([(a, b) for a, b in itertools.permutations(range(n), 2)], dtype=np.int64)
    task = sw.SwapTask(n=n, swaps=pairs, permutations=sw.swap_permutations(n, pairs),
                       queries=np.arange(n), answers=sw.swap_permutations(n, pairs)[-1])
    tokens = sw.encode_swap_tokens(task, "pair").tokens
    ids = np.concatenate([tokens[0, :-1], tokens[:, -1]])
    assert sorted(ids.tolist()) == list(range(n * n))


# --- SWAP.5: linear DeltaNet ------------------------------------------------------------------------------------

@given(n=st.integers(2, 16), T=st.integers(0, 60), seed=st.integers(0, 2**32 - 1))
def test_deltanet_with_identity_codes_tracks_every_sequence_exactly(n: int, T: int, seed: int) -> None:
    # Identity codes, one-hot values: every number in the recurrence is an integer, so float64 is exact.
    task = sw.swap_task(n, T, seed=seed)
    reads = sw.deltanet_swap_tracker(np.eye(n), task.swaps)
    assert np.array_equal(reads, one_hot(naive_permutations(n, task.swaps)[-1], n))


@given(n=st.integers(2, 12), extra=st.integers(0, 6), T=st.integers(0, 60), seed=st.integers(0, 2**32 - 1),
       beta=st.sampled_from(["reflection", "one"]), init=st.sampled_from(["delta", "hebbian"]))
def test_deltanet_with_orthonormal_codes_tracks_to_rounding_error(n: int, extra: int, T: int, seed: int, beta: str,
                                                                 init: str) -> None:
    # Random orthonormal codes (QR of a Gaussian). Each token is a rank-1 update whose float64 result carries a
    # relative error of at most ~(d_k + 2) u (two dot products and an axpy); the exact updates are orthogonal
    # (reflections), so errors add without amplification: |reads - exact| <= 4 L (d_k + 2) u with L = n + T.
    rng = np.random.default_rng(seed)
    d_k = n + extra
    codes = np.linalg.qr(rng.standard_normal((d_k, d_k)))[0][:n]
    task = sw.swap_task(n, T, seed=seed)
    reads = sw.deltanet_swap_tracker(codes, task.swaps, beta=beta, init=init)
    exact = one_hot(naive_permutations(n, task.swaps)[-1], n)
    assert np.abs(reads - exact).max() <= 4 * (n + T) * (d_k + 2) * UNIT_ROUNDOFF
    assert np.array_equal(sw.decode_objects(reads), task.permutations[-1])


def test_a_unit_key_with_beta_one_projects_instead_of_swapping() -> None:
    # A unit key k = (e_a - e_b)/sqrt(2) with beta = 1 gives I - k k^T, a projection: boxes a and b end up holding
    # the same mixture of f_a and f_b. The reflection needs beta = 2 for a unit key (beta = 1 for e_a - e_b).
    # Codes e_p / sqrt(2) make ||e_a - e_b||^2 = 1; the Hebbian state is S = sum_p f_p e_p^T, so S e_p = f_p / 2
    # before the swap and S (I - k k^T) e_a = S (e_a + e_b) / 2 = (f_a + f_b) / 4 after it (1 ulp slack: 1/sqrt(2)^2).
    codes = np.eye(3) / np.sqrt(2)
    reads = sw.deltanet_swap_tracker(codes, np.array([[0, 1]]), beta="one", init="hebbian")
    assert np.abs(reads[:2] - np.array([[0.25, 0.25, 0], [0.25, 0.25, 0]])).max() <= 4 * UNIT_ROUNDOFF


def test_linear_deltanet_fails_at_twice_d_k_objects() -> None:
    # d_k = 64, n = 128 identity + Hadamard codes, T = 2n swaps, both initialisations, exact reflections (the most
    # favourable linear DeltaNet). Measured accuracy ~0.01 (chance is 1/128); the bound 0.1 leaves a wide margin.
    codes = sw.hadamard_codes(64)
    accuracies = []
    for seed in range(3):
        task = sw.swap_task(128, 256, seed=seed)
        for init in ("delta", "hebbian"):
            reads = sw.deltanet_swap_tracker(codes, task.swaps, init=init)
            accuracies.append(float(np.mean(sw.decode_objects(reads) == task.permutations[-1])))
    assert max(accuracies) < 0.1, accuracies


def test_linear_reads_have_rank_at_most_d_k_so_they_cannot_be_a_permutation() -> None:
    codes = sw.hadamard_codes(16)
    task = sw.swap_task(32, 10, seed=0)
    reads = sw.deltanet_swap_tracker(codes, task.swaps)
    assert reads.shape == (32, 32) and np.linalg.matrix_rank(reads) <= 16


def test_deltanet_u_form_equals_its_state_form() -> None:
    # round_tracker_u with kernel="linear", s = 1 is linear DeltaNet with beta = 1 in u-form (DF.1 with the linear
    # kernel); deltanet_swap_tracker(beta="one") is its state form. Independent code paths. Error model: L tokens,
    # each an O((L + d_k) u) relative perturbation of quantities of size max|S| <~ (1 + 2 mu)^T: tolerance
    # 8 L (L + d_k) u * max(1, max|reads|).
    codes = sw.hadamard_codes(8)
    task = sw.swap_task(16, 30, seed=4)
    K, U = sw.round_tracker_u(codes, task.swaps, scale=1.0, kernel="linear")
    u_form = sw.round_tracker_read(codes, K, U, scale=1.0, kernel="linear")
    state_form = sw.deltanet_swap_tracker(codes, task.swaps, beta="one", init="delta")
    L = K.shape[0]
    tolerance = 8 * L * (L + 8) * UNIT_ROUNDOFF * max(1.0, float(np.abs(state_form).max()))
    assert np.abs(u_form - state_form).max() <= tolerance


# --- SWAP.6 - SWAP.9: codes, coherence, scale, margin -----------------------------------------------------------

@pytest.mark.parametrize("d_k", [1, 2, 4, 16, 64, 128, 256])
def test_hadamard_codes_are_unit_vectors_with_coherence_one_over_sqrt_d_k(d_k: int) -> None:
    codes = sw.hadamard_codes(d_k)
    assert codes.shape == (2 * d_k, d_k)
    gram = codes @ codes.T
    # The two halves are orthonormal bases (exact for d_k = 4^m, where 1/sqrt(d_k) is a power of two).
    assert np.abs(gram[:d_k, :d_k] - np.eye(d_k)).max() <= 2 * d_k * UNIT_ROUNDOFF
    assert np.abs(gram[d_k:, d_k:] - np.eye(d_k)).max() <= 2 * d_k * UNIT_ROUNDOFF
    assert abs(sw.code_coherence(codes) - (1 / np.sqrt(d_k) if d_k > 1 else 1.0)) <= 4 * UNIT_ROUNDOFF


def test_the_coherence_condition_holds_from_d_k_64_with_the_scaled_kernel_and_from_128_unscaled() -> None:
    margins = {d_k: (sw.round_margin(1 / np.sqrt(d_k)), sw.round_margin(1 / np.sqrt(d_k), 1.0))
               for d_k in (16, 32, 64, 128, 256)}
    assert margins[16][0] < 0 and margins[32][0] < 0
    assert abs(margins[64][0] - 1 / 18) < 1e-15 and margins[64][1] == 0.0
    assert margins[128][1] > 0 and abs(margins[256][0] - 9 / 34) < 1e-15


def _worst_distance(codes: Any, s: float) -> float:
    """Brute force: max |s x - xhat| over every pair of keys/queries the trackers can form (all ordered swap keys,
    place keys, read queries), xhat the same product for orthonormal codes."""
    n = codes.shape[0]
    pairs = np.array(list(itertools.permutations(range(n), 2)))
    real = np.concatenate([codes, codes[pairs[:, 0]] - codes[pairs[:, 1]]])
    virtual = np.concatenate([np.eye(n), np.eye(n)[pairs[:, 0]] - np.eye(n)[pairs[:, 1]]])
    G, Ghat = real @ real.T, virtual @ virtual.T
    # A place or read key never meets itself in the write, but a read query e_p meets the place key e_p.
    return float(np.abs(s * G - Ghat).max())


@pytest.mark.parametrize("d_k", [4, 8, 16])
def test_the_margin_is_attained_by_hadamard_codes_at_the_optimal_scale(d_k: int) -> None:
    codes = sw.hadamard_codes(d_k)
    mu = sw.code_coherence(codes)
    s = sw.round_scale(mu)
    assert abs(_worst_distance(codes, s) - (0.5 - sw.round_margin(mu))) <= 64 * UNIT_ROUNDOFF


@given(n=st.integers(3, 9), d_k=st.integers(2, 40), seed=st.integers(0, 2**32 - 1),
       s=st.floats(0.5, 1.5))
def test_the_margin_bounds_every_pair_of_keys_for_any_unit_codes(n: int, d_k: int, seed: int, s: float) -> None:
    rng = np.random.default_rng(seed)
    codes = rng.standard_normal((n, d_k))
    codes /= np.linalg.norm(codes, axis=1, keepdims=True)
    mu = sw.code_coherence(codes)
    # Unit norms hold to ~d_k u, and every product to ~4 d_k u: slack 64 d_k u.
    assert _worst_distance(codes, s) <= 0.5 - sw.round_margin(mu, s) + 64 * d_k * UNIT_ROUNDOFF


# --- SWAP.10, SWAP.11: the round-kernel tracker ------------------------------------------------------------------

@given(T=st.integers(0, 200), seed=st.integers(0, 2**32 - 1))
def test_round_tracker_is_exact_for_128_objects_in_64_dimensions(T: int, seed: int) -> None:
    codes = sw.hadamard_codes(64)
    task = sw.swap_task(128, T, seed=seed)
    K, U = sw.round_tracker_u(codes, task.swaps)
    truth = naive_permutations(128, task.swaps)
    assert np.array_equal(sw.round_tracker_read(codes, K, U), one_hot(truth[-1], 128))
    t = T // 2
    assert np.array_equal(sw.round_tracker_read(codes, K[: 128 + t], U[: 128 + t]), one_hot(truth[t], 128))
    # u takes the values of DeltaNet with orthonormal codes: f_{pi(b)} - f_{pi(a)} on a swap token.
    assert set(np.unique(U).tolist()) <= {-1.0, 0.0, 1.0}


@given(T=st.integers(1, 300), seed=st.integers(0, 2**32 - 1))
def test_round_tracker_u_equals_deltanet_u_with_orthonormal_codes(T: int, seed: int) -> None:
    # The certificate behind exactness: the u of the d_k = 64 round tracker equal those of the same tracker on
    # orthonormal codes in R^128 (the identity), token by token.
    task = sw.swap_task(128, T, seed=seed)
    _, U = sw.round_tracker_u(sw.hadamard_codes(64), task.swaps)
    _, U_orthonormal = sw.round_tracker_u(np.eye(128), task.swaps, scale=1.0)
    assert np.array_equal(U, U_orthonormal)


def test_round_tracker_is_exact_for_512_objects_in_256_dimensions() -> None:
    codes = sw.hadamard_codes(256)
    task = sw.swap_task(512, 300, seed=11)
    K, U = sw.round_tracker_u(codes, task.swaps)
    assert np.array_equal(sw.round_tracker_read(codes, K, U), one_hot(naive_permutations(512, task.swaps)[-1], 512))


# --- SWAP.13 - SWAP.15: the softmax-read tracker ------------------------------------------------------------------

def _box_contents_by_elementary_operations(n: int, swaps: Any) -> list[Any]:
    """The u that SWAP.14 must write, from an integer simulation of the box contents (no kernel, no rounding):
    f_p per place token, then per swap the changes of a <- a + b, b <- b - a, a <- a + b, b <- -b."""
    boxes = [np.eye(n)[p] for p in range(n)]
    written = [box.copy() for box in boxes]
    for a, b in swaps.tolist():
        for target, source, coefficient in ((a, b, 1), (b, a, -1), (a, b, 1), (b, b, -2)):  # target += c source
            delta = coefficient * boxes[source]
            boxes[target] = boxes[target] + delta
            written.append(delta)
    return written


@given(T=st.integers(0, 60), seed=st.integers(0, 2**32 - 1))
def test_softmax_tracker_writes_the_elementary_operations_exactly_beyond_d_k(T: int, seed: int) -> None:
    # d_k = 16, n = 32 = 2 d_k: coherence 1/4 < 1/3, so every rounded write product is the orthonormal one.
    codes = sw.hadamard_codes(16)
    task = sw.swap_task(32, T, seed=seed)
    K, U = sw.softmax_tracker_u(codes, task.swaps)
    assert np.array_equal(U, np.array(_box_contents_by_elementary_operations(32, task.swaps)))
    truth = naive_permutations(32, task.swaps)
    tau = (np.log(2 * len(K) * 2) + 1) / (1 - 0.25)  # the bound of SWAP.15 with max|u| = 2, one nat above it
    for t in {0, T // 2, T}:
        reads = sw.softmax_tracker_read(codes, K[: 32 + 4 * t], U[: 32 + 4 * t], tau=tau)
        assert np.array_equal(sw.decode_objects(reads), np.array(truth[t]))


def test_softmax_tracker_tokens_key_every_token_by_one_box_code() -> None:
    codes = sw.hadamard_codes(4)
    W, K, V = sw.softmax_tracker_tokens(codes, np.array([[1, 6]]))
    e_a, e_b = codes[1], codes[6]
    assert np.array_equal(K[8:], np.stack([e_a, e_b, e_a, e_b]))
    assert np.array_equal(W[8:], np.stack([-e_b, e_a, -e_b, 2 * e_b]))
    assert np.array_equal(W[:8], codes) and np.array_equal(K[:8], codes)
    assert np.array_equal(V, np.concatenate([np.eye(8), np.zeros((4, 8))]))


def test_a_softmax_read_of_the_difference_key_tracker_does_not_track() -> None:
    # The contrast behind SWAP.13: SWAP.10's cache (keys e_a - e_b) read through softmax mixes the signed
    # contributions of the swap tokens; at d_k = 64, n = 128 most boxes decode wrong.
    codes = sw.hadamard_codes(64)
    task = sw.swap_task(128, 256, seed=5)
    K, U = sw.round_tracker_u(codes, task.swaps)
    reads = sw.softmax_tracker_read(codes, K, U, tau=12.0)
    assert float(np.mean(sw.decode_objects(reads) == task.permutations[-1])) < 0.5


def test_round_tracker_fails_when_codes_are_too_coherent() -> None:
    # d_k = 16, n = 32: mu = 1/4 > 1/7; some disjoint pairs of swap keys have product +-1 instead of 0.
    codes = sw.hadamard_codes(16)
    failures = 0
    for seed in range(5):
        task = sw.swap_task(32, 64, seed=seed)
        K, U = sw.round_tracker_u(codes, task.swaps)
        failures += not np.array_equal(sw.round_tracker_read(codes, K, U), one_hot(task.permutations[-1], 32))
    assert failures == 5


def _round_half_away_tracker(codes: Any, swaps: Any) -> Any:
    """The unscaled tracker with round-half-away-from-zero instead of NumPy's ties-to-even (test-only variant)."""
    K, V = sw.swap_tokens(codes, swaps)
    G = np.sign(K @ K.T) * np.floor(np.abs(K @ K.T) + 0.5)
    U = np.zeros_like(V)
    for t in range(K.shape[0]):
        U[t] = V[t] - G[t, :t] @ U[:t]
    R = np.sign(codes @ K.T) * np.floor(np.abs(codes @ K.T) + 0.5)
    return R @ U


def test_the_unscaled_kernel_at_d_k_64_is_exact_only_through_ties_to_even() -> None:
    # mu = 1/8 exactly: a disjoint pair (a, b), (c, d) with a, b identity and c, d Hadamard codes can have product
    # exactly +-1/2 (4 mu), true value 0. np.rint sends it to 0 (ties to even): exact. Rounding half away from
    # zero sends it to +-1: the tracker breaks.
    codes = sw.hadamard_codes(64)
    task = sw.swap_task(128, 256, seed=0)
    K, U = sw.round_tracker_u(codes, task.swaps, scale=1.0)
    products = np.abs(K[128:] @ K[128:].T)
    assert (products == 0.5).any()
    assert np.array_equal(sw.round_tracker_read(codes, K, U, scale=1.0), one_hot(task.permutations[-1], 128))
    assert not np.array_equal(_round_half_away_tracker(codes, task.swaps), one_hot(task.permutations[-1], 128))


def simplex_codes(d_k: int) -> Any:
    """The regular simplex: d_k + 1 unit vectors in R^{d_k} with e_a^T e_b = -1/d_k (coherence 1/d_k)."""
    n = d_k + 1
    centred = np.eye(n) - 1 / n
    basis = np.linalg.qr(centred)[0][:, :d_k]
    codes = centred @ basis
    return codes / np.linalg.norm(codes, axis=1, keepdims=True)


@given(T=st.integers(0, 40), seed=st.integers(0, 2**32 - 1))
def test_round_tracker_is_exact_for_simplex_codes_one_beyond_d_k(T: int, seed: int) -> None:
    # d_k = 8, n = 9, mu = 1/8 < 1/7: the scaled round kernel is exact; a second, non-Hadamard code family.
    codes = simplex_codes(8)
    task = sw.swap_task(9, T, seed=seed)
    K, U = sw.round_tracker_u(codes, task.swaps)
    assert np.array_equal(sw.round_tracker_read(codes, K, U), one_hot(naive_permutations(9, task.swaps)[-1], 9))


def test_the_round_tracker_runs_in_mpmath_and_agrees_with_float64() -> None:
    # Simplex codes (d_k = 8, n = 9) at 30 digits; exactness means the mpmath reads are exactly the one-hot rows.
    task = sw.swap_task(9, 12, seed=3)
    codes = simplex_codes(8)
    K, U = sw.round_tracker_u(codes, task.swaps)
    reads_float64 = sw.round_tracker_read(codes, K, U)
    with precision.workdps(30):
        codes_mp = precision.to_mp(codes)
        K_mp, U_mp = sw.round_tracker_u(codes_mp, task.swaps)
        reads = sw.round_tracker_read(codes_mp, K_mp, U_mp)
    assert reads.dtype == object and isinstance(reads[0, 0], mpmath.mpf)
    assert all(x == int(x) for x in reads.flat)
    assert np.array_equal(precision.to_float64(reads), reads_float64)
    assert np.array_equal(reads_float64, one_hot(task.permutations[-1], 9))


def test_hadamard_codes_in_mpmath_have_coherence_exactly_one_over_sqrt_d_k() -> None:
    with precision.workdps(40):
        codes = sw.hadamard_codes(32, like=precision.to_mp(np.zeros(1)))
        mu = sw.code_coherence(codes)
        assert abs(mu - 1 / mpmath.sqrt(32)) <= mpmath.mpf(10) ** -38


# --- errors name the argument ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("call", "error", "name"), [
    (lambda: sw.swap_task(1, 3), ValueError, "n"),
    (lambda: sw.swap_task(4, -1), ValueError, "T"),
    (lambda: sw.swap_task(4, 3, n_queries=-2), ValueError, "n_queries"),
    (lambda: sw.swap_task(4.0, 3), TypeError, "n"),
    (lambda: sw.swap_task(4, 3, seed=-1), ValueError, "seed"),
    (lambda: sw.swap_task_batch(4, 3, 0), ValueError, "count"),
    (lambda: sw.swap_task_batch(4, 3, 2, seed=[1, -2]), ValueError, "seed"),
    (lambda: sw.swap_task_batch(4, 3, 2, seed=1.5), TypeError, "seed"),
    (lambda: sw.swap_permutations(4, [[0, 0]]), ValueError, "swaps"),
    (lambda: sw.swap_permutations(4, [[0, 4]]), ValueError, "swaps"),
    (lambda: sw.swap_permutations(4, [0, 1]), ValueError, "swaps"),
    (lambda: sw.swap_permutations(4, [[0.0, 1.0]]), TypeError, "swaps"),
    (lambda: sw.swap_tokens(np.eye(3)[0], [[0, 1]]), ValueError, "codes"),
    (lambda: sw.swap_tokens(np.eye(1), [[0, 1]]), ValueError, "codes"),
    (lambda: sw.swap_tokens(np.eye(3), [[0, 1]], np.eye(2)), ValueError, "values"),
    (lambda: sw.deltanet_swap_tracker(np.eye(3), [[0, 1]], beta="two"), ValueError, "beta"),
    (lambda: sw.deltanet_swap_tracker(np.eye(3), [[0, 1]], init="zero"), ValueError, "init"),
    (lambda: sw.deltanet_swap_tracker(np.array([[1.0, 0], [1.0, 0], [0, 1.0]]), [[0, 1]]), ValueError, "codes"),
    (lambda: sw.hadamard_codes(12), ValueError, "d_k"),
    (lambda: sw.hadamard_codes(4, 9), ValueError, "n"),
    (lambda: sw.round_scale(1.0), ValueError, "mu"),
    (lambda: sw.round_margin(0.1, -1.0), ValueError, "scale"),
    (lambda: sw.round_tracker_u(np.eye(3), [[0, 1]], kernel="exp"), ValueError, "kernel"),
    (lambda: sw.round_tracker_read(np.eye(3), np.eye(4), np.eye(4)), ValueError, "K"),
    (lambda: sw.round_tracker_read(np.eye(3), np.eye(3), np.eye(4)), ValueError, "U"),
    (lambda: sw.softmax_tracker_tokens(np.eye(3), [[0, 3]]), ValueError, "swaps"),
    (lambda: sw.softmax_tracker_read(np.eye(3), np.eye(3), np.eye(3), tau=0.0), ValueError, "tau"),
    (lambda: sw.softmax_tracker_read(np.eye(3), np.eye(4), np.eye(4), tau=1.0), ValueError, "K"),
    (lambda: sw.encode_swap_tokens(sw.swap_task(3, 2), "triple"), ValueError, "layout"),
    (lambda: sw.encode_swap_tokens("task"), TypeError, "task"),
    (lambda: sw.decode_swap_tokens(np.array([0, 1, 2]), 3, "pair"), ValueError, "tokens"),
    (lambda: sw.decode_swap_tokens(np.array([0, 1, 0, 2]), 3, "split"), ValueError, "tokens"),
    (lambda: sw.decode_objects(np.ones((2, 3)), np.ones((2, 4))), ValueError, "values"),
])
def test_bad_inputs_raise_errors_naming_the_argument(call: Any, error: type[Exception], name: str) -> None:
    with pytest.raises(error, match=rf"\b{name}\b"):
        call()
