"""Measure a network's median latency on the runtime a budget names (ONNX Runtime, TensorRT, PyTorch).

Latency does not depend on the weights' values, so the network is randomly initialised (its
activations kept at a trained network's scale: ``normalize_activations``); it is exported to
the graph ``edgenas export`` writes and run on the runner ``edgenas bench`` uses, timed with the device kit.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np

from edgenas.config.runtimes import RUNTIMES
from edgenas.device_kit import edgenas_kit as kit
from edgenas.errors import MissingDependency, ParamError
from edgenas.runtime.onnx import half_precision, quantize_int8, timing_onnx
from edgenas.runtime.ort_int8 import LATENCY_CALIBRATION_IMAGES, quantize_ort_int8
from edgenas.runtime.runners import kit_errors
from edgenas.runtime.tensorrt import build_engine, import_tensorrt
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
    per_run = max(float(np.median(kit.measure(fn, 1, PROBE_RUNS, synchronize))), 1e-3)
    warmup = min(WARMUP, math.ceil(WARMUP_SECONDS * 1e3 / per_run))
    runs = max(MIN_RUNS, math.ceil(min_seconds * 1e3 / per_run))
    runs = min(runs, MAX_RUNS, max(MIN_RUNS, math.floor(MAX_SECONDS * 1e3 / per_run)))
    return float(np.median(kit.measure(fn, warmup, runs, synchronize)))


BN_IMAGES = 4  # random images whose statistics a random network's BatchNorm layers take (normalize_activations)


def random_network(arch: Arch, *, task: str, input_chw: tuple[int, int, int], outputs: int):
    """The deployed network of ``arch`` with random weights whose activations keep a trained network's scale,
    built without touching the caller's RNG state."""
    return seeded(lambda: normalize_activations(build_network(arch, task=task, in_channels=input_chw[0],
                                                              outputs=outputs), input_chw))


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


def check_runtime_available(runtime: str) -> None:
    """Raise ``MissingDependency`` when this machine cannot time on ``runtime`` (a cheap check, nothing built)."""
    if runtime not in RUNTIMES:
        raise ParamError("runtime", runtime, f"choose one of {', '.join(RUNTIMES)}")
    if runtime.startswith("tensorrt-"):
        import_tensorrt(f"runtime {runtime}")
    elif runtime == "onnxruntime-cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise MissingDependency("runtime onnxruntime-cuda needs onnxruntime-gpu and a CUDA GPU: pip install onnxruntime-gpu")
    elif runtime == "torch-cuda":
        import torch

        if not torch.cuda.is_available():
            raise MissingDependency("runtime torch-cuda needs a CUDA GPU and a CUDA build of torch; torch sees no GPU")


def runtime_available(runtime: str) -> bool:
    """Whether this machine can time on ``runtime`` (``check_runtime_available`` without the error)."""
    try:
        check_runtime_available(runtime)
    except MissingDependency:
        return False
    return True


def measure_latency(arch: Arch, *, task: str, input_chw: tuple[int, int, int], outputs: int, runtime: str,
                    threads: int = 1, batch: int = 1, calibration: np.ndarray | None = None) -> float:
    """Median latency in ms of one batch of ``batch`` images of ``arch``'s deployed network on ``runtime``.

    ``outputs``: classes, or the embedding size of a ``face`` network. ``threads`` applies to CPU
    runtimes. ``calibration``: normalised images the INT8 runtimes quantise with (default: random
    ones; the kernels and so the latency do not depend on the ranges). An unknown runtime is a
    ``ParamError``; one this machine lacks a ``MissingDependency``.
    """
    check_runtime_available(runtime)
    model = random_network(arch, task=task, input_chw=input_chw, outputs=outputs)
    return measure_module(model, input_chw=input_chw, runtime=runtime, threads=threads, batch=batch,
                          calibration=calibration)


def measure_module(model, *, input_chw: tuple[int, int, int], runtime: str, threads: int = 1, batch: int = 1,
                   calibration: np.ndarray | None = None, timer=median_ms) -> float:
    """Median ms of one batch through any eval-mode module taking (batch, *input_chw), timed as a network is.

    ``timer(fn, synchronize)`` times a call (default ``median_ms``); a latency table's parts use a shorter one.
    """
    if threads < 1 or batch < 1:
        raise ParamError("threads" if threads < 1 else "batch", threads if threads < 1 else batch, "give an integer >= 1")
    check_runtime_available(runtime)
    if runtime.startswith("torch-"):
        return _torch_latency(model, input_chw, runtime=runtime, threads=threads, batch=batch, timer=timer)
    with tempfile.TemporaryDirectory(prefix="edgenas-latency-") as tmp:
        path = _timing_file(model, Path(tmp), input_chw, runtime=runtime, batch=batch, calibration=calibration)
        with kit_errors(), kit.open_runner(path, runtime, threads) as runner:
            x = kit.bench_input(input_chw, batch)
            return timer(lambda: runner(x))


def _timing_onnx(model, tmp: Path, input_chw: tuple[int, int, int], *, runtime: str,
                 calibration: np.ndarray | None = None) -> Path:
    """The ONNX file ``runtime`` runs or builds from: float32, an FP16 graph (tensorrt-fp16), Q/DQ
    for TensorRT (tensorrt-int8) or ONNX Runtime's INT8 graph (onnxruntime-cpu-int8)."""
    if calibration is None and runtime.endswith("-int8"):
        calibration = np.random.default_rng(0).standard_normal((LATENCY_CALIBRATION_IMAGES, *input_chw), dtype=np.float32)
    if runtime == "onnxruntime-cpu-int8":  # as `edgenas export --format onnx-int8` writes it
        return quantize_ort_int8(timing_onnx(model, tmp / "fp32.onnx", input_chw), out_path=tmp / "int8.onnx",
                                 calibration=calibration)
    if runtime == "tensorrt-fp16":
        return timing_onnx(half_precision(model), tmp / "fp16.onnx", input_chw)
    if runtime == "tensorrt-int8":
        # Timing only: the Q/DQ ranges of a randomly initialised network are meaningless, but the
        # engine runs the INT8 kernels the exported one will; latency does not depend on values.
        return quantize_int8(timing_onnx(model, tmp / "fp32.onnx", input_chw), tmp / "int8.onnx", calibration)
    return timing_onnx(model, tmp / "model.onnx", input_chw)


def _timing_file(model, tmp: Path, input_chw: tuple[int, int, int], *, runtime: str, batch: int,
                 calibration: np.ndarray | None = None) -> Path:
    """The file ``runtime`` runs: an ONNX file, or a TensorRT engine built for ``batch``."""
    path = _timing_onnx(model, tmp, input_chw, runtime=runtime, calibration=calibration)
    if runtime.startswith("tensorrt-"):
        return build_engine(path, tmp / "model.engine", input_chw, opt_batch=batch, max_batch=batch)
    return path


def timing_onnx_bytes(arch: Arch, *, task: str, input_chw: tuple[int, int, int], outputs: int, runtime: str,
                      calibration: np.ndarray | None = None) -> bytes:
    """The ONNX graph ``measure_latency`` times ``arch`` from on ``runtime``, for a device to build and time."""
    model = random_network(arch, task=task, input_chw=input_chw, outputs=outputs)
    return module_onnx_bytes(model, input_chw=input_chw, runtime=runtime, calibration=calibration)


def module_onnx_bytes(model, *, input_chw: tuple[int, int, int], runtime: str,
                      calibration: np.ndarray | None = None) -> bytes:
    """The ONNX graph ``measure_module`` times ``model`` from on ``runtime`` (a network or a table's part)."""
    with tempfile.TemporaryDirectory(prefix="edgenas-latency-") as tmp:
        return _timing_onnx(model, Path(tmp), input_chw, runtime=runtime, calibration=calibration).read_bytes()


def _torch_latency(model, input_chw: tuple[int, int, int], *, runtime: str, threads: int, batch: int, timer) -> float:
    import torch

    cuda = runtime == "torch-cuda"
    device = "cuda" if cuda else "cpu"
    model = model.to(device)
    x = torch.from_numpy(kit.bench_input(input_chw, batch)).to(device)
    old_threads = torch.get_num_threads()
    if not cuda:
        torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            return timer(lambda: model(x), torch.cuda.synchronize if cuda else None)
    finally:
        torch.set_num_threads(old_threads)
