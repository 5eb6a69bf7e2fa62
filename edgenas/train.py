"""Train one candidate under a ``TrainPlan`` and evaluate it.

The whole dataset sits on the training device; batches are gathered, augmented and fed there.
Per-batch statistics stay on the device and are read once per epoch. On CUDA each training step
(gather, augmentation, forward, backward, clipping, SGD) is captured once as a CUDA graph and
replayed, so a small net is no longer bound by kernel launches; the arithmetic is unchanged.
"""

from __future__ import annotations

import math
import time
import warnings
from contextlib import contextmanager, nullcontext
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
GRAPH_WARMUP_STEPS = 3  # eager steps (real training steps) before the CUDA graph is captured


@dataclass(frozen=True)
class TrainPlan:
    """How a candidate is trained. Defaults are the reference protocol (ALGORITHM.md).

    ``fast`` protocol: batches of ``fast_batch_size`` (the last incomplete batch of an epoch is
    dropped; every epoch draws a new order), learning rate ``lr * fast_batch_size / batch_size``
    (linear scaling), warmed up linearly over the first ``warmup_fraction`` of the steps, then
    cosine-annealed to 0 per step; BatchNorm momentum ``m`` becomes ``1 - (1 - m) ** (fast_batch_size
    / batch_size)`` while training, so running statistics average over as many images as in the
    reference (with 8x fewer steps they would otherwise lag the weights). Everything else (SGD,
    momentum, weight decay, clipping, augmentation, epochs) is the reference protocol's.
    """

    protocol: str = "reference"  # "reference" (faithful) or "fast" (large batch, scaled lr, warm-up)
    batch_size: int = 64
    lr: float = 0.025  # at batch_size; cosine-annealed to 0 over the candidate's epochs
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0  # max gradient norm; 0 disables
    crop_padding: int = 4  # random crop with this zero padding (pixels); 0 disables
    cutout: int = 16  # cutout square side (pixels), applied where the image is larger; 0 disables
    final_epochs: int = 600  # epochs of `edgenas train` (the final training)
    fast_batch_size: int = 512  # fast protocol: images per step (capped at the training-set size)
    warmup_fraction: float = 0.05  # fast protocol: share of all steps with a linear lr warm-up, in [0, 1)
    cuda_graphs: bool = True  # on CUDA: replay each training step as a captured CUDA graph (same math)


@dataclass(frozen=True)
class FitResult:
    """What ``fit`` measured. Accuracies in percent; ``loss`` is the last epoch's mean."""

    train_acc: float
    status: str  # "trained" | "failed" (non-finite loss)
    epochs: int  # epochs actually run
    seconds: float  # training wall time
    images_per_s: float
    loss: float
    graphed: bool = False  # the training steps ran as CUDA graph replays


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
    """The batches and learning rates ``fit`` uses for ``n`` training images and ``epochs`` epochs."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if n < 1:
        raise ValueError(f"the training split must hold at least one image, got {n}")
    if plan.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {plan.batch_size}")
    if plan.protocol == "reference":
        bs = plan.batch_size
        starts = tuple(s for s in range(0, n, bs) if min(bs, n - s) > 1 or n == 1)  # a lone last sample breaks BatchNorm
        return Schedule("reference", bs, starts, epochs, plan.lr, 0, n)
    if plan.protocol == "fast":
        if plan.fast_batch_size < 1:
            raise ValueError(f"fast_batch_size must be >= 1, got {plan.fast_batch_size}")
        if not 0.0 <= plan.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {plan.warmup_fraction}")
        bs = min(plan.fast_batch_size, n)
        starts = tuple(range(0, (n // bs) * bs, bs))  # whole batches only: one shape, one graph
        warmup = int(round(plan.warmup_fraction * len(starts) * epochs))
        ratio = bs / plan.batch_size
        return Schedule("fast", bs, starts, epochs, plan.lr * ratio, warmup, n, bn_momentum_power=ratio)
    raise ValueError(f"unknown training protocol {plan.protocol!r}; choose one of: {', '.join(PROTOCOLS)}")


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
    """bf16 autocast on CUDA (no weight-cast cache: graph-safe); full fp32 elsewhere (bit-repeatable on the CPU)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)
    return nullcontext()


def graphs_available(device: torch.device) -> bool:
    """Whether ``fit`` can capture training steps as CUDA graphs on ``device`` (needs seeded-generator capture)."""
    return device.type == "cuda" and hasattr(torch.cuda, "CUDAGraph") and hasattr(
        torch.cuda.CUDAGraph, "register_generator_state"
    )


@contextmanager
def _bn_momentum(modules: list[nn.Module], power: float):
    """BatchNorm momentum m -> 1 - (1 - m) ** power inside the block (restored after)."""
    norms = [m for mod in modules for m in mod.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.momentum is not None]
    saved = [m.momentum for m in norms]
    if power != 1.0:
        for m in norms:
            m.momentum = 1.0 - (1.0 - m.momentum) ** power
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum


class _Step:
    """Everything a training step touches, so one step can run eagerly or be captured and replayed."""

    def __init__(self, model, head, loss_fn, params, plan: TrainPlan, train: Split, augment, gen, device):
        self.model, self.head, self.loss_fn, self.params = model, head, loss_fn, params
        self.plan, self.train, self.augment, self.gen, self.device = plan, train, augment, gen, device
        self.memory_format = torch.channels_last  # faster on CUDA and, for these nets, on the CPU too (mkldnn)

    def logits_and_loss(self, x: torch.Tensor, y: torch.Tensor):
        with _autocast(self.device):
            logits = self.model(x) if self.head is None else self.head(self.model.features(x), y)
            return logits, self.loss_fn(logits.float(), y)

    def batch(self, idx: torch.Tensor):
        x = self.augment(self.train.x.index_select(0, idx), self.gen).contiguous(memory_format=self.memory_format)
        return x, self.train.y.index_select(0, idx)


def _eager_epochs(step: _Step, sched: Schedule):
    """The plain loop (CPU, or CUDA without graphs): torch's SGD, lr set per epoch or per step."""
    plan = step.plan
    optimizer = torch.optim.SGD(step.params, lr=sched.peak_lr, momentum=plan.momentum,
                                weight_decay=plan.weight_decay, foreach=True)
    per_epoch = sched.protocol == "reference"
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=sched.epochs, eta_min=0.0) if per_epoch else None
    n, bs, k = sched.n, sched.batch_size, 0
    for _ in range(sched.epochs):
        order = torch.randperm(n, device=step.device, generator=step.gen)
        loss_sum = torch.zeros((), device=step.device)
        correct = torch.zeros((), device=step.device, dtype=torch.int64)
        seen = 0
        for s in sched.starts:
            if not per_epoch:
                for group in optimizer.param_groups:
                    group["lr"] = sched.lr(k)
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
            k += 1
        if scheduler is not None:
            scheduler.step()
        yield loss_sum, correct, seen


class _GraphedTrainer:
    """CUDA: the same step as ``_eager_epochs`` with SGD written as foreach ops on a device-side lr,
    and batch position, step count and lr schedule kept on the device, so the whole step of a full
    batch is captured once (after ``GRAPH_WARMUP_STEPS`` eager steps) and replayed with no host
    work but the launch. An incomplete last batch (reference protocol) runs the same code eagerly.

    SGD as torch computes it (dampening 0, no Nesterov): ``g += wd * p``; ``buf = momentum * buf + g``
    (buf starts at 0, so the first step gives ``buf = g``); ``p -= lr * buf``. Clipping as
    ``clip_grad_norm_``: ``g *= min(max_norm / (||g|| + 1e-6), 1)``.
    """

    def __init__(self, step: _Step, sched: Schedule, capture: bool = True):
        dev = step.device
        self.step, self.sched = step, sched
        self.capture = capture  # False: every step eager (what the CPU tests check the arithmetic with)
        self.bufs = [torch.zeros_like(p) for p in step.params]
        self.lrs = torch.tensor(sched.lrs(), dtype=torch.float32, device=dev)
        self.k = torch.zeros((), dtype=torch.int64, device=dev)  # global step
        self.b = torch.zeros((), dtype=torch.int64, device=dev)  # full batch within the epoch
        self.order = torch.empty(sched.n, dtype=torch.int64, device=dev)
        self.full = min(sched.n // sched.batch_size, sched.steps_per_epoch)  # whole batches of an epoch
        self.batches = self.order[: self.full * sched.batch_size].view(self.full, sched.batch_size)
        self.loss_sum = torch.zeros((), device=dev)
        self.correct = torch.zeros((), dtype=torch.int64, device=dev)
        self.graph = None
        self.eager_steps = 0

    def _train_on(self, idx: torch.Tensor) -> None:
        st, plan = self.step, self.step.plan
        x, y = st.batch(idx)
        logits, loss = st.logits_and_loss(x, y)
        grads = torch.autograd.grad(loss, st.params)
        with torch.no_grad():
            if plan.grad_clip > 0:
                total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)
                torch._foreach_mul_(grads, torch.clamp(plan.grad_clip / (total + 1e-6), max=1.0))
            if plan.weight_decay:
                torch._foreach_add_(grads, st.params, alpha=plan.weight_decay)
            torch._foreach_mul_(self.bufs, plan.momentum)
            torch._foreach_add_(self.bufs, grads)
            lr = self.lrs.index_select(0, self.k.view(1)).squeeze(0)
            torch._foreach_sub_(st.params, torch._foreach_mul(self.bufs, lr))
            self.loss_sum.add_(loss.detach() * y.shape[0])
            self.correct.add_((logits.detach().argmax(1) == y).sum())
            self.k.add_(1)

    def _full_batch(self) -> None:
        self._train_on(self.batches.index_select(0, self.b.view(1)).view(-1))
        with torch.no_grad():
            self.b.add_(1)

    def _warmup_step(self) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # as the CUDA-graph docs ask: warm-up on a side stream
            self._full_batch()
        torch.cuda.current_stream().wait_stream(side)
        self.eager_steps += 1

    def _capture(self) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        torch.cuda.synchronize()
        try:
            graph = torch.cuda.CUDAGraph()
            graph.register_generator_state(self.step.gen)  # augmentation draws advance per replay
            # torch.cuda.graph() without its context manager, so a failed capture_end still leaves the side stream
            with torch.cuda.stream(side):
                graph.capture_begin(capture_error_mode="thread_local")
                try:
                    self._full_batch()
                finally:
                    graph.capture_end()
            torch.cuda.current_stream().wait_stream(side)
        except Exception as e:  # noqa: BLE001 - any capture failure: train on, eagerly
            while e.__context__ is not None:  # the first error, not capture_end's "capture invalidated"
                e = e.__context__
            warnings.warn(f"CUDA graph capture failed, training this candidate eagerly ({type(e).__name__}: "
                          f"{' '.join(str(e).split())[:300]})", RuntimeWarning, stacklevel=3)
            torch.cuda.synchronize()
            self.capture = False
            # the generator took part in the broken capture; go on with a fresh one, still seeded
            self.step.gen = torch.Generator(device=self.step.device).manual_seed(self.step.gen.initial_seed() + 1)
            return
        self.graph = graph  # capture ran nothing: the replay that follows is this step

    def epochs(self):
        sched, bs = self.sched, self.sched.batch_size
        for _ in range(sched.epochs):
            self.order.copy_(torch.randperm(sched.n, device=self.step.device, generator=self.step.gen))
            self.loss_sum.zero_()
            self.correct.zero_()
            self.b.zero_()
            for _ in range(self.full):
                if self.capture and self.graph is None and self.eager_steps >= GRAPH_WARMUP_STEPS:
                    self._capture()
                if self.graph is not None:
                    self.graph.replay()
                elif self.capture:
                    self._warmup_step()
                else:
                    self._full_batch()
            seen = self.full * bs
            if sched.steps_per_epoch > self.full:  # reference: the incomplete last batch
                self._train_on(self.order[seen:])
                seen = sched.n
            yield self.loss_sum, self.correct, seen


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
    training with status ``failed``. On CUDA with ``plan.cuda_graphs`` the steps are replayed
    CUDA graphs (see ``_GraphedTrainer``); if capture fails the candidate trains eagerly, with a warning.
    """
    if len(data.train) == 0:
        raise ValueError(f"{data.name}: the training split is empty")
    sched = schedule_for(plan, len(data.train), epochs)  # checks epochs, batch sizes and the protocol
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    modules = [model] + ([head] if head is not None else [])
    for m in modules:
        m.to(device=device, memory_format=torch.channels_last).train()
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    train = data.to(device).train
    augment = BatchAugment(data, crop_padding=plan.crop_padding, cutout=plan.cutout, device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    step = _Step(model, head, loss_fn or F.cross_entropy, params, plan, train, augment, gen, device)
    graphed = None
    if cuda and plan.cuda_graphs and graphs_available(device):
        graphed = _GraphedTrainer(step, sched)
        epoch_stats = graphed.epochs()
    else:
        epoch_stats = _eager_epochs(step, sched)

    t0 = time.perf_counter()
    status, loss_mean, train_acc, done, images = "trained", float("nan"), 0.0, 0, 0
    with _bn_momentum(modules, sched.bn_momentum_power):
        for epoch, (loss_sum, correct, seen) in enumerate(epoch_stats, start=1):
            done = epoch
            images += seen
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
        images_per_s=images / seconds if seconds > 0 else 0.0,
        loss=loss_mean,
        graphed=graphed is not None and graphed.graph is not None,
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
