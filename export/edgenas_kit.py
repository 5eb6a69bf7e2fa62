#!/usr/bin/env python3
"""edgenas device kit: check an export's samples and benchmark a model on the device itself.

Standalone: needs only numpy plus onnxruntime (``.onnx``), tensorrt (``.engine``), ai-edge-litert
(``.tflite``), openvino (``.xml``), ncnn (``.ncnn.param``) or executorch (``.pte``, which brings torch);
no edgenas. LiteRT, ExecuTorch, OpenVINO and ncnn run through ``edgenas_engines.py`` beside this file. ``edgenas bench`` and ``edgenas compare`` import this file, so runners, timing statistics
and the bench JSON schema exist once. Usage: ``python edgenas_kit.py check|bench|serve --help``
(``serve``: the benchmark server of ``edgenas_serve.py``, beside this file).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import glob
import hashlib
import importlib
import importlib.util
import json
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np


def _load_sibling(name: str):
    """A kit file (``edgenas_env``, ``edgenas_serve``): from the package, else from beside this file
    (found by path, so ``python -I edgenas_kit.py`` finds it too); None when it is missing."""
    if __package__:
        try:
            return importlib.import_module(f"{__package__}.{name}")
        except ImportError:
            pass
    path = Path(__file__).with_name(f"{name}.py")
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # never for a .py file that exists
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return sys.modules[name]


conditions = _load_sibling("edgenas_env")  # the bench-conditions probe
engines = _load_sibling("edgenas_engines")  # the runners of LiteRT, ExecuTorch, OpenVINO and ncnn

KIT_VERSION = "0.1.0"  # follows edgenas.__version__
SCHEMA = "edgenas.bench/2"  # written; /2 added the "environment" block
READ_SCHEMAS = ("edgenas.bench/1", SCHEMA)  # read

# The runtimes the kit runs: name -> (engine, model suffix, needs a GPU).
RUNTIMES = {
    "onnxruntime-cpu": ("onnxruntime", ".onnx", False),
    "onnxruntime-cpu-int8": ("onnxruntime", ".onnx", False),  # the CPU provider running model.int8.onnx
    "onnxruntime-cuda": ("onnxruntime", ".onnx", True),
    "tensorrt-fp16": ("tensorrt", ".engine", True),
    "tensorrt-int8": ("tensorrt", ".engine", True),
    **(engines.RUNTIMES if engines else {}),  # litert-cpu, litert-int8, executorch-*, openvino-*, ncnn-cpu
}
DEFAULT_WARMUP = 10  # untimed runs before timing
DEFAULT_RUNS = 100  # timed runs
DEFAULT_TOLERANCES = {"max_abs_diff": 1e-3, "min_agreement": 0.999, "min_cosine": 0.999}
TASKS = ("classify", "face")

# Fields of the bench JSON and the types each must have (extra fields are allowed).
_NUM = (int, float)
BENCH_FIELDS: dict[str, type | tuple[type, ...]] = {
    "schema": str,
    "model": str,
    "model_sha256": str,
    "runtime": str,
    "runtime_version": str,
    "device": str,
    "host": str,
    "threads": (int, type(None)),
    "batch": int,
    "input_shape": list,
    "warmup": int,
    "runs": int,
    "p50_ms": _NUM,
    "p90_ms": _NUM,
    "p99_ms": _NUM,
    "mean_ms": _NUM,
    "std_ms": _NUM,
    "throughput": _NUM,
    "samples_ms": list,
    "created": str,
}


class KitError(Exception):
    """Unusable input (file, runtime, option): the kit's CLI prints the message and exits 2."""

    exit_code = 2


class KitMissingDependency(KitError):
    """An optional package (onnxruntime, tensorrt, the CUDA runtime) is not installed."""


class BenchSchemaError(KitError):
    """A bench JSON has the wrong schema, a missing field or a field of the wrong type."""


# -- the machine ---------------------------------------------------------------------------------
def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cpu_name() -> str:
    """The CPU model (x86 ``model name``), else the board (Jetson, Raspberry Pi), else the arch."""
    try:
        lines = Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    for key in ("model name", "Model", "Hardware"):
        for line in lines:
            if line.split(":")[0].strip() == key and ":" in line:
                return line.split(":", 1)[1].strip()
    try:
        return Path("/proc/device-tree/model").read_text(errors="replace").strip("\x00\n ")
    except OSError:
        return platform.processor() or platform.machine() or "unknown CPU"


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _first_line(err: BaseException, limit: int = 200) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:limit]


# -- runners ---------------------------------------------------------------------------------------
class Runner:
    """One model loaded on one runtime. ``runner(x)``: float32 NCHW array in, first output array
    out, host to host (so a call is synchronised and timing it times the whole inference)."""

    runtime: str
    runtime_version: str
    device: str
    threads: int | None  # CPU threads of CPU runtimes; None on GPUs
    model_path: Path
    input_chw: tuple  # (C, H, W) of one input; None for a dynamic dimension
    max_batch: int | None = None  # largest batch one call takes; None: any
    weights_sha256: str | None = None  # SHA-256 of the PyTorch weights it was exported from (ONNX metadata)

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_runtime(runtime: str) -> str:
    if runtime not in RUNTIMES:
        raise KitError(f"unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    return runtime


def default_runtime(model: str | Path) -> str:
    """The runtime a model file's metadata names (LiteRT, ExecuTorch, OpenVINO, ncnn files), else the
    first runtime of its suffix (``.engine``: tensorrt-fp16, else onnxruntime-cpu)."""
    model = Path(model)
    if model.suffix in (".engine", ".plan"):
        return "tensorrt-fp16"
    if engines:
        try:
            recorded = engines.read_metadata(model).get("runtime")
        except engines.EngineError as e:
            raise KitError(str(e)) from None
        if recorded in engines.RUNTIMES and model.name.endswith(engines.RUNTIMES[recorded][1]):
            return recorded
        for name, (_, suffix, _) in engines.RUNTIMES.items():
            if model.name.endswith(suffix):
                return name
    return "onnxruntime-cpu"


def open_runner(model: str | Path, runtime: str | None = None, threads: int | None = None) -> Runner:
    """Load ``model`` on ``runtime`` (default: the one its metadata names, else from the suffix)."""
    model = Path(model)
    runtime = check_runtime(runtime or default_runtime(model))
    if not model.is_file():
        raise KitError(f"{model}: no such file")
    if threads is not None and threads < 1:
        raise KitError(f"threads must be >= 1, got {threads}")
    if engines and runtime in engines.RUNTIMES:
        try:
            return engines.open_runner(model, runtime=runtime, threads=threads or available_cpus(), device=cpu_name())
        except engines.EngineMissing as e:
            raise KitMissingDependency(f"{runtime}: {e}") from None
        except engines.EngineError as e:
            raise KitError(str(e)) from None
    if RUNTIMES[runtime][0] == "onnxruntime":
        if model.suffix in (".engine", ".plan"):
            raise KitError(f"{model} is a TensorRT engine, not an ONNX model: use --runtime tensorrt-fp16")
        return OnnxRuntimeRunner(model, runtime, threads)
    return TensorRTRunner(model, runtime)


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise KitMissingDependency("onnxruntime is not installed: pip install onnxruntime") from None
    return onnxruntime


class OnnxRuntimeRunner(Runner):
    def __init__(self, model: Path, runtime: str, threads: int | None = None):
        ort = _import_onnxruntime()
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # errors only
        opts.inter_op_num_threads = 1
        if not RUNTIMES[runtime][2]:  # a CPU runtime
            self.threads = threads or available_cpus()
            opts.intra_op_num_threads = self.threads
            providers, self.device = ["CPUExecutionProvider"], cpu_name()
        else:
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise KitMissingDependency(
                    "onnxruntime-cuda needs onnxruntime-gpu and a CUDA GPU: pip install onnxruntime-gpu"
                )
            self.threads, providers, self.device = None, ["CUDAExecutionProvider"], gpu_name()
        try:
            self.session = ort.InferenceSession(str(model), opts, providers=providers)
        except Exception as e:  # ORT raises its own classes for bad protobufs, bad graphs, missing ops
            raise KitError(f"{model} is not an ONNX model ONNX Runtime can load: {_first_line(e)}") from None
        if self.session.get_providers()[0] != providers[0]:
            raise KitError(f"{runtime}: ONNX Runtime could not use {providers[0]} (is a CUDA GPU visible?)")
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise KitError(f"{model} must take one NCHW input, it takes {[(i.name, i.shape) for i in inputs]}")
        self.input_name = inputs[0].name
        dims = [d if isinstance(d, int) and d > 0 else None for d in inputs[0].shape]
        self.input_chw, self.max_batch = tuple(dims[1:]), dims[0]
        self.runtime, self.runtime_version, self.model_path = runtime, ort.__version__, model
        self.weights_sha256 = self.session.get_modelmeta().custom_metadata_map.get("weights_sha256")

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(inputs, np.float32)})[0]


class CudaRuntime:
    """The few CUDA runtime calls a TensorRT engine needs, through ctypes (no pycuda, no torch)."""

    H2D, D2H = 1, 2  # cudaMemcpyKind

    def __init__(self):
        self.lib = _load_cudart()
        vp, sz = ctypes.c_void_p, ctypes.c_size_t
        for name, args in {
            "cudaGetDeviceCount": [ctypes.POINTER(ctypes.c_int)],
            "cudaMalloc": [ctypes.POINTER(vp), sz],
            "cudaFree": [vp],
            "cudaMemcpyAsync": [vp, vp, sz, ctypes.c_int, vp],
            "cudaStreamCreate": [ctypes.POINTER(vp)],
            "cudaStreamSynchronize": [vp],
            "cudaStreamDestroy": [vp],
        }.items():
            getattr(self.lib, name).argtypes, getattr(self.lib, name).restype = args, ctypes.c_int
        self.lib.cudaGetErrorString.argtypes, self.lib.cudaGetErrorString.restype = [ctypes.c_int], ctypes.c_char_p
        count = ctypes.c_int(0)
        if self.lib.cudaGetDeviceCount(ctypes.byref(count)) != 0 or count.value < 1:
            raise KitError("TensorRT needs a CUDA GPU and none is visible (cudaGetDeviceCount found none)")

    def call(self, name: str, *args) -> None:
        err = getattr(self.lib, name)(*args)
        if err != 0:
            raise KitError(f"CUDA {name} failed: {self.lib.cudaGetErrorString(err).decode()}")

    def malloc(self, nbytes: int) -> int:
        ptr = ctypes.c_void_p()
        self.call("cudaMalloc", ctypes.byref(ptr), max(nbytes, 1))
        if ptr.value is None:
            raise KitError(f"CUDA cudaMalloc of {nbytes:,} bytes returned no memory")
        return ptr.value

    def stream(self) -> ctypes.c_void_p:
        s = ctypes.c_void_p()
        self.call("cudaStreamCreate", ctypes.byref(s))
        return s


def _load_cudart():
    names = [
        ctypes.util.find_library("cudart"),
        "libcudart.so",
        "libcudart.so.13",
        "libcudart.so.12",
        "libcudart.so.11.0",
    ]
    for entry in sys.path:  # pip wheels (nvidia-cuda-runtime-cu12, nvidia-cuda-runtime cu13)
        names += sorted(glob.glob(os.path.join(entry, "nvidia", "*", "lib", "libcudart.so*")))
    for name in filter(None, names):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise KitMissingDependency(
        "libcudart.so (the CUDA runtime) was not found: install CUDA or pip install nvidia-cuda-runtime-cu12"
    )


def gpu_name() -> str:
    """The CUDA GPU's name from cudaGetDeviceProperties (``name`` is the struct's first field)."""
    try:
        lib = _load_cudart()
        props = ctypes.create_string_buffer(8192)  # larger than cudaDeviceProp in any CUDA version
        fn = getattr(lib, "cudaGetDeviceProperties_v2", None) or lib.cudaGetDeviceProperties
        if fn(props, 0) == 0 and props.value:
            return props.value.decode(errors="replace")
    except (KitError, OSError, AttributeError):
        pass
    try:
        return Path("/proc/device-tree/model").read_text(errors="replace").strip("\x00\n ")  # Jetson
    except OSError:
        return "CUDA GPU"


class TensorRTRunner(Runner):
    """A serialized TensorRT 10 engine: set_input_shape, set_tensor_address, execute_async_v3."""

    def __init__(self, model: Path, runtime: str):
        try:
            import tensorrt as trt
        except ImportError:
            raise KitMissingDependency(
                f"{runtime} needs TensorRT, which is not installed: pip install tensorrt"
            ) from None
        self.trt, self.cuda = trt, CudaRuntime()
        self._logger = trt.Logger(trt.Logger.ERROR)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(model.read_bytes())
        if self.engine is None:
            raise KitError(f"{model} is not a TensorRT engine this TensorRT ({trt.__version__}) and GPU can load")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.inputs = [n for n in names if is_input[n]]
        self.outputs = [n for n in names if not is_input[n]]
        if len(self.inputs) != 1:
            raise KitError(f"{model} must take one NCHW input, it takes {self.inputs}")
        shape = list(self.engine.get_tensor_shape(self.inputs[0]))
        self.input_chw = tuple(d if d > 0 else None for d in shape[1:])
        self.max_batch = shape[0] if shape[0] > 0 else self.engine.get_tensor_profile_shape(self.inputs[0], 0)[2][0]
        self.stream = self.cuda.stream()
        self.buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)
        self.runtime, self.runtime_version, self.model_path = runtime, trt.__version__, model
        self.threads, self.device = None, gpu_name()

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self.buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                self.cuda.call("cudaFree", ptr)
            ptr, size = self.cuda.malloc(nbytes), nbytes
            self.buffers[name] = (ptr, size)
            self.context.set_tensor_address(name, ptr)
        return ptr

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        trt, name = self.trt, self.inputs[0]
        x = np.ascontiguousarray(inputs, dtype=trt.nptype(self.engine.get_tensor_dtype(name)))
        self.context.set_input_shape(name, x.shape)
        self.cuda.call(
            "cudaMemcpyAsync", self._buffer(name, x.nbytes), x.ctypes.data, x.nbytes, self.cuda.H2D, self.stream
        )
        results = {}
        for out in self.outputs:
            dtype = trt.nptype(self.engine.get_tensor_dtype(out))
            results[out] = np.empty(tuple(self.context.get_tensor_shape(out)), dtype=dtype)
            self._buffer(out, results[out].nbytes)
        if not self.context.execute_async_v3(self.stream.value):
            raise KitError(f"TensorRT could not run {self.model_path} on input shape {x.shape}")
        for out, host in results.items():
            self.cuda.call(
                "cudaMemcpyAsync", host.ctypes.data, self.buffers[out][0], host.nbytes, self.cuda.D2H, self.stream
            )
        self.cuda.call("cudaStreamSynchronize", self.stream)
        return results[self.outputs[0]].astype(np.float32, copy=False)

    def close(self) -> None:
        for ptr, _ in self.buffers.values():
            self.cuda.call("cudaFree", ptr)
        self.buffers = {}
        if self.stream:
            self.cuda.call("cudaStreamDestroy", self.stream)
            self.stream = ctypes.c_void_p()  # null: destroyed


def run_batched(runner: Runner, inputs: np.ndarray) -> np.ndarray:
    """All of ``inputs`` through ``runner``, in chunks when the model takes a fixed batch."""
    step = runner.max_batch or len(inputs)
    return np.concatenate([runner(inputs[i : i + step]) for i in range(0, len(inputs), step)])


# -- timing and statistics -------------------------------------------------------------------------
def measure(fn, *, warmup: int = DEFAULT_WARMUP, runs: int = DEFAULT_RUNS, synchronize=None) -> list[float]:
    """Milliseconds of each of ``runs`` calls of ``fn()`` after ``warmup`` untimed ones.
    ``synchronize()`` (e.g. torch.cuda.synchronize) is called inside each timed interval."""
    if warmup < 0 or runs < 1:
        raise KitError(f"need warmup >= 0 and runs >= 1, got warmup {warmup}, runs {runs}")
    sync = synchronize or (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    samples = []
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection inside a timed run is noise, not the model's latency
    try:
        for _ in range(runs):
            t0 = time.perf_counter()
            fn()
            sync()
            samples.append((time.perf_counter() - t0) * 1e3)
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


def latency_stats(samples_ms, batch: int = 1) -> dict:
    """p50/p90/p99 (linear interpolation), mean, std (ddof=1) in ms; throughput in images/s."""
    s = np.asarray(samples_ms, dtype=np.float64)
    if s.ndim != 1 or s.size == 0 or not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError("latency samples must be a non-empty list of finite, non-negative milliseconds")
    p50, p90, p99 = np.percentile(s, [50, 90, 99])
    mean = float(s.mean())
    return {
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "mean_ms": mean,
        "std_ms": float(s.std(ddof=1)) if s.size > 1 else 0.0,
        "throughput": batch * 1000.0 / mean if mean > 0 else math.inf,
    }


def bench_input(input_chw, batch: int, seed: int = 0) -> np.ndarray:
    if batch < 1:
        raise KitError(f"batch must be >= 1, got {batch}")
    if any(d is None for d in input_chw):
        raise KitError(
            f"the model's input shape {tuple(input_chw)} has dynamic dimensions; export it with a fixed C, H, W"
        )
    return np.random.default_rng(seed).standard_normal((batch, *input_chw), dtype=np.float32)


def probe() -> dict:
    """The machine's conditions now (``edgenas_env.snapshot``): taken before and after timing."""
    if conditions is None:
        raise KitError("edgenas_env.py is missing beside edgenas_kit.py: copy the whole export folder to the device")
    return conditions.snapshot()


def measure_with_conditions(fn, warmup: int, runs: int) -> tuple[list[float], dict]:
    """``measure(fn, warmup, runs)`` and the bench JSON's ``environment`` block around it."""
    before = probe()
    samples = measure(fn, warmup=warmup, runs=runs)
    return samples, conditions.environment(before, probe())


def bench_result(
    runner: Runner,
    *,
    batch: int,
    warmup: int,
    samples_ms,
    tool: str = f"edgenas-kit {KIT_VERSION}",
    model_path: str | Path | None = None,
    environment: dict | None = None,
) -> dict:
    """The bench JSON record for samples measured on ``runner`` under ``environment``
    (``measure_with_conditions``; ``None``: every reading unknown)."""
    model_path = Path(model_path or runner.model_path)
    samples = [float(x) for x in samples_ms]
    return {
        "schema": SCHEMA,
        "model": str(model_path),
        "model_sha256": file_sha256(model_path),
        "runtime": runner.runtime,
        "runtime_version": str(runner.runtime_version),
        "device": runner.device,
        "host": platform.node(),
        "threads": runner.threads,
        "batch": batch,
        "input_shape": [batch, *[int(d) for d in runner.input_chw]],
        "warmup": warmup,
        "runs": len(samples),
        **latency_stats(samples, batch),
        "samples_ms": samples,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tool": tool,
        "environment": environment if environment is not None else unknown_environment(),
    }


def unknown_environment() -> dict:
    return dict.fromkeys(conditions.FIELDS if conditions else ())


def bench_runner(
    runner: Runner,
    *,
    batch: int = 1,
    warmup: int = DEFAULT_WARMUP,
    runs: int = DEFAULT_RUNS,
    tool: str = f"edgenas-kit {KIT_VERSION}",
    model_path: str | Path | None = None,
) -> dict:
    """Time ``runner`` on a random input batch and return the bench JSON record."""
    x = bench_input(runner.input_chw, batch)
    samples, environment = measure_with_conditions(lambda: runner(x), warmup, runs)
    return bench_result(
        runner,
        batch=batch,
        warmup=warmup,
        samples_ms=samples,
        tool=tool,
        model_path=model_path,
        environment=environment,
    )


def bench_model(
    model: str | Path,
    *,
    runtime: str | None = None,
    batch: int = 1,
    threads: int | None = None,
    warmup: int = DEFAULT_WARMUP,
    runs: int = DEFAULT_RUNS,
) -> dict:
    """Benchmark an ``.onnx`` or ``.engine`` file; returns the bench JSON record."""
    with open_runner(model, runtime, threads) as runner:
        return bench_runner(runner, batch=batch, warmup=warmup, runs=runs)


# -- the bench JSON --------------------------------------------------------------------------------
def validate_bench(record, source: str = "bench JSON") -> dict:
    """``record`` if it is a bench JSON of this schema; else BenchSchemaError naming the problem."""
    if not isinstance(record, dict):
        raise BenchSchemaError(f"{source}: not a bench JSON object")
    schema = record.get("schema")
    if schema not in READ_SCHEMAS:
        raise BenchSchemaError(
            f"{source}: schema is {schema!r}, expected one of {', '.join(map(repr, READ_SCHEMAS))} "
            "(written by `edgenas bench` or edgenas_kit.py bench)"
        )
    if schema != READ_SCHEMAS[0] and not isinstance(record.get("environment"), dict):
        raise BenchSchemaError(f"{source}: field 'environment' must be an object ({schema}; readings may be null)")
    for field, types in BENCH_FIELDS.items():
        if field not in record:
            raise BenchSchemaError(f"{source}: field {field!r} is missing")
        value = record[field]
        if not isinstance(value, types) or (isinstance(value, bool) and types is not bool):
            raise BenchSchemaError(f"{source}: field {field!r} has the wrong type ({type(value).__name__})")
    if record["batch"] < 1 or record["runs"] < 1 or record["warmup"] < 0:
        raise BenchSchemaError(f"{source}: batch and runs must be >= 1 and warmup >= 0")
    samples = record["samples_ms"]
    if len(samples) != record["runs"] or not all(isinstance(x, _NUM) and not isinstance(x, bool) for x in samples):
        raise BenchSchemaError(f"{source}: samples_ms must hold {record['runs']} numbers (one per run)")
    if not all(isinstance(d, int) and d > 0 for d in record["input_shape"]):
        raise BenchSchemaError(f"{source}: input_shape must be a list of positive ints")
    _check_figures(record, source)
    return record


STATS_RTOL = 1e-9  # recomputing from samples_ms: JSON floats round-trip exactly; this absorbs ulps


def _check_figures(record: dict, source: str) -> None:
    """Latencies are finite and positive and the percentiles are those of samples_ms: a result
    that says otherwise is garbage, and a gate must not pass (or store) it."""
    for field in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "throughput"):
        if not (math.isfinite(record[field]) and record[field] > 0):
            raise BenchSchemaError(f"{source}: field {field!r} is {record[field]!r}, not a positive finite number")
    try:
        stats = latency_stats(record["samples_ms"], record["batch"])
    except ValueError:
        raise BenchSchemaError(f"{source}: samples_ms must be finite, non-negative milliseconds") from None
    for field, value in stats.items():
        if not math.isclose(record[field], value, rel_tol=STATS_RTOL, abs_tol=1e-12):
            raise BenchSchemaError(
                f"{source}: field {field!r} is {record[field]!r} but samples_ms give {value!r}: the file contradicts itself"
            )


def read_bench(path: str | Path) -> dict:
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise KitError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise KitError(f"{path} is not a readable JSON file: {_first_line(e)}") from None
    return validate_bench(record, str(path))


def _umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read it: set, then restore at once
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode ``open()`` gives a new file here (0o666 less the umask); mkstemp's files are 0600."""
    return 0o666 & ~_umask()


def write_atomic(path: str | Path, write) -> None:
    """Call ``write(file)`` on a temp file beside ``path``, fsync, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.chmod(tmp, default_file_mode())  # mkstemp makes 0600; a written file honours the umask like open()
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(path: str | Path, label: str, *, directory: bool = False) -> Path:
    """Refuse now, before anything is measured, a ``path`` that cannot be written (``label`` names
    the flag): a file where a directory is meant or the reverse, a file as a parent, or a parent
    directory in which a probe file cannot be created."""
    path = Path(path)
    if path.exists() and path.is_dir() != directory:
        raise KitError(
            f"{label} {path} is a {'file' if directory else 'directory'}, expected a "
            f"{'directory' if directory else 'file'}"
        )
    existing = path if directory and path.is_dir() else path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise KitError(f"{label} {path} cannot be written: {existing} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".edgenas-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise KitError(f"{label} {path} cannot be written: {e.strerror or e} in {existing}") from None
    return path


def write_bench(path: str | Path, record: dict) -> None:
    validate_bench(record)
    write_atomic(path, lambda f: f.write((json.dumps(record, indent=2) + "\n").encode()))


# -- samples.npz and parity ------------------------------------------------------------------------
@dataclass(frozen=True)
class Samples:
    inputs: np.ndarray  # float32, normalised NCHW
    outputs: np.ndarray  # the PyTorch outputs (logits, or embeddings for face), (N, K)
    task: str  # "classify" | "face"
    weights_sha256: str | None = None  # the PyTorch weights that made ``outputs`` (None: not recorded)


def save_samples(
    path: str | Path,
    *,
    inputs: np.ndarray,
    outputs: np.ndarray,
    task: str = "classify",
    weights_sha256: str | None = None,
) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    arrays = {
        "inputs": np.asarray(inputs, np.float32),
        "outputs": np.asarray(outputs, np.float32),
        "task": np.array(task),
    }
    if weights_sha256:
        arrays["weights_sha256"] = np.array(weights_sha256)
    # numpy's stub lets ** reach savez's allow_pickle flag; these names never are that
    write_atomic(path, lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]


def _numbers(path: Path, *, name: str, a: np.ndarray, ndim: int, shape: str) -> np.ndarray:
    if a.dtype.kind not in "fiu":
        raise KitError(f"{path}: {name} must be real numbers (float32), got dtype {a.dtype}")
    if a.ndim != ndim or 0 in a.shape:
        raise KitError(f"{path}: {name} must be a non-empty {shape} array, got shape {a.shape}")
    return a.astype(np.float32)


def load_samples(path: str | Path) -> Samples:
    """``samples.npz``: float NCHW ``inputs``, (N, K) ``outputs``, ``task`` (and ``weights_sha256``).
    Anything else (a wrong shape or dtype, NaN inputs) is a ``KitError`` (exit 2)."""
    path = Path(path)
    if not path.is_file():
        raise KitError(f"{path}: no such file (the export directory should hold samples.npz)")
    try:
        with np.load(path, allow_pickle=False) as z:
            inputs, outputs = z["inputs"], z["outputs"]
            task = str(z["task"].reshape(-1)[0]) if "task" in z.files else "classify"
            weights = str(z["weights_sha256"].reshape(-1)[0]) if "weights_sha256" in z.files else None
    except (OSError, ValueError, KeyError, IndexError, EOFError) as e:
        raise KitError(f"{path} is not a samples file with inputs, outputs and task: {_first_line(e)}") from None
    if task not in TASKS:
        raise KitError(f"{path}: unknown task {task!r} (expected one of {TASKS})")
    inputs = _numbers(path, name="inputs", a=inputs, ndim=4, shape="(N, C, H, W)")
    outputs = _numbers(path, name="outputs", a=outputs, ndim=2, shape="(N, K)")
    if len(inputs) != len(outputs):
        raise KitError(f"{path}: inputs and outputs must hold as many samples, got {inputs.shape} and {outputs.shape}")
    if not np.isfinite(inputs).all():
        raise KitError(f"{path}: inputs hold NaN or infinite values")
    return Samples(inputs, outputs, task, weights)


def parity_report(
    expected: np.ndarray,
    *,
    actual: np.ndarray,
    task: str = "classify",
    max_abs_diff: float = DEFAULT_TOLERANCES["max_abs_diff"],
    min_agreement: float = DEFAULT_TOLERANCES["min_agreement"],
    min_cosine: float = DEFAULT_TOLERANCES["min_cosine"],
) -> dict:
    """Compare a runtime's outputs with the reference: logits by max/mean |diff| and top-1
    agreement (classify), embeddings by cosine similarity (face). ``passed`` and ``failures``."""
    for name, value in (("max_abs_diff", max_abs_diff), ("min_agreement", min_agreement), ("min_cosine", min_cosine)):
        if math.isnan(value):
            raise ValueError(f"tolerance {name} is NaN: every comparison with it would pass")
    for name, value in (("min_agreement", min_agreement), ("min_cosine", min_cosine)):
        if value > 1:
            raise ValueError(f"tolerance {name} is {value:g}, above 1: no model could ever pass it")
    expected, actual = np.asarray(expected, np.float64), np.asarray(actual, np.float64)
    report: dict = {"task": task, "samples": int(len(expected)), "passed": False, "failures": []}
    if expected.shape != actual.shape:
        report["failures"].append(f"output shape {actual.shape} differs from the reference {expected.shape}")
        return report
    if not np.all(np.isfinite(expected)):
        report["failures"].append("the reference outputs (samples.npz) hold NaN or infinite values")
        return report
    if not np.all(np.isfinite(actual)):
        report["failures"].append("the outputs hold NaN or infinite values")
        return report
    diff = np.abs(actual - expected).reshape(len(expected), -1)
    report.update(max_abs_diff=float(diff.max()), mean_abs_diff=float(diff.mean()))
    fails = report["failures"]
    if task == "classify":
        agreement = float(np.mean(actual.argmax(axis=1) == expected.argmax(axis=1)))
        report.update(
            top1_agreement=agreement, tolerances={"max_abs_diff": max_abs_diff, "min_agreement": min_agreement}
        )
        if report["max_abs_diff"] > max_abs_diff:
            fails.append(f"max |diff| {report['max_abs_diff']:.3g} > {max_abs_diff:g}")
        if agreement < min_agreement:
            fails.append(f"top-1 agreement {agreement:.2%} < {min_agreement:.2%}")
    elif task == "face":
        a, e = actual.reshape(len(actual), -1), expected.reshape(len(expected), -1)
        cos = (a * e).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(e, axis=1), 1e-12)
        report.update(min_cosine=float(cos.min()), mean_cosine=float(cos.mean()), tolerances={"min_cosine": min_cosine})
        if cos.min() < min_cosine:
            fails.append(f"min cosine similarity {cos.min():.6f} < {min_cosine:g}")
    else:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    report["passed"] = not fails
    return report


def _check_input_shape(samples: Samples, runner: Runner, source: Path) -> None:
    want = tuple(runner.input_chw)
    got = tuple(samples.inputs.shape[1:])
    if len(want) != 3 or any(w is not None and w != g for w, g in zip(want, got)):
        shown = "x".join("?" if w is None else str(w) for w in want)
        raise KitError(
            f"{source}: inputs are {'x'.join(map(str, got))} (C x H x W), the model {runner.model_path} "
            f"takes {shown}: these samples belong to another model"
        )


def provenance_failures(export_dir: Path, runner: Runner, samples: Samples) -> list[str]:
    """Why the files of an export were not all made from the same weights (empty when they were).

    Compares the SHA-256 of the PyTorch weights recorded in the model (ONNX metadata),
    samples.npz and parity.json, and, where the export sits in its run directory
    (``RUN_DIR/export`` beside ``run.json``), the run's current ``model.pt``."""
    recorded = {LAYOUT["samples"]: samples.weights_sha256, runner.model_path.name: runner.weights_sha256}
    try:
        recorded[LAYOUT["parity"]] = json.loads((export_dir / LAYOUT["parity"]).read_text()).get("weights_sha256")
    except (OSError, ValueError, AttributeError):
        pass  # no (or no readable) parity.json: nothing recorded there
    run_dir = export_dir.resolve().parent
    if export_dir.resolve().name == "export" and (run_dir / "run.json").is_file() and (run_dir / "model.pt").is_file():
        recorded[str(run_dir / "model.pt")] = file_sha256(run_dir / "model.pt")
    known = {name: h for name, h in recorded.items() if isinstance(h, str) and h}
    if len(set(known.values())) <= 1:
        return []
    listed = ", ".join(f"{name} {h[:12]}" for name, h in known.items())
    return [
        f"stale export: its files come from different weights (SHA-256 {listed}); "
        f"run `edgenas export` on the run directory again"
    ]


# The file ``check`` runs when no --model is given, per runtime (others: model.onnx).
DEFAULT_MODELS = {
    "onnxruntime-cpu-int8": "model.int8.onnx",
    "tensorrt-fp16": "model.engine",
    "tensorrt-int8": "model.engine",
    "litert-cpu": "model.tflite",
    "litert-int8": "model.int8.tflite",
    "executorch-cpu": "model.pte",
    "executorch-int8": "model.int8.pte",
    "openvino-cpu": "model.xml",
    "openvino-int8": "model.int8.xml",
    "ncnn-cpu": "model.ncnn.param",
}
# The export folder's own files: the kit's copy of edgenas/deploy/export/layout.py (tests/test_layers.py compares them).
LAYOUT = {"onnx": "model.onnx", "samples": "samples.npz", "parity": "parity.json"}


def recorded_tolerances(export_dir: str | Path, model: str | Path) -> dict:
    """The tolerances ``parity.json`` records for ``model``'s file (its format's ``kit_tolerances``), else {}.

    An INT8 file is judged at export by accuracy on the whole test split; its check here asks the
    device to agree with PyTorch on the samples as well as the export machine's INT8 kernels did."""
    try:
        formats = json.loads((Path(export_dir) / LAYOUT["parity"]).read_text()).get("formats", {})
        entries = [e for e in formats.values() if isinstance(e, dict) and e.get("file") == Path(model).name]
        recorded = entries[0].get("kit_tolerances") if entries else None
        return (
            {k: float(v) for k, v in recorded.items() if k in DEFAULT_TOLERANCES} if isinstance(recorded, dict) else {}
        )
    except (OSError, ValueError, AttributeError, TypeError):
        return {}  # no or a damaged parity.json: the defaults (or the flags) apply


def check_export(
    export_dir: str | Path,
    *,
    model: str | Path | None = None,
    runtime: str | None = None,
    threads: int | None = None,
    **tolerances,
) -> dict:
    """Run ``samples.npz``'s inputs through the exported model and compare with its outputs; a
    model, samples or parity.json made from other weights than the rest fails too (``provenance_failures``).

    Tolerances: those given (not None), else those parity.json records for the file, else the defaults."""
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise KitError(f"{export_dir}: no such export directory")
    if model is None:
        model = export_dir / DEFAULT_MODELS.get(check_runtime(runtime) if runtime else "", LAYOUT["onnx"])
    recorded = recorded_tolerances(export_dir, model)
    given = {k: v for k, v in tolerances.items() if v is not None}
    samples = load_samples(export_dir / LAYOUT["samples"])
    with open_runner(model, runtime, threads) as runner:
        _check_input_shape(samples, runner, export_dir / LAYOUT["samples"])
        report = parity_report(
            samples.outputs,
            actual=run_batched(runner, samples.inputs),
            task=samples.task,
            **{**DEFAULT_TOLERANCES, **recorded, **given},
        )
        report.update(
            model=str(model),
            runtime=runner.runtime,
            runtime_version=str(runner.runtime_version),
            device=runner.device,
            threads=runner.threads,
            tolerances_from="parity.json" if set(recorded) - set(given) else "defaults",
        )
        stale = provenance_failures(export_dir, runner, samples)
    if stale:
        report.update(passed=False, failures=[*stale, *report["failures"]])
    return report


def format_check(report: dict) -> str:
    head = (
        f"check {report['model']} on {report['runtime']} {report['runtime_version']} ({report['device']}): "
        f"{report['samples']} samples, task {report['task']}"
    )
    lines = [head]
    if "max_abs_diff" in report:
        figures = f"  max |diff| {report['max_abs_diff']:.3g}  mean |diff| {report['mean_abs_diff']:.3g}"
        if "top1_agreement" in report:
            figures += f"  top-1 agreement {report['top1_agreement']:.2%}"
        if "min_cosine" in report:
            figures += f"  cosine min {report['min_cosine']:.6f} mean {report['mean_cosine']:.6f}"
        lines.append(figures)
    if report.get("tolerances_from") == "parity.json":
        lines.append(f"  tolerances from parity.json: {report['tolerances']}")
    lines.append("PASS" if report["passed"] else "FAIL: " + "; ".join(report["failures"]))
    return "\n".join(lines)


def format_bench(r: dict) -> str:
    threads = (f", {r['threads']} thread" + ("s" if r["threads"] != 1 else "")) if r.get("threads") else ""
    return (
        f"{r['model']}  {r['runtime']} {r['runtime_version']} on {r['device']}{threads}, "
        f"input {'x'.join(map(str, r['input_shape']))}\n"
        f"  p50 {r['p50_ms']:.3f} ms  p90 {r['p90_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  "
        f"mean {r['mean_ms']:.3f} ± {r['std_ms']:.3f} ms  throughput {r['throughput']:.1f} images/s  "
        f"({r['runs']} runs after {r['warmup']} warm-up)"
        + (f"\n  conditions: {conditions.describe(r['environment'])}" if conditions and r.get("environment") else "")
    )


# -- command line ----------------------------------------------------------------------------------
def parse_fraction(text: str) -> float:
    """``"5%"`` or ``"0.05"`` -> 0.05; ``"inf"`` disables a tolerance."""
    text = str(text).strip()
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a fraction: write 5% or 0.05") from None
    if math.isnan(value) or value < 0:
        raise ValueError(f"{text!r} must be >= 0")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _tolerance(text: str) -> float:
    """A non-negative number (``inf`` turns a check off); NaN would make every check pass."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if math.isnan(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number >= 0")
    return value


def _fraction(text: str) -> float:
    try:
        return parse_fraction(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _agreement(text: str) -> float:
    """A share of the samples: 0 to 100 % (above it no model could pass: a usage error, not a FAIL)."""
    value = _fraction(text)
    if value > 1:
        raise argparse.ArgumentTypeError(
            f"{text!r} is above 100%: an agreement is a share of the samples (write e.g. 99.9% or 0.999)"
        )
    return value


def _cosine(text: str) -> float:
    """A cosine similarity bound: at most 1 (no embedding is closer than identical)."""
    value = _tolerance(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text!r} is above 1, the cosine of identical embeddings")
    return value


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="edgenas_kit.py", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    c = sub.add_parser("check", help="compare the model's outputs on samples.npz with PyTorch's; exit 1 on mismatch")
    c.add_argument("export_dir")
    c.add_argument(
        "--model",
        help="model file (default EXPORT_DIR/model.onnx; model.int8.onnx for onnxruntime-cpu-int8, "
        "model.engine for TensorRT)",
    )
    c.add_argument("--runtime", help=f"one of {', '.join(RUNTIMES)} (default from the model suffix)")
    c.add_argument("--threads", type=int, help="CPU threads (default: all available)")
    c.add_argument("--max-abs-diff", type=_tolerance, help="default: parity.json's for the file, else 1e-3")
    c.add_argument(
        "--min-agreement",
        type=_agreement,
        help="e.g. 99.9%% or 0.999 (default: parity.json's for the file, else 99.9%%)",
    )
    c.add_argument("--min-cosine", type=_cosine, help="default: parity.json's for the file, else 0.999")
    b = sub.add_parser("bench", help="time the model and write the bench JSON")
    b.add_argument("model")
    b.add_argument("--runtime", help=f"one of {', '.join(RUNTIMES)} (default from the model suffix)")
    b.add_argument("--batch", type=int, default=1)
    b.add_argument("--threads", type=int, help="CPU threads (default: all available)")
    b.add_argument("--warmup", type=int, default=DEFAULT_WARMUP)
    b.add_argument("--runs", type=int, default=DEFAULT_RUNS)
    b.add_argument("--json", dest="json_out", help="write the bench JSON here")
    serve = _load_sibling("edgenas_serve")
    if serve is not None:
        s = sub.add_parser(
            "serve", help="time models sent over HTTP by edgenas (a search's latency budget, bench, compare)"
        )
        serve.add_arguments(s, sys.modules[__name__])
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "check":
            report = check_export(
                args.export_dir,
                model=args.model,
                runtime=args.runtime,
                threads=args.threads,
                max_abs_diff=args.max_abs_diff,
                min_agreement=args.min_agreement,
                min_cosine=args.min_cosine,
            )
            print(format_check(report))
            return 0 if report["passed"] else 1
        if args.command == "serve":
            return _load_sibling("edgenas_serve").serve(args, sys.modules[__name__])
        if args.json_out:
            check_writable(args.json_out, "--json")
        result = bench_model(
            args.model, runtime=args.runtime, batch=args.batch, threads=args.threads, warmup=args.warmup, runs=args.runs
        )
        print(format_bench(result))
        if args.json_out:
            write_bench(args.json_out, result)
            print(f"wrote {args.json_out}")
        return 0
    except KitError as e:
        print(f"edgenas_kit.py: error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
