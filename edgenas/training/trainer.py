"""Train one candidate under a ``TrainPlan`` and measure its accuracy.

The whole dataset sits on the training device; batches are gathered, augmented and fed there.
Per-batch statistics stay on the device and are read once per epoch. On CUDA each training step
(gather, augmentation, forward, backward, clipping, SGD) is captured once as a CUDA graph and
replayed, so a small net is no longer bound by kernel launches; the arithmetic is unchanged.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from edgenas.config.plan import TrainPlan
from edgenas.errors import ParamError
from edgenas.search.space import Arch, count_macs
from edgenas.training.augment import BatchAugment
from edgenas.training.checkpoint import Checkpointing, restore, training_state
from edgenas.training.cuda_graphs import GraphedTrainer, graphs_available
from edgenas.training.data import ImageData, Split
from edgenas.training.network import build_model
from edgenas.training.schedule import Schedule, schedule_for
from edgenas.training.threads import plan_threads, torch_threads

DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class FitResult:
    """What ``fit`` measured. Accuracies in percent; ``loss`` is the last epoch's mean."""

    train_acc: float
    status: str  # "trained" | "failed" (non-finite loss) | "stopped" (asked to, after a checkpoint)
    epochs: int  # epochs done (counting those before a resumed checkpoint)
    seconds: float  # training wall time
    images_per_s: float
    loss: float
    graphed: bool = False  # the training steps ran as CUDA graph replays


@dataclass(frozen=True)
class TrainResult:
    """One trained candidate. ``val_acc`` is 0.0 when training failed, NaN when there is no val split."""

    val_acc: float
    train_acc: float
    status: str  # "trained" | "failed" | "stopped" (see ``Checkpointing``)
    epochs: int
    seconds: float  # wall time of the training and its accuracy
    images_per_s: float  # training throughput
    loss: float


class EpochCallback(Protocol):
    def __call__(self, epoch: int, epochs: int, loss: float, train_acc: float, seconds: float) -> None: ...  # noqa: PLR0917 (an EpochCallback: called positionally)


def select_device(name: str | None) -> torch.device:
    """None -> CUDA when visible, else the CPU; otherwise ``cpu`` or ``cuda``."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ParamError("device", "cuda", "no CUDA device is visible; use cpu")
        return torch.device("cuda")
    if name == "cpu":
        return torch.device("cpu")
    raise ParamError("device", name, f"unknown device; choose one of: {', '.join(DEVICES)}")


def _autocast(device: torch.device):
    """bf16 autocast on CUDA (no weight-cast cache: graph-safe); full fp32 elsewhere (bit-repeatable on the CPU)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)
    return nullcontext()


@contextmanager
def _bn_momentum(modules: list[nn.Module], power: float):
    """BatchNorm momentum m -> 1 - (1 - m) ** power inside the block (restored after)."""
    saved = [
        (m, m.momentum)
        for mod in modules
        for m in mod.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.momentum is not None
    ]
    if power != 1.0:
        for m, momentum in saved:
            m.momentum = 1.0 - (1.0 - momentum) ** power
    try:
        yield
    finally:
        for m, momentum in saved:
            m.momentum = momentum


class _Step:
    """Everything a training step touches, so one step can run eagerly or be captured and replayed."""

    def __init__(self, model, *, head, loss_fn, params, plan: TrainPlan, train: Split, augment, gen, device):
        self.model, self.head, self.loss_fn, self.params = model, head, loss_fn, params
        self.plan, self.train, self.augment, self.gen, self.device = plan, train, augment, gen, device
        self.memory_format = torch.channels_last  # faster on CUDA and, for these nets, on the CPU too (mkldnn)

    def logits_and_loss(self, x: torch.Tensor, y: torch.Tensor):
        with _autocast(self.device):
            logits = self.model(x) if self.head is None else self.head(self.model.features(x), y)
            wide = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()  # bf16 -> fp32
            return logits, self.loss_fn(wide, y)

    def batch(self, idx: torch.Tensor):
        x = self.augment(self.train.x.index_select(0, idx), self.gen).contiguous(memory_format=self.memory_format)
        return x, self.train.y.index_select(0, idx)


class _EagerLoop:
    """The plain loop (CPU, or CUDA without graphs): torch's SGD, lr set per epoch or per step."""

    def __init__(self, step: _Step, sched: Schedule):
        plan = step.plan
        self.step, self.sched = step, sched
        self.optimizer = torch.optim.SGD(
            step.params, lr=sched.peak_lr, momentum=plan.momentum, weight_decay=plan.weight_decay, foreach=True
        )
        self.per_epoch = sched.protocol == "reference"
        self.scheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=sched.epochs, eta_min=0.0)
            if self.per_epoch
            else None
        )
        self.k = 0  # global step
        self.graph = None  # never a CUDA graph

    def state_dict(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "k": self.k,
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.k = int(state["k"])

    def epochs(self, start: int = 0):
        step, sched, plan, optimizer = self.step, self.sched, self.step.plan, self.optimizer
        n, bs = sched.n, sched.batch_size
        for _ in range(start, sched.epochs):
            order = torch.randperm(n, device=step.device, generator=step.gen)
            loss_sum = torch.zeros((), device=step.device)
            correct = torch.zeros((), device=step.device, dtype=torch.int64)
            seen = 0
            for s in sched.starts:
                if not self.per_epoch:
                    for group in optimizer.param_groups:
                        group["lr"] = sched.lr(self.k)
                x, y = step.batch(order[s : s + bs])
                logits, loss = step.logits_and_loss(x, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if plan.grad_clip > 0:
                    nn.utils.clip_grad_norm_(step.params, plan.grad_clip, foreach=True)
                optimizer.step()
                loss_sum += loss.detach() * y.shape[0]
                correct += (logits.detach().argmax(1) == y).sum()
                seen += y.shape[0]
                self.k += 1
            if self.scheduler is not None:
                self.scheduler.step()
            yield loss_sum, correct, seen


def fit(
    model: nn.Module,
    *,
    data: ImageData,
    epochs: int,
    plan: TrainPlan,
    device: torch.device,
    seed: int,
    on_epoch: EpochCallback | None = None,
    head: nn.Module | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    threads: int | None = None,
    checkpoint: Checkpointing | None = None,
) -> FitResult:
    """Train ``model`` in place on ``data.train`` for ``epochs`` epochs under ``plan``.

    Without ``head``: logits = ``model(x)``. With ``head`` (e.g. a margin head for faces):
    logits = ``head(model.features(x), y)``, and the head's parameters are optimised too.
    ``loss_fn(logits, y)`` defaults to cross-entropy. Shuffling and augmentation are seeded from
    ``seed``; weights are not (seed before building the model). A non-finite epoch loss stops
    training with status ``failed``. ``threads``: PyTorch's CPU threads while training (restored
    after; None leaves them as they are). ``checkpoint``: see ``Checkpointing``. On CUDA with
    ``plan.cuda_graphs`` the steps are replayed CUDA graphs (see ``cuda_graphs.GraphedTrainer``);
    if capture fails the candidate trains eagerly, with a warning.
    """
    if len(data.train) == 0:
        raise ValueError(f"{data.name}: the training split is empty")
    sched = schedule_for(plan, len(data.train), epochs)  # checks epochs and the training-set size
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    modules = [model] + ([head] if head is not None else [])
    for m in modules:
        # Module.to takes both at once; torch's overloads list them apart
        m.to(device=device, memory_format=torch.channels_last).train()  # type: ignore[call-overload]
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    augment = BatchAugment(data, crop_padding=plan.crop_padding, cutout=plan.cutout, device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    step = _Step(
        model,
        head=head,
        loss_fn=loss_fn or F.cross_entropy,
        params=params,
        plan=plan,
        train=data.to(device).train,
        augment=augment,
        gen=gen,
        device=device,
    )
    graphed = device.type == "cuda" and plan.cuda_graphs and graphs_available(device)
    loop = GraphedTrainer(step, sched) if graphed else _EagerLoop(step, sched)
    start = 0
    if checkpoint is not None and checkpoint.state is not None:
        start = restore(checkpoint.state, epochs=epochs, modules=modules, loop=loop, step=step)

    def after_epoch(epoch: int) -> bool:
        """Checkpoint where due; True to stop here."""
        if checkpoint is None:
            return False
        stop = checkpoint.stop()
        if stop or (checkpoint.every and epoch % checkpoint.every == 0 and epoch < epochs):
            checkpoint.save(training_state(epoch, epochs=epochs, modules=modules, loop=loop, step=step))
        return stop and epoch < epochs

    with torch_threads(threads), _bn_momentum(modules, sched.bn_momentum_power):
        result = _run_epochs(loop.epochs(start), epochs=epochs, on_epoch=on_epoch, start=start, after_epoch=after_epoch)
        if plan.recompute_bn and result.status == "trained":
            recompute_bn(model, split=data.train, data=data, device=device, seed=seed)
    return dataclasses.replace(result, graphed=graphed and loop.graph is not None)


BN_IMAGES = 4096  # training images the recomputed BatchNorm statistics average over (at most)
BN_BATCH = 256


@torch.no_grad()
def recompute_bn(
    model: nn.Module,
    *,
    split: Split,
    data: ImageData,
    device: torch.device,
    seed: int,
    images: int = BN_IMAGES,
    batch_size: int = BN_BATCH,
) -> bool:
    """Replace every BatchNorm's running mean and variance by their average over training batches.

    As ``torch.optim.swa_utils.update_bn``: statistics reset, momentum None (a plain average over
    the batches), forward passes in training mode. Images normalised as for ``accuracy``, without
    augmentation (the statistics are used on such images); at most ``images`` of them, drawn with
    ``seed``. Batches of one image are left out (BatchNorm cannot take them). False when there is
    nothing to do (no BatchNorm, or fewer than two training images).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    n = min(len(split), images)
    if not norms or n < 2:
        return False
    gen = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(split), generator=gen)[:n].to(split.x.device)
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    mean = torch.tensor(data.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    inv_std = 1.0 / torch.tensor(data.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    was_training = model.training
    model.train()
    try:
        for s in range(0, n, batch_size):
            idx = chosen[s : s + batch_size]
            if len(idx) < 2:
                break
            x = split.x.index_select(0, idx).to(device)
            x = ((x.float().div_(255.0) - mean).mul_(inv_std)).contiguous(memory_format=torch.channels_last)
            with _autocast(device):
                model(x)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)
    return True


def _run_epochs(
    epoch_stats,
    *,
    epochs: int,
    on_epoch: EpochCallback | None,
    start: int = 0,
    after_epoch: Callable[[int], bool] = lambda epoch: False,
) -> FitResult:
    """Drive the epochs after ``start``, reading each one's loss and accuracy once; stop at a non-finite
    loss, or where ``after_epoch`` says so (status ``stopped``)."""
    t0 = time.perf_counter()
    status, loss_mean, train_acc, done, images = "trained", float("nan"), 0.0, start, 0
    for epoch, (loss_sum, correct, seen) in enumerate(epoch_stats, start=start + 1):
        done = epoch
        images += seen
        loss_mean = loss_sum.item() / seen  # the one device sync of the epoch
        train_acc = 100.0 * correct.item() / seen
        if on_epoch is not None:
            on_epoch(epoch, epochs, loss_mean, train_acc, time.perf_counter() - t0)
        if not math.isfinite(loss_mean):
            status = "failed"
            break
        if after_epoch(epoch):
            status = "stopped"
            break
    seconds = time.perf_counter() - t0
    return FitResult(
        train_acc=train_acc,
        status=status,
        epochs=done,
        seconds=seconds,
        images_per_s=images / seconds if seconds > 0 else 0.0,
        loss=loss_mean,
    )


@torch.inference_mode()
def accuracy(model: nn.Module, *, split: Split, data: ImageData, device: torch.device, batch_size: int = 1024) -> float:
    """Top-1 accuracy (percent) of ``model`` on ``split``, normalised with ``data``'s statistics."""
    if len(split) == 0:
        raise ValueError(f"{data.name}: cannot measure accuracy on an empty split")
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


def candidate_threads(plan: TrainPlan, *, arch: Arch, data: ImageData, outputs: int | None = None) -> int:
    """The CPU threads that train ``arch`` on ``data`` under ``plan`` (``plan.threads``, or the policy's)."""
    h, w = data.input_size
    macs = count_macs(arch, in_channels=data.in_channels, num_classes=outputs or data.num_classes, input_size=(h, w))
    return plan_threads(plan, forward_macs=macs, train_images=len(data.train))


def train_candidate(
    arch: Arch,
    *,
    data: ImageData,
    epochs: int,
    plan: TrainPlan,
    device: torch.device,
    seed: int,
    on_epoch: EpochCallback | None = None,
    threads: int | None = None,
    checkpoint: Checkpointing | None = None,
) -> tuple[nn.Module, TrainResult]:
    """Build ``arch`` with weights seeded from ``seed``, train it, and rank it on ``data.val``.

    ``threads``: CPU threads (default: ``candidate_threads``); ``checkpoint``: see ``Checkpointing``
    (a ``stopped`` training has no accuracy measured)."""
    t0 = time.perf_counter()
    data = data.to(device)
    threads = candidate_threads(plan, arch=arch, data=data) if threads is None else threads
    torch.manual_seed(seed)
    model = build_model(arch, data.in_channels, data.num_classes)
    with torch_threads(threads):
        fitted = fit(
            model,
            data=data,
            epochs=epochs,
            plan=plan,
            device=device,
            seed=seed,
            on_epoch=on_epoch,
            checkpoint=checkpoint,
        )
        if fitted.status != "trained":
            val_acc = 0.0
        elif len(data.val) == 0:
            val_acc = float("nan")
        else:
            val_acc = accuracy(model, split=data.val, data=data, device=device)
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
