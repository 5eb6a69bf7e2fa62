"""Benchmark a model (``.onnx``, ``.engine`` or a run directory) on a runtime; write the bench JSON.

Runners, timing statistics and the JSON schema live in the device kit (``export/edgenas_kit.py``),
so ``edgenas bench`` and the kit on a device write the same file; this adds the PyTorch runtimes
and run directories.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgenas.config.runtimes import KIT_RUNTIMES, RUNTIMES
from edgenas.deploy.export import layout
from edgenas.deploy.export.formats import file_for_runtime
from edgenas.device_kit import edgenas_engines as engines
from edgenas.device_kit import edgenas_kit as kit
from edgenas.errors import ParamError, UserInputError
from edgenas.run.loading import load_run_model
from edgenas.run.rundir import RunDir
from edgenas.runtime.backend import backend_of
from edgenas.runtime.device_client import time_on_device
from edgenas.runtime.onnx import read_metadata
from edgenas.runtime.runners import TorchRunner, kit_errors
from edgenas.version import __version__

TOOL = f"edgenas {__version__}"
DEFAULT_WARMUP = kit.DEFAULT_WARMUP
DEFAULT_RUNS = kit.DEFAULT_RUNS


def resolve(model: str | Path, runtime: str | None = None) -> tuple[Path, str]:
    """The file (or run directory, for torch runtimes) that ``runtime`` runs, and the runtime."""
    path = Path(model)
    if not path.exists():
        raise UserInputError(f"{path}: no such model file or run directory")
    runtime = runtime or kit.default_runtime(path)
    if runtime not in RUNTIMES:
        raise ParamError("runtime", runtime, f"unknown runtime; choose one of {', '.join(RUNTIMES)}")
    rt = RUNTIMES[runtime]
    if rt.engine == "torch":
        if not path.is_dir():
            raise UserInputError(f"{runtime} benchmarks a run directory (arch.json, model.pt), not the file {path}")
        return path, runtime
    if path.is_dir():
        target = layout.export_dir(path) / file_for_runtime(runtime)  # onnxruntime-cpu-int8: model.int8.onnx
        if not target.is_file():
            hint = f"run `edgenas export {path}` first" + (
                "" if rt.engine == "tensorrt" else ", or use --runtime torch-cpu"
            )
            raise UserInputError(f"{path} has no {layout.EXPORT_DIR}/{target.name}: {hint}")
        return target, runtime
    return path, runtime


def _recorded_weights(target: Path) -> dict[str, str]:
    """The weights hashes an export records: the model's metadata (ONNX's, or the file beside a LiteRT,
    ExecuTorch, OpenVINO or ncnn model) and ``parity.json``."""
    recorded = {}
    if target.suffix == ".onnx":
        try:
            recorded[target.name] = read_metadata(target).get("weights_sha256")
        except Exception:  # not readable as ONNX: opening the runner says so, in one line
            pass
    else:
        try:
            recorded[target.name] = engines.read_metadata(target).get("weights_sha256")
        except engines.EngineError:  # damaged: opening the runner says so, in one line
            pass
    try:
        recorded[layout.PARITY] = json.loads((target.parent / layout.PARITY).read_text()).get("weights_sha256")
    except (OSError, ValueError, AttributeError):
        pass
    return {name: h for name, h in recorded.items() if isinstance(h, str) and h}


def stale_export(model: str | Path, runtime: str | None = None) -> str | None:
    """A one-line warning when ``model`` (a run directory, or a file in its ``export/``) resolves to an
    export made from other weights than the run's ``model.pt`` now (e.g. after ``edgenas train``)."""
    target, runtime = resolve(model, runtime)
    run_dir = target.parent.parent
    weights = run_dir / RunDir.WEIGHTS
    if RUNTIMES[runtime].engine == "torch" or target.parent.name != layout.EXPORT_DIR or not weights.is_file():
        return None
    current = kit.file_sha256(weights)
    stale = [name for name, h in _recorded_weights(target).items() if h != current]
    if not stale:
        return None
    return (
        f"{target} is stale: {' and '.join(stale)} record other weights than {weights} (retrained since the "
        f"export?); these figures are of the old network: run `edgenas export {run_dir}` again"
    )


def open_runner(model: str | Path, runtime: str | None = None, threads: int | None = None) -> kit.Runner:
    """A runner for ``model`` (``.onnx``, ``.engine`` or run directory); use it as a context manager."""
    path, runtime = resolve(model, runtime)
    if RUNTIMES[runtime].engine != "torch":
        return backend_of(runtime).open(path, threads=threads)
    run = RunDir.open(path)
    device = "cuda" if runtime == "torch-cuda" else "cpu"
    if device == "cuda":
        TorchRunner.check_cuda(runtime)
    return TorchRunner(
        load_run_model(run, device),
        runtime=runtime,
        input_chw=run.meta.data.input_chw,
        model_path=run.path / RunDir.WEIGHTS,
        threads=threads,
    )


def bench(
    model: str | Path,
    *,
    runtime: str | None = None,
    batch: int = 1,
    threads: int | None = None,
    warmup: int = DEFAULT_WARMUP,
    runs: int = DEFAULT_RUNS,
) -> dict:
    """Time ``model`` on ``runtime`` (default: from the model) and return the bench JSON record."""
    with open_runner(model, runtime, threads) as runner, kit_errors():
        return kit.bench_runner(runner, batch=batch, warmup=warmup, runs=runs, tool=TOOL)


def device_model(model: str | Path, runtime: str | None = None) -> tuple[Path, str]:
    """The file a device server times for ``model`` (a file, or a run directory's export) and the runtime:
    ONNX for ONNX Runtime and TensorRT (the device builds its own engine, so an ``.engine`` is refused),
    the exported file for LiteRT, ExecuTorch, OpenVINO and ncnn (sent with the files beside it)."""
    path, runtime = Path(model), runtime or "onnxruntime-cpu"
    if runtime not in KIT_RUNTIMES:
        raise ParamError(
            "runtime",
            runtime,
            f"a device server runs what the device kit runs; choose one of {', '.join(KIT_RUNTIMES)}",
        )
    onnx = RUNTIMES[runtime].engine in ("onnxruntime", "tensorrt")
    if path.is_dir():
        name = layout.ONNX if onnx else file_for_runtime(runtime)
        path = layout.export_dir(path) / name
        if not path.is_file():
            raise UserInputError(f"{model} has no {layout.EXPORT_DIR}/{name}: run `edgenas export {model}` first")
    elif not path.is_file():
        raise UserInputError(f"{path}: no such model file or run directory")
    elif onnx and path.suffix != ".onnx":
        raise UserInputError(
            f"{path}: --device sends an ONNX model (the device builds its own TensorRT engine); "
            "give a .onnx file or a run directory"
        )
    elif not onnx and not path.name.endswith(RUNTIMES[runtime].suffix):
        raise UserInputError(f"{path}: {runtime} runs {RUNTIMES[runtime].suffix} files; give one or a run directory")
    return path, runtime


def bench_on_device(
    model: str | Path,
    *,
    url: str,
    token: str,
    runtime: str | None = None,
    batch: int = 1,
    threads: int | None = None,
    warmup: int = DEFAULT_WARMUP,
    runs: int = DEFAULT_RUNS,
) -> dict:
    """``bench`` on the device server at ``url`` (``edgenas_kit.py serve``): its bench JSON record."""
    path, runtime = device_model(model, runtime)
    result = time_on_device(
        url, model_path=path, token=token, runtime=runtime, threads=threads, batch=batch, warmup=warmup, runs=runs
    )
    return read_device_bench(result, url) | {"model": str(model if Path(model).is_file() else path)}


def read_device_bench(record: object, url: str) -> dict:
    """A device's answer, validated as a bench JSON (a server of another version is named)."""
    with kit_errors():
        return kit.validate_bench(record, f"the answer of {url}")


def write_bench(path: str | Path, result: dict) -> None:
    """Write a bench JSON atomically (temp file, then rename)."""
    with kit_errors():
        kit.write_bench(path, result)


def check_writable(path: str | Path, label: str, *, directory: bool = False) -> Path:
    """Fail before measuring when ``path`` (the flag ``label``) cannot be written: exit code 2."""
    with kit_errors():
        return kit.check_writable(path, label, directory=directory)


def read_bench(path: str | Path) -> dict:
    """A bench JSON from ``edgenas bench`` or the device kit, validated against the schema."""
    with kit_errors():
        return kit.read_bench(path)


format_bench = kit.format_bench
