"""Benchmark a model (``.onnx``, ``.engine`` or a run directory) on a runtime; write the bench JSON.

Runners, timing statistics and the JSON schema live in the device kit (``export/edgenas_kit.py``),
so ``edgenas bench`` and the kit on a device write the same file; this adds the runtime table,
the PyTorch runtimes and run directories.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgenas import __version__
from edgenas.device_kit import edgenas_kit as kit
from edgenas.errors import MissingDependency, UserInputError

TOOL = f"edgenas {__version__}"
DEFAULT_WARMUP = kit.DEFAULT_WARMUP
DEFAULT_RUNS = kit.DEFAULT_RUNS


@dataclass(frozen=True)
class Runtime:
    name: str
    engine: str  # "onnxruntime" | "tensorrt" | "torch": who runs the model
    suffix: str  # the model file it runs (torch: a run directory's model.pt)
    needs_gpu: bool
    install: str  # how to get the engine


RUNTIMES = {r.name: r for r in (
    Runtime("onnxruntime-cpu", "onnxruntime", ".onnx", False, "pip install onnxruntime"),
    Runtime("onnxruntime-cuda", "onnxruntime", ".onnx", True, "pip install onnxruntime-gpu"),
    Runtime("tensorrt-fp16", "tensorrt", ".engine", True, "pip install tensorrt"),
    Runtime("tensorrt-int8", "tensorrt", ".engine", True, "pip install tensorrt"),
    Runtime("torch-cpu", "torch", ".pt", False, "pip install torch"),
    Runtime("torch-cuda", "torch", ".pt", True, "pip install torch (a CUDA build)"),
)}


@contextmanager
def kit_errors():
    """The device kit's exceptions as edgenas errors (exit code 2, one line)."""
    try:
        yield
    except kit.KitMissingDependency as e:
        raise MissingDependency(str(e)) from None
    except kit.KitError as e:
        raise UserInputError(str(e)) from None


def resolve(model: str | Path, runtime: str | None = None) -> tuple[Path, str]:
    """The file (or run directory, for torch runtimes) that ``runtime`` runs, and the runtime."""
    path = Path(model)
    if not path.exists():
        raise UserInputError(f"{path}: no such model file or run directory")
    runtime = runtime or kit.default_runtime(path)
    if runtime not in RUNTIMES:
        raise UserInputError(f"unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    rt = RUNTIMES[runtime]
    if rt.engine == "torch":
        if not path.is_dir():
            raise UserInputError(f"{runtime} benchmarks a run directory (arch.json, model.pt), not the file {path}")
        return path, runtime
    if path.is_dir():
        target = path / "export" / f"model{rt.suffix}"
        if not target.is_file():
            hint = f"run `edgenas export {path}` first" + ("" if rt.engine == "tensorrt" else ", or use --runtime torch-cpu")
            raise UserInputError(f"{path} has no export/{target.name}: {hint}")
        return target, runtime
    return path, runtime


class TorchRunner(kit.Runner):
    """A run directory's trained network in PyTorch, behind the kit's runner interface."""

    def __init__(self, run_dir: Path, runtime: str, threads: int | None = None):
        try:
            import torch
        except ImportError:
            raise MissingDependency(f"{runtime} needs PyTorch: {RUNTIMES[runtime].install}") from None
        from edgenas.runs import RunDir

        self.torch, self.runtime, self.runtime_version = torch, runtime, torch.__version__
        self._old_threads = None
        if runtime == "torch-cuda":
            if not torch.cuda.is_available():
                raise UserInputError("torch-cuda needs a CUDA GPU and torch sees none: use --runtime torch-cpu")
            self.dev, self.threads, self.device = "cuda", None, torch.cuda.get_device_name()
        else:
            if threads is not None and threads < 1:
                raise UserInputError(f"threads must be >= 1, got {threads}")
            self.dev, self.threads, self.device = "cpu", threads or kit.available_cpus(), kit.cpu_name()
        run = RunDir.open(run_dir)
        self.model = run.load_model(self.dev)
        shape = run.data_shape
        self.input_chw = (int(shape["in_channels"]), *(int(s) for s in shape["input_size"]))
        self.model_path = run.path / RunDir.WEIGHTS
        if self.threads:  # restored by close(); nested runners close in reverse order
            self._old_threads = torch.get_num_threads()
            torch.set_num_threads(self.threads)

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            x = self.torch.from_numpy(np.ascontiguousarray(inputs, np.float32)).to(self.dev)
            return self.model(x).cpu().numpy()  # .cpu() waits for the GPU: the call is synchronised

    def close(self) -> None:
        if self._old_threads:
            self.torch.set_num_threads(self._old_threads)
            self._old_threads = None


def open_runner(model: str | Path, runtime: str | None = None, threads: int | None = None) -> kit.Runner:
    """A runner for ``model`` (``.onnx``, ``.engine`` or run directory); use it as a context manager."""
    path, runtime = resolve(model, runtime)
    if RUNTIMES[runtime].engine == "torch":
        return TorchRunner(path, runtime, threads)
    with kit_errors():
        return kit.open_runner(path, runtime, threads)


def bench(model: str | Path, runtime: str | None = None, batch: int = 1, threads: int | None = None,
          warmup: int = DEFAULT_WARMUP, runs: int = DEFAULT_RUNS) -> dict:
    """Time ``model`` on ``runtime`` (default: from the model) and return the bench JSON record."""
    with open_runner(model, runtime, threads) as runner, kit_errors():
        return kit.bench_runner(runner, batch, warmup, runs, tool=TOOL)


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
