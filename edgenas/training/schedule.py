"""A training protocol in numbers for one training set and epoch count: batches and learning rates."""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgenas.config.plan import TrainPlan


@dataclass(frozen=True)
class Schedule:
    """A protocol in numbers for one training set and epoch count: batches and learning rates."""

    protocol: str
    batch_size: int
    starts: tuple[int, ...]  # first sample of each batch of an epoch (positions in that epoch's order)
    epochs: int
    peak_lr: float
    warmup_steps: int  # fast: steps of linear warm-up; reference: 0
    n: int  # training images
    bn_momentum_power: float = 1.0  # BatchNorm momentum m trains as 1 - (1 - m) ** power (fast: batch ratio)

    @property
    def steps_per_epoch(self) -> int:
        return len(self.starts)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    def lr(self, step: int) -> float:
        """Learning rate of global step ``step`` (0-based).

        reference: per epoch e (0-based), ``lr * (1 + cos(pi * e / epochs)) / 2`` (CosineAnnealingLR);
        fast: ``peak * (step + 1) / W`` for the W warm-up steps, then
        ``peak * (1 + cos(pi * (step - W) / (total - W))) / 2``.
        """
        if self.protocol == "reference":
            epoch = step // self.steps_per_epoch
            return self.peak_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / self.epochs))
        w, total = self.warmup_steps, self.total_steps
        if step < w:
            return self.peak_lr * (step + 1) / w
        return self.peak_lr * 0.5 * (1.0 + math.cos(math.pi * (step - w) / (total - w)))

    def lrs(self) -> list[float]:
        return [self.lr(s) for s in range(self.total_steps)]


def schedule_for(plan: TrainPlan, n: int, epochs: int) -> Schedule:
    """The batches and learning rates ``fit`` uses for ``n`` training images and ``epochs`` epochs.

    ``plan`` checked its own settings when it was made; this checks the two numbers it adds."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if n < 1:
        raise ValueError(f"the training split must hold at least one image, got {n}")
    if plan.protocol == "reference":
        bs = plan.batch_size
        starts = tuple(
            s for s in range(0, n, bs) if min(bs, n - s) > 1 or n == 1
        )  # a lone last sample breaks BatchNorm
        return Schedule("reference", bs, starts, epochs, plan.lr, 0, n)
    if plan.protocol == "fast":
        bs = min(plan.fast_batch_size, n)
        starts = tuple(range(0, (n // bs) * bs, bs))  # whole batches only: one shape, one graph
        warmup = int(round(plan.warmup_fraction * len(starts) * epochs))
        ratio = bs / plan.batch_size
        return Schedule("fast", bs, starts, epochs, plan.lr * ratio, warmup, n, bn_momentum_power=ratio)
    raise ValueError(f"unknown training protocol {plan.protocol!r}")  # unreachable: TrainPlan checks it
