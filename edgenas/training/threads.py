"""How many CPU threads a training uses: one, unless a training step is big enough to share.

A step of edgenas's small networks is thousands of tiny parallel regions; when another process
holds a core, every region's barrier waits for a descheduled thread (measured on a loaded 2-core
machine: a demo search 5.7x slower with two threads than with one; see docs/benchmarks.md,
"issue 24"). One thread is never catastrophic and, for small steps, not slower on an idle machine.
Latency measurement is not governed here: a latency budget names its own threads.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

from edgenas.config.plan import TrainPlan

# MACs of one training step (forward and backward, ~3x the forward pass, times the batch) from which
# every core is used. Below it, one thread (benchmarks/bench_threads.py: a tiny-space 32x32x3 step of
# ~9 G MACs gained less from a second core idle than it lost under load).
SHARED_STEP_MACS = 32_000_000_000
BACKWARD_FACTOR = 3  # a training step's MACs per forward MAC (forward + input and weight gradients)
MAX_THREADS = 1024


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def step_macs(forward_macs: int, batch: int) -> int:
    """MACs of one training step of ``batch`` images whose forward pass costs ``forward_macs`` each."""
    return BACKWARD_FACTOR * forward_macs * batch


def policy_threads(macs_per_step: int, cores: int | None = None) -> int:
    """The policy: every core for a step of at least ``SHARED_STEP_MACS``, else one thread."""
    cores = available_cores() if cores is None else cores
    return cores if macs_per_step >= SHARED_STEP_MACS else 1


def check_threads(value, what: str = "threads") -> int:
    """``value`` as a thread request: an integer from 0 (the policy) to ``MAX_THREADS``; else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_THREADS:
        raise ValueError(f"{what} must be an integer from 0 (edgenas's policy) to {MAX_THREADS}, got {value!r}")
    return value


def training_threads(requested: int, macs_per_step: int, cores: int | None = None) -> int:
    """``requested`` threads, or the policy's count for a step of ``macs_per_step`` where it is 0."""
    return check_threads(requested) or policy_threads(macs_per_step, cores)


def plan_threads(plan: TrainPlan, *, forward_macs: int, train_images: int, cores: int | None = None) -> int:
    """The threads of a training under ``plan`` (``plan.threads``, or the policy where it is 0) of a network
    whose forward pass costs ``forward_macs`` per image, on ``train_images`` images."""
    batch = plan.fast_batch_size if plan.protocol == "fast" else plan.batch_size
    return training_threads(plan.threads, step_macs(forward_macs, min(batch, max(1, train_images))), cores)


@contextmanager
def torch_threads(threads: int | None):
    """PyTorch's intra-op threads set to ``threads`` inside the block (None: left as they are), restored after."""
    import torch

    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
