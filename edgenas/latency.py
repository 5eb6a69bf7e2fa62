"""Measure a network's median latency on the runtime a budget names (ONNX Runtime, TensorRT, PyTorch).

Latency does not depend on the weights, so the network is randomly initialised; it is exported to
the graph ``edgenas export`` writes and run on the runner ``edgenas bench`` uses, timed with the device kit.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from pathlib import Path

import numpy as np

from edgenas.bench import kit, kit_errors
from edgenas.errors import MissingDependency, UserInputError
from edgenas.profiles import RUNTIMES
from edgenas.space import Arch

WARMUP = 10  # most untimed runs before timing (the first ORT/TensorRT calls allocate, pick kernels)
WARMUP_SECONDS = 0.1  # ... or fewer, for a network slower than WARMUP_SECONDS / WARMUP
PROBE_RUNS = 5  # timed runs (after one untimed) that size the measurement
MIN_RUNS = 30
MIN_SECONDS = 0.3  # timed runs last at least this long, unless MAX_RUNS comes first
MAX_RUNS = 5000
MAX_SECONDS = 5.0  # a slow network stops at MIN_RUNS or after this long, whichever is later
TASKS = ("classify", "face")


def median_ms(fn, synchronize=None) -> float:
    """Median milliseconds of ``fn()``: warm-up, a short probe, then enough runs for a stable median."""
    per_run = max(float(np.median(kit.measure(fn, 1, PROBE_RUNS, synchronize))), 1e-3)
    warmup = min(WARMUP, math.ceil(WARMUP_SECONDS * 1e3 / per_run))
    runs = max(MIN_RUNS, math.ceil(MIN_SECONDS * 1e3 / per_run))
    runs = min(runs, MAX_RUNS, max(MIN_RUNS, math.floor(MAX_SECONDS * 1e3 / per_run)))
    return float(np.median(kit.measure(fn, warmup, runs, synchronize)))


def _random_model(arch: Arch, in_channels: int, num_classes: int, task: str, embedding_dim: int | None):
    """The run's network with random weights, built without touching the caller's RNG state."""
    import torch

    from edgenas.network import model_for_run

    meta = {"task": task, "data": {"in_channels": in_channels, "num_classes": num_classes},
            "profile": {"face": {"embedding_dim": embedding_dim}}}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return model_for_run(arch, meta).eval()


def timing_onnx(model, path: Path, input_chw: tuple[int, int, int]) -> Path:
    """An ONNX file of ``model`` for timing: the TorchScript exporter while torch ships it, else export_onnx.

    The TorchScript exporter takes ~0.05 s where the dynamo exporter of ``edgenas export`` takes
    ~2 s (it rebuilds its op registry on every call), and a search measures many candidates. Both
    fold BatchNorm and emit the same Conv/Relu/Gemm graph, which ONNX Runtime times alike
    (tests/test_latency.py compares the graphs); only the pooling node is spelt differently.
    """
    import torch

    from edgenas.export import INPUT_NAME, ONNX_OPSET, OUTPUT_NAME, export_onnx

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its deprecation warning: the fallback below takes over
            torch.onnx.export(model, (torch.zeros(1, *input_chw),), str(path), dynamo=False, opset_version=ONNX_OPSET,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
        return path
    except Exception:  # noqa: BLE001 -- a torch without the TorchScript exporter, or a model it cannot trace
        return export_onnx(model, path, input_chw, {"purpose": "latency"})


def _check_args(runtime: str, threads: int, batch: int, task: str, embedding_dim) -> None:
    if runtime not in RUNTIMES:
        raise UserInputError(f"unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    if threads < 1 or batch < 1:
        raise UserInputError(f"threads and batch must be >= 1, got threads {threads}, batch {batch}")
    if task not in TASKS:
        raise UserInputError(f"unknown task {task!r}: choose classify or face")
    if task == "face" and not embedding_dim:
        raise UserInputError("the face task needs embedding_dim to build its network")


def measure_latency(arch: Arch, in_channels: int, num_classes: int, input_size: tuple[int, int], runtime: str,
                    threads: int = 1, batch: int = 1, task: str = "classify", embedding_dim: int | None = None) -> float:
    """Median latency in ms of one batch of ``batch`` images of ``arch`` on ``runtime``.

    ``runtime`` is one of ``edgenas.profiles.RUNTIMES``; ``threads`` applies to CPU runtimes.
    An unknown runtime is a ``UserInputError``; one this machine lacks is a ``MissingDependency``.
    """
    _check_args(runtime, threads, batch, task, embedding_dim)
    if runtime.startswith("torch-"):
        return _torch_latency(arch, in_channels, num_classes, input_size, runtime, threads, batch, task, embedding_dim)
    if runtime.startswith("tensorrt-"):
        from edgenas.export import import_tensorrt

        import_tensorrt(f"runtime {runtime}")  # fail before exporting anything
    elif runtime == "onnxruntime-cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise MissingDependency("runtime onnxruntime-cuda needs onnxruntime-gpu and a CUDA GPU: pip install onnxruntime-gpu")
    from edgenas.export import build_engine, half_precision, quantize_int8

    model = _random_model(arch, in_channels, num_classes, task, embedding_dim)
    input_chw = (in_channels, *input_size)
    with tempfile.TemporaryDirectory(prefix="edgenas-latency-") as tmp:
        tmp = Path(tmp)
        if runtime == "tensorrt-fp16":
            path = build_engine(timing_onnx(half_precision(model), tmp / "fp16.onnx", input_chw), tmp / "model.engine",
                                input_chw, opt_batch=batch, max_batch=batch)
        elif runtime == "tensorrt-int8":
            # Timing only: calibrated on random images, so the Q/DQ ranges are meaningless, but the
            # engine runs the INT8 kernels the exported one will; latency does not depend on values.
            calibration = np.random.default_rng(0).standard_normal((batch, *input_chw), dtype=np.float32)
            qdq = quantize_int8(timing_onnx(model, tmp / "fp32.onnx", input_chw), tmp / "int8.onnx", calibration)
            path = build_engine(qdq, tmp / "model.engine", input_chw, opt_batch=batch, max_batch=batch)
        else:
            path = timing_onnx(model, tmp / "model.onnx", input_chw)
        with kit_errors(), kit.open_runner(path, runtime, threads) as runner:
            x = kit.bench_input(input_chw, batch)
            return median_ms(lambda: runner(x))


def _torch_latency(arch, in_channels, num_classes, input_size, runtime, threads, batch, task, embedding_dim) -> float:
    import torch

    cuda = runtime == "torch-cuda"
    if cuda and not torch.cuda.is_available():
        raise MissingDependency("runtime torch-cuda needs a CUDA GPU and a CUDA build of torch; torch sees no GPU")
    device = "cuda" if cuda else "cpu"
    model = _random_model(arch, in_channels, num_classes, task, embedding_dim).to(device)
    x = torch.from_numpy(kit.bench_input((in_channels, *input_size), batch)).to(device)
    old_threads = torch.get_num_threads()
    if not cuda:
        torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            return median_ms(lambda: model(x), torch.cuda.synchronize if cuda else None)
    finally:
        torch.set_num_threads(old_threads)
