"""CUDA: a training step captured once as a CUDA graph and replayed, with the eager loop's arithmetic."""

from __future__ import annotations

import warnings

import torch

from edgenas.training.schedule import Schedule

GRAPH_WARMUP_STEPS = 3  # eager steps (real training steps) before the CUDA graph is captured


def graphs_available(device: torch.device) -> bool:
    """Whether ``fit`` can capture training steps as CUDA graphs on ``device`` (needs seeded-generator capture)."""
    return (
        device.type == "cuda"
        and hasattr(torch.cuda, "CUDAGraph")
        and hasattr(torch.cuda.CUDAGraph, "register_generator_state")
    )


class GraphedTrainer:
    """CUDA: the same step as ``trainer._EagerLoop`` with SGD written as foreach ops on a device-side lr,
    and batch position, step count and lr schedule kept on the device, so the whole step of a full
    batch is captured once (after ``GRAPH_WARMUP_STEPS`` eager steps) and replayed with no host
    work but the launch. An incomplete last batch (reference protocol) runs the same code eagerly.

    SGD as torch computes it (dampening 0, no Nesterov): ``g += wd * p``; ``buf = momentum * buf + g``
    (buf starts at 0, so the first step gives ``buf = g``); ``p -= lr * buf``. Clipping as
    ``clip_grad_norm_``: ``g *= min(max_norm / (||g|| + 1e-6), 1)``.
    """

    def __init__(self, step, sched: Schedule, capture: bool = True):  # step: trainer._Step
        dev = step.device
        self.step, self.sched = step, sched
        self.capture = capture  # False: every step eager (what the CPU tests check the arithmetic with)
        self.bufs = [torch.zeros_like(p) for p in step.params]
        self.lrs = torch.tensor(sched.lrs(), dtype=step.params[0].dtype, device=dev)  # the parameters' precision
        self.k = torch.zeros((), dtype=torch.int64, device=dev)  # global step
        self.b = torch.zeros((), dtype=torch.int64, device=dev)  # full batch within the epoch
        self.order = torch.empty(sched.n, dtype=torch.int64, device=dev)
        self.full = min(sched.n // sched.batch_size, sched.steps_per_epoch)  # whole batches of an epoch
        self.batches = self.order[: self.full * sched.batch_size].view(self.full, sched.batch_size)
        self.loss_sum = torch.zeros((), device=dev)
        self.correct = torch.zeros((), dtype=torch.int64, device=dev)
        self.graph: torch.cuda.CUDAGraph | None = None
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
            first: BaseException = e
            while first.__context__ is not None:  # the first error, not capture_end's "capture invalidated"
                first = first.__context__
            warnings.warn(
                f"CUDA graph capture failed, training this candidate eagerly ({type(first).__name__}: "
                f"{' '.join(str(first).split())[:300]})",
                RuntimeWarning,
                stacklevel=3,
            )
            torch.cuda.synchronize()
            self.capture = False
            # the generator took part in the broken capture; go on with a fresh one, still seeded
            self.step.gen = torch.Generator(device=self.step.device).manual_seed(self.step.gen.initial_seed() + 1)
            return
        self.graph = graph  # capture ran nothing: the replay that follows is this step

    def state_dict(self) -> dict:
        """Momentum buffers and the global step: with the parameters and the generator, all a resume needs."""
        return {"bufs": [b.clone() for b in self.bufs], "k": self.k.clone()}

    def load_state_dict(self, state: dict) -> None:
        """In place (a captured graph keeps reading the same tensors); the next steps warm up and capture again."""
        with torch.no_grad():
            for buf, saved in zip(self.bufs, state["bufs"], strict=True):
                buf.copy_(saved)
            self.k.copy_(state["k"])

    def epochs(self, start: int = 0):
        sched, bs = self.sched, self.sched.batch_size
        for _ in range(start, sched.epochs):
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
