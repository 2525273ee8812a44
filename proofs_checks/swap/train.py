"""Fixed-budget training and held-out evaluation of one model on the swap task.

Budget: ``steps`` AdamW steps of ``batch`` fresh sequences (never repeated), cross-entropy averaged over every
position, linear warm-up over the first 10% of the steps then cosine decay to 10% of ``lr``, gradient norm clipped
to 1. fp32 on CPU. Deterministic for a seed on one machine (``torch.manual_seed``; data from ``make_data``).

Divergence: if the loss or a hidden state becomes non-finite the run stops *before* that update, so the model keeps
the last finite parameters, and the step is recorded (``TrainResult.diverged_at``). At evaluation a batch whose
hidden state overflows counts as all wrong.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional

from proofs_checks.swap.data import SwapData, scored_positions
from proofs_checks.swap.models import DivergedError, SwapModel

__all__ = ["TrainConfig", "TrainResult", "evaluate", "train"]


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
class TrainResult:
    """What one training run did: the mean loss of its last 10% of steps, the step it diverged at (None if it did
    not), its wall time in seconds."""

    final_loss: float
    diverged_at: int | None
    seconds: float


def _lr_factor(step: int, steps: int) -> float:
    warmup = max(1, steps // 10)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def train(model: SwapModel, data: SwapData, config: TrainConfig, *, seed: int,
          progress: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train ``model`` in place on ``data`` (at least steps * batch sequences), one fresh batch per step.

    ``progress(step, loss)`` is called every tenth of the run.
    """
    if len(data) < config.steps * config.batch:
        raise ValueError(f"data holds {len(data)} sequences, the budget needs steps * batch = "
                         f"{config.steps * config.batch}")
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                  betas=(0.9, 0.98))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, config.steps))
    model.train()
    start = time.perf_counter()
    losses: list[float] = []
    diverged_at: int | None = None
    report_every = max(1, config.steps // 10)
    for step in range(config.steps):
        a, b, query, target = data.tensors(slice(step * config.batch, (step + 1) * config.batch))
        try:
            logits = model(a, b, query)
        except DivergedError:
            diverged_at = step
            break
        loss = functional.cross_entropy(logits.reshape(-1, model.n), target.reshape(-1))
        if not bool(torch.isfinite(loss)):
            diverged_at = step
            break
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        if progress is not None and ((step + 1) % report_every == 0 or step + 1 == config.steps):
            progress(step + 1, losses[-1])
    tail = losses[-max(1, len(losses) // 10):]
    final_loss = sum(tail) / len(tail) if tail else math.nan
    return TrainResult(final_loss=final_loss, diverged_at=diverged_at, seconds=time.perf_counter() - start)


@torch.no_grad()
def evaluate(model: SwapModel, data: SwapData, *, positions: slice | None = None, batch: int = 128) -> float:
    """Accuracy of the argmax prediction on ``positions`` (default ``scored_positions``) of every sequence."""
    model.eval()
    positions = scored_positions(data.length) if positions is None else positions
    correct = 0
    total = 0
    for start in range(0, len(data), batch):
        a, b, query, target = data.tensors(slice(start, start + batch))
        scored = target[:, positions]
        total += scored.numel()
        try:
            logits = model(a, b, query)
        except DivergedError:
            continue
        correct += int((logits[:, positions].argmax(-1) == scored).sum())
    model.train()
    return correct / total
