"""Training and evaluation data for the swap experiment, built on ``spec.swap_tracking``'s generator.

Task formulation (dense per-step queries). A sequence of T swaps; step t carries the swap (a_t, b_t) *and* a query
box p_t drawn uniformly from [0, n); the label at step t is pi_t(p_t), the object in box p_t after the first t swaps
(pi_t from ``spec.swap_tracking.swap_task``, SWAP.1/SWAP.2). Every position is supervised, so one sequence gives T
labels instead of one.

Why not ``spec.swap_tracking.encode_swap_tokens`` (SWAP.3): its layouts ask one query after the last swap, so a
sequence yields a single label, and the "pair" vocabulary has n^2 ids (1024 at n = 32, most rarely seen). At a CPU
budget of a few hundred steps that supervision is too sparse to separate the models. We keep its generator
(held-out sequences are ``swap_task`` verbatim; training sequences its batched form ``swap_task_batch``, see
``make_data``) and encode a step as three ids (a_t, b_t, p_t), embedded by three tables and summed; separate
tables for a and b let a linear map form the antisymmetric key e_a - e_b of the delta-rule tracker (SWAP.4).

Accuracy of a sequence of length L is measured on the positions t in (L/2, L] only: the first swaps leave most boxes
untouched, so early queries are easy; at L = 2 T_train this set is exactly the positions never seen in training.
Baselines on the same positions: chance 1/n (a uniform guess) and the *one-hop shortcut* (answer the partner box of
the latest swap that touched p_t, or p_t itself if none did), which one attention lookup implements without
tracking any state; a model only shows state tracking where it beats the shortcut.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from spec.swap_tracking import swap_task, swap_task_batch

__all__ = ["SPLITS", "Batch", "SwapData", "make_data", "one_hop_predictions", "scored_positions", "train_batches"]

Ints = npt.NDArray[np.int64]
Batch = tuple[Tensor, Tensor, Tensor, Tensor]
"""(a, b, query, target), each [B, T] int64."""

SPLITS = {"train": 0, "eval": 1}
"""Data splits; each draws its sequences from its own seed stream, so evaluation sequences are held out."""


@dataclass(frozen=True)
class SwapData:
    """N swap sequences of length T with one query per step.

    Attributes:
        n: boxes = objects.
        a, b: [N, T] int64, the boxes swapped at step t (a != b).
        query: [N, T] int64, the box asked about after swap t.
        target: [N, T] int64, the object in box query[:, t] after swaps 1..t.
    """

    n: int
    a: Ints
    b: Ints
    query: Ints
    target: Ints

    def __len__(self) -> int:
        return int(self.a.shape[0])

    @property
    def length(self) -> int:
        """T, the number of swaps per sequence."""
        return int(self.a.shape[1])

    def tensors(self, rows: slice | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(a, b, query, target) as torch int64 tensors, optionally a slice of the sequences."""
        sel = slice(None) if rows is None else rows
        return (torch.from_numpy(self.a[sel]), torch.from_numpy(self.b[sel]), torch.from_numpy(self.query[sel]),
                torch.from_numpy(self.target[sel]))


def _from_swaps(n: int, swaps: Ints, permutations: Ints, rng: np.random.Generator) -> SwapData:
    """Attach uniform queries (one per step) to swaps [N, T, 2] with permutations [N, T, n] (after each swap)."""
    query = rng.integers(0, n, swaps.shape[:2]).astype(np.int64)
    target = np.take_along_axis(permutations, query[..., None], axis=2)[..., 0]
    return SwapData(n=n, a=swaps[..., 0].copy(), b=swaps[..., 1].copy(), query=query, target=target)


def make_data(n: int, count: int, length: int, *, seed: int, split: str, block: int | None = None) -> SwapData:
    """``count`` sequences of ``length`` swaps among ``n`` boxes, deterministic in (seed, n, length, split).

    ``split="eval"`` (held-out): sequence i is ``spec.swap_tracking.swap_task(n, length, seed=s_i)`` verbatim,
    s_i from ``numpy.random.SeedSequence([seed, n, length, 1])``. ``split="train"``: the same distribution drawn
    as one batch by ``spec.swap_tracking.swap_task_batch`` (SWAP.2b, seed [seed, n, length, 0]), vectorised over
    sequences, because ``swap_task`` builds each permutation in a Python loop (about 2.5 ms per 16-swap sequence on
    this shared machine, 30 s for one model's training data). Queries come from a separate stream. ``block``
    (an int) appends itself to the seed key, for data drawn in independent blocks (``train_batches``); block 0
    (or None) uses the key alone.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    if count < 1 or length < 1:
        raise ValueError(f"count and length must be >= 1, got count = {count}, length = {length}")
    key = [seed, n, length, SPLITS[split], *([] if not block else [block])]
    query_rng = np.random.default_rng([*key, 7])
    if split == "train":
        swaps, permutations = swap_task_batch(n, length, count, seed=key)
        return _from_swaps(n, swaps, permutations[:, 1:], query_rng)
    seeds = np.random.SeedSequence(key).generate_state(count, dtype=np.uint32)
    swaps = np.empty((count, length, 2), dtype=np.int64)
    permutations = np.empty((count, length, n), dtype=np.int64)
    for i, s in enumerate(seeds):
        task = swap_task(n, length, seed=int(s))
        swaps[i] = task.swaps
        permutations[i] = task.permutations[1:]
    return _from_swaps(n, swaps, permutations, query_rng)


BLOCK_TOKENS = 1 << 18
"""Training tokens drawn per block by ``train_batches`` (its permutations take BLOCK_TOKENS * n * 8 bytes)."""


def train_batches(n: int, length: int, batch: int, steps: int, *, seed: int) -> Iterator[Batch]:
    """``steps`` batches of ``batch`` fresh training sequences of ``length`` swaps, drawn lazily in blocks.

    Block i is ``make_data(n, count, length, seed=seed, split="train", block=i)`` with count a multiple of
    ``batch`` near BLOCK_TOKENS / length sequences, so memory stays bounded however long the run is. A run that
    fits one block gets exactly ``make_data(n, steps * batch, length, ...)``, sliced in order.
    """
    per_block = max(1, BLOCK_TOKENS // (length * batch))
    for block, first in enumerate(range(0, steps, per_block)):
        count = min(per_block, steps - first)
        data = make_data(n, count * batch, length, seed=seed, split="train", block=block)
        for i in range(count):
            yield data.tensors(slice(i * batch, (i + 1) * batch))


def scored_positions(length: int) -> slice:
    """The positions an accuracy at sequence length L is measured on: t in (L/2, L], i.e. indices L//2 .. L-1."""
    return slice(length // 2, length)


def one_hop_predictions(data: SwapData) -> Ints:
    """[N, T] predictions of the one-hop shortcut: the partner of the latest swap touching the queried box.

    Right whenever that partner box had not been touched before (its content was still its own object), which is
    common when few swaps have happened relative to n.
    """
    N, T = data.a.shape
    rows = np.arange(N)
    partner = np.broadcast_to(np.arange(data.n), (N, data.n)).copy()
    predictions = np.empty((N, T), dtype=np.int64)
    for t in range(T):
        a, b = data.a[:, t], data.b[:, t]
        partner[rows, a] = b
        partner[rows, b] = a
        predictions[:, t] = partner[rows, data.query[:, t]]
    return predictions
