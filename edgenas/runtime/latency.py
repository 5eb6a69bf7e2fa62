"""Measure a network's median latency on a ``Target``'s runtime, through the runtime's plug-in (``backend.py``).

Latency does not depend on the weights' values, so the network is randomly initialised (its
activations kept at a trained network's scale: ``normalize_activations``); the runtime's backend
converts it and opens it on the runner ``edgenas bench`` uses, and the device kit times it.
"""

from __future__ import annotations

import math

import numpy as np

from edgenas.device_kit import edgenas_kit as kit
from edgenas.runtime.backend import check_available, device_graph, module_runner
from edgenas.runtime.runners import kit_errors
from edgenas.runtime.target import Target
from edgenas.search.space import Arch
from edgenas.training.network import build_network

WARMUP = 10  # most untimed runs before timing (the first ORT/TensorRT calls allocate, pick kernels)
WARMUP_SECONDS = 0.1  # ... or fewer, for a network slower than WARMUP_SECONDS / WARMUP
PROBE_RUNS = 5  # timed runs (after one untimed) that size the measurement
MIN_RUNS = 30
MIN_SECONDS = 0.3  # timed runs last at least this long, unless MAX_RUNS comes first
MAX_RUNS = 5000
MAX_SECONDS = 5.0  # a slow network stops at MIN_RUNS or after this long, whichever is later


def median_ms(fn, synchronize=None, *, min_seconds: float = MIN_SECONDS) -> float:
    """Median milliseconds of ``fn()``: warm-up, a short probe, then runs lasting ``min_seconds`` (at least MIN_RUNS)."""
    per_run = max(float(np.median(kit.measure(fn, warmup=1, runs=PROBE_RUNS, synchronize=synchronize))), 1e-3)
    warmup = min(WARMUP, math.ceil(WARMUP_SECONDS * 1e3 / per_run))
    runs = max(MIN_RUNS, math.ceil(min_seconds * 1e3 / per_run))
    runs = min(runs, MAX_RUNS, max(MIN_RUNS, math.floor(MAX_SECONDS * 1e3 / per_run)))
    return float(np.median(kit.measure(fn, warmup=warmup, runs=runs, synchronize=synchronize)))


BN_IMAGES = 4  # random images whose statistics a random network's BatchNorm layers take (normalize_activations)


def random_network(arch: Arch, target: Target):
    """The deployed network of ``arch`` for ``target`` with random weights whose activations keep a trained
    network's scale, built without touching the caller's RNG state."""
    return seeded(
        lambda: normalize_activations(
            build_network(arch, task=target.task, in_channels=target.input_chw[0], outputs=target.outputs),
            target.input_chw,
        )
    )


def normalize_activations(model, input_chw: tuple[int, int, int]):
    """Set every BatchNorm's running statistics to those of random normal images, as training leaves them.

    At initialisation each layer shrinks its input (about 5e-7 per 10 layers here): from about 55
    layers on the activations are subnormal floats, which x86 CPUs compute up to 100x slower, and
    random networks deeper than about 65 layers were timed 1.8-14x slower than with normal values
    (docs/benchmarks.md). Normalised, every layer works on values of order one, as in the network
    that is deployed.
    """
    import torch

    norms = [m for m in model.modules() if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: one pass gives the batch's statistics
    model.train()
    with torch.no_grad():
        model(torch.randn(BN_IMAGES, *input_chw))
    return model.eval()


def seeded(make):
    """``make()`` (a module) in eval mode, initialised from seed 0 without touching the caller's RNG state."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return make().eval()


def measure_latency(arch: Arch, target: Target, *, calibration: np.ndarray | None = None) -> float:
    """Median latency in ms of one batch of ``target.batch`` images of ``arch``'s deployed network on ``target.runtime``.

    ``calibration``: normalised images the INT8 runtimes quantise with (default: random ones; the
    kernels and so the latency do not depend on the ranges). An unknown runtime is a ``ParamError``;
    one this machine lacks a ``MissingDependency``.
    """
    check_available(target.runtime)
    return measure_module(random_network(arch, target), target=target, calibration=calibration)


def measure_module(
    model,
    *,
    target: Target,
    input_chw: tuple[int, int, int] | None = None,
    calibration: np.ndarray | None = None,
    timer=median_ms,
) -> float:
    """Median ms of one batch through any eval-mode module, timed as a network is on ``target``'s runtime,
    threads and batch. ``input_chw``: the module's input (default the target's: a latency table's parts
    take others); ``timer(fn, synchronize)`` times a call (default ``median_ms``)."""
    input_chw = input_chw or target.input_chw
    x = kit.bench_input(input_chw, target.batch)
    with (
        module_runner(
            model,
            runtime=target.runtime,
            input_chw=input_chw,
            threads=target.threads,
            batch=target.batch,
            calibration=calibration,
        ) as runner,
        kit_errors(),
    ):
        return timer(lambda: runner(x))


def timing_graph(
    model, *, target: Target, input_chw: tuple[int, int, int] | None = None, calibration: np.ndarray | None = None
) -> bytes:
    """What a device server is sent to time ``model`` as ``measure_module`` times it here on ``target``'s runtime:
    an ONNX graph, or the converted model's files in one archive (``backend.device_graph``)."""
    return device_graph(model, runtime=target.runtime, input_chw=input_chw or target.input_chw, calibration=calibration)
