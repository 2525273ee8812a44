"""Fixed-budget training and held-out evaluation of one model on the swap task.

Budget: ``steps`` AdamW steps, each on a fresh batch of sequences (never repeated), cross-entropy averaged over every
position, linear warm-up over the first 10% of the steps then cosine decay to 10% of ``lr``, gradient norm clipped
to 1. fp32. Deterministic for a seed on one machine (``torch.manual_seed``; data from ``make_data``). A curriculum
is a chain of batch streams of growing sequence length (``sweep``); the schedule spans the whole chain.

Logged while training (``log_every`` > 0), per interval of that many steps: the mean loss and the mean accuracy of
the batches on their scored positions, measured on each batch *before* its update, so on sequences the model has
never seen (every batch is fresh): a held-out measurement at no extra cost. From it: ``steps_to_target``, the first
step at which that running accuracy (over the last ``log_every`` steps) reaches ``target``; and ``loss_spikes``,
the steps whose loss exceeds the median of the preceding SPIKE_WINDOW losses by more than max(0.5, 50% of it),
not counting the SPIKE_WINDOW steps after a change of sequence length (a longer curriculum stage is harder, which
is not instability).

Divergence: if the loss or a hidden state becomes non-finite the run stops *before* that update, so the model keeps
the last finite parameters, and the step is recorded (``TrainResult.diverged_at``). At evaluation a batch whose
hidden state overflows counts as all wrong.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch
from torch.nn import functional

from proofs_checks.swap.data import Batch, SwapData, scored_positions
from proofs_checks.swap.models import DivergedError, SwapModel

__all__ = ["Curve", "TrainConfig", "TrainResult", "evaluate", "position_accuracy", "train"]

SPIKE_WINDOW = 50


@dataclass(frozen=True)
class TrainConfig:
    """The training budget and optimiser settings (the same for every model)."""

    steps: int = 500
    batch: int = 32
    lr: float = 1e-2
    weight_decay: float = 0.01
    clip: float = 1.0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 1 or not self.lr > 0:
            raise ValueError(f"steps, batch and lr must be positive, got {self}")


@dataclass(frozen=True)
class Curve:
    """The training log: per interval, its last step, mean loss, mean fresh-batch accuracy and sequence length."""

    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    train_len: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class TrainResult:
    """What one training run did: the mean loss of its last 10% of steps, the step it diverged at (None if it did
    not), its wall time in seconds, the steps it ran, and (when logged) its curve, steps to the target accuracy
    (None if never reached) and its count of loss spikes."""

    final_loss: float
    diverged_at: int | None
    seconds: float
    steps: int = 0
    curve: Curve = field(default_factory=Curve)
    steps_to_target: int | None = None
    loss_spikes: int = 0


def _lr_factor(step: int, steps: int) -> float:
    warmup = max(1, steps // 10)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def _count_spikes(losses: list[float], lengths: list[int]) -> int:
    spikes = 0
    settled_from = 0
    for t in range(1, len(losses)):
        if lengths[t] != lengths[t - 1]:
            settled_from = t + SPIKE_WINDOW
        if t < settled_from or t < SPIKE_WINDOW:
            continue
        median = statistics.median(losses[t - SPIKE_WINDOW:t])
        if losses[t] > median + max(0.5, 0.5 * median):
            spikes += 1
    return spikes


def _batches(data: SwapData | Iterable[Batch], config: TrainConfig) -> Iterable[Batch]:
    if not isinstance(data, SwapData):
        return data
    if len(data) < config.steps * config.batch:
        raise ValueError(f"data holds {len(data)} sequences, the budget needs steps * batch = "
                         f"{config.steps * config.batch}")
    return (data.tensors(slice(step * config.batch, (step + 1) * config.batch)) for step in range(config.steps))


def train(model: SwapModel, data: SwapData | Iterable[Batch], config: TrainConfig, *, seed: int,
          progress: Callable[[int, float], None] | None = None, log_every: int = 0, target: float = 0.9,
          device: torch.device | None = None) -> TrainResult:
    """Train ``model`` in place for ``config.steps`` steps, one fresh batch per step.

    ``data``: a SwapData of at least steps * batch sequences (taken in order, ``config.batch`` per step) or an
    iterable of batches (at least ``config.steps``; a curriculum). ``progress(step, loss)`` is called every tenth
    of the run; ``log_every`` > 0 records the curve (module docstring).
    """
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                  betas=(0.9, 0.98))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, config.steps))
    model.train()
    start = time.perf_counter()
    losses: list[float] = []
    accuracies: list[float] = []
    lengths: list[int] = []
    curve = Curve()
    steps_to_target: int | None = None
    diverged_at: int | None = None
    report_every = max(1, config.steps // 10)
    for step, batch in zip(range(config.steps), _batches(data, config), strict=False):
        a, b, query, target_ids = (x.to(device) for x in batch)
        try:
            logits = model(a, b, query)
        except DivergedError:
            diverged_at = step
            break
        loss = functional.cross_entropy(logits.reshape(-1, model.n), target_ids.reshape(-1))
        if not bool(torch.isfinite(loss)):
            diverged_at = step
            break
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        lengths.append(int(a.shape[1]))
        if log_every > 0:
            scored = scored_positions(a.shape[1])
            hits = logits.detach()[:, scored].argmax(-1) == target_ids[:, scored]
            accuracies.append(float(hits.float().mean()))
            recent = accuracies[-log_every:]
            if steps_to_target is None and len(recent) == log_every and sum(recent) / log_every >= target:
                steps_to_target = step + 1
            if (step + 1) % log_every == 0:
                curve.step.append(step + 1)
                curve.loss.append(sum(losses[-log_every:]) / log_every)
                curve.accuracy.append(sum(recent) / len(recent))
                curve.train_len.append(lengths[-1])
        if progress is not None and ((step + 1) % report_every == 0 or step + 1 == config.steps):
            progress(step + 1, losses[-1])
    tail = losses[-max(1, len(losses) // 10):]
    final_loss = sum(tail) / len(tail) if tail else math.nan
    return TrainResult(final_loss=final_loss, diverged_at=diverged_at, seconds=time.perf_counter() - start,
                       steps=len(losses), curve=curve, steps_to_target=steps_to_target,
                       loss_spikes=_count_spikes(losses, lengths) if log_every > 0 else 0)


@torch.no_grad()
def position_accuracy(model: SwapModel, data: SwapData, *, batch: int = 128,
                      device: torch.device | None = None) -> npt.NDArray[np.float64]:
    """[T] the fraction of sequences whose query after swap t (t = 1..T) the argmax prediction answers right."""
    model.eval()
    correct = np.zeros(data.length)
    for start in range(0, len(data), batch):
        a, b, query, target = (x.to(device) for x in data.tensors(slice(start, start + batch)))
        try:
            logits = model(a, b, query)
        except DivergedError:
            continue
        correct += (logits.argmax(-1) == target).sum(0).cpu().numpy()
    model.train()
    result: npt.NDArray[np.float64] = correct / len(data)
    return result


def evaluate(model: SwapModel, data: SwapData, *, positions: slice | None = None, batch: int = 128,
             device: torch.device | None = None) -> float:
    """Accuracy of the argmax prediction on ``positions`` (default ``scored_positions``) of every sequence."""
    positions = scored_positions(data.length) if positions is None else positions
    return float(np.mean(position_accuracy(model, data, batch=batch, device=device)[positions]))
