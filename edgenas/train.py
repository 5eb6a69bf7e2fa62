"""Train one candidate under a ``TrainPlan`` and evaluate it.

The whole dataset sits on the training device; batches are gathered, augmented and fed there.
Per-batch statistics stay on the device and are read once per epoch.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from edgenas.data import BatchAugment, ImageData, Split
from edgenas.errors import UserInputError
from edgenas.space import Arch, build_model

PROTOCOLS = ("reference", "fast")
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class TrainPlan:
    """How a candidate is trained. Defaults are the reference protocol (ALGORITHM.md)."""

    protocol: str = "reference"  # "reference" (faithful) or "fast" (large batch, scaled lr, warm-up)
    batch_size: int = 64
    lr: float = 0.025  # at batch_size; cosine-annealed to 0 over the candidate's epochs
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0  # max gradient norm; 0 disables
    crop_padding: int = 4  # random crop with this zero padding (pixels); 0 disables
    cutout: int = 16  # cutout square side (pixels), applied where the image is larger; 0 disables
    final_epochs: int = 600  # epochs of `edgenas train` (the final training)


@dataclass(frozen=True)
class FitResult:
    """What ``fit`` measured. Accuracies in percent; ``loss`` is the last epoch's mean."""

    train_acc: float
    status: str  # "trained" | "failed" (non-finite loss)
    epochs: int  # epochs actually run
    seconds: float  # training wall time
    images_per_s: float
    loss: float


@dataclass(frozen=True)
class TrainResult:
    """One trained candidate. ``val_acc`` is 0.0 when training failed, NaN when there is no val split."""

    val_acc: float
    train_acc: float
    status: str  # "trained" | "failed"
    epochs: int
    seconds: float  # training and evaluation wall time
    images_per_s: float  # training throughput
    loss: float


class EpochCallback(Protocol):
    def __call__(self, epoch: int, epochs: int, loss: float, train_acc: float, seconds: float) -> None: ...


def select_device(name: str | None) -> torch.device:
    """None -> CUDA when visible, else the CPU; otherwise ``cpu`` or ``cuda``."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserInputError("--device cuda: no CUDA device is visible; use --device cpu")
        return torch.device("cuda")
    if name == "cpu":
        return torch.device("cpu")
    raise UserInputError(f"--device {name}: unknown device; choose one of: {', '.join(DEVICES)}")


def _autocast(device: torch.device):
    """bf16 autocast on CUDA; full fp32 elsewhere (bit-repeatable on the CPU)."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def _optimizer(params: list[nn.Parameter], plan: TrainPlan, epochs: int):
    """(optimizer, per-epoch scheduler) of the protocol. The place where ``fast`` will slot in."""
    if plan.protocol == "fast":
        raise NotImplementedError("the fast training protocol is not implemented yet; use protocol 'reference'")
    if plan.protocol != "reference":
        raise ValueError(f"unknown training protocol {plan.protocol!r}; choose one of: {', '.join(PROTOCOLS)}")
    opt = torch.optim.SGD(params, lr=plan.lr, momentum=plan.momentum, weight_decay=plan.weight_decay, foreach=True)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=0.0)


def fit(
    model: nn.Module,
    data: ImageData,
    epochs: int,
    plan: TrainPlan,
    device: torch.device,
    seed: int,
    on_epoch: EpochCallback | None = None,
    *,
    head: nn.Module | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> FitResult:
    """Train ``model`` in place on ``data.train`` for ``epochs`` epochs under ``plan``.

    Without ``head``: logits = ``model(x)``. With ``head`` (e.g. a margin head for faces):
    logits = ``head(model.features(x), y)``, and the head's parameters are optimised too.
    ``loss_fn(logits, y)`` defaults to cross-entropy. Shuffling and augmentation are seeded from
    ``seed``; weights are not (seed before building the model). A non-finite epoch loss stops
    training with status ``failed``.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if plan.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {plan.batch_size}")
    loss_fn = loss_fn or F.cross_entropy
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    memory_format = torch.channels_last  # faster on CUDA and, for these nets, on the CPU too (mkldnn)
    modules = [model] + ([head] if head is not None else [])
    for m in modules:
        m.to(device=device, memory_format=memory_format).train()
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    optimizer, scheduler = _optimizer(params, plan, epochs)
    train = data.to(device).train
    n = len(train)
    if n == 0:
        raise ValueError(f"{data.name}: the training split is empty")
    augment = BatchAugment(data, crop_padding=plan.crop_padding, cutout=plan.cutout, device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    bs = plan.batch_size
    starts = [s for s in range(0, n, bs) if min(bs, n - s) > 1 or n == 1]  # a lone last sample breaks BatchNorm

    def logits_and_loss(x: torch.Tensor, y: torch.Tensor):
        with _autocast(device):
            logits = model(x) if head is None else head(model.features(x), y)
            return logits, loss_fn(logits.float(), y)

    t0 = time.perf_counter()
    status, loss_mean, train_acc, done = "trained", float("nan"), 0.0, 0
    for epoch in range(1, epochs + 1):
        order = torch.randperm(n, device=device, generator=gen)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.int64)
        seen = 0
        for s in starts:
            idx = order[s : s + bs]
            x = augment(train.x[idx], gen).contiguous(memory_format=memory_format)
            y = train.y[idx]
            logits, loss = logits_and_loss(x, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if plan.grad_clip > 0:
                nn.utils.clip_grad_norm_(params, plan.grad_clip, foreach=True)
            optimizer.step()
            loss_sum += loss.detach() * y.shape[0]
            correct += (logits.detach().argmax(1) == y).sum()
            seen += y.shape[0]
        scheduler.step()
        done = epoch
        loss_mean = loss_sum.item() / seen  # the one device sync of the epoch
        train_acc = 100.0 * correct.item() / seen
        if on_epoch is not None:
            on_epoch(epoch, epochs, loss_mean, train_acc, time.perf_counter() - t0)
        if not math.isfinite(loss_mean):
            status = "failed"
            break
    seconds = time.perf_counter() - t0
    return FitResult(
        train_acc=train_acc,
        status=status,
        epochs=done,
        seconds=seconds,
        images_per_s=n * done / seconds if seconds > 0 else 0.0,
        loss=loss_mean,
    )


@torch.inference_mode()
def evaluate(model: nn.Module, split: Split, data: ImageData, device: torch.device, batch_size: int = 1024) -> float:
    """Top-1 accuracy (percent) of ``model`` on ``split``, normalised with ``data``'s statistics."""
    if len(split) == 0:
        raise ValueError(f"{data.name}: cannot evaluate on an empty split")
    memory_format = torch.channels_last
    mean = torch.tensor(data.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    inv_std = 1.0 / torch.tensor(data.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    was_training = model.training
    model.eval()
    correct = torch.zeros((), device=device, dtype=torch.int64)
    try:
        for s in range(0, len(split), batch_size):
            x = split.x[s : s + batch_size].to(device, non_blocking=True)
            x = ((x.float().div_(255.0) - mean).mul_(inv_std)).contiguous(memory_format=memory_format)
            with _autocast(device):
                logits = model(x)
            correct += (logits.argmax(1) == split.y[s : s + batch_size].to(device)).sum()
    finally:
        model.train(was_training)
    return 100.0 * correct.item() / len(split)


def train_candidate(
    arch: Arch,
    data: ImageData,
    epochs: int,
    plan: TrainPlan,
    device: torch.device,
    seed: int,
    on_epoch: EpochCallback | None = None,
) -> tuple[nn.Module, TrainResult]:
    """Build ``arch`` with weights seeded from ``seed``, train it, and rank it on ``data.val``."""
    t0 = time.perf_counter()
    data = data.to(device)
    torch.manual_seed(seed)
    model = build_model(arch, data.in_channels, data.num_classes)
    fitted = fit(model, data, epochs, plan, device, seed, on_epoch)
    if fitted.status != "trained":
        val_acc = 0.0
    elif len(data.val) == 0:
        val_acc = float("nan")
    else:
        val_acc = evaluate(model, data.val, data, device)
    result = TrainResult(
        val_acc=val_acc,
        train_acc=fitted.train_acc,
        status=fitted.status,
        epochs=fitted.epochs,
        seconds=time.perf_counter() - t0,
        images_per_s=fitted.images_per_s,
        loss=fitted.loss,
    )
    return model, result
