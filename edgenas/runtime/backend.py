"""Every runtime as one plug-in behind ``Backend``: convert a module to its artifact, open and run it, its version.

Each engine's module (``runtime/onnxruntime.py``, ``tensorrt.py``, ``torch.py``, ...) defines its
backends from the plain-data table ``config.runtimes.RUNTIMES`` and never imports this module;
this module gathers them in ``BACKENDS``. Adding a runtime: a row in ``RUNTIMES``, its engine's
module, and a line in ``_ENGINE_BACKENDS`` below.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from edgenas.config.runtimes import RUNTIMES
from edgenas.device_kit import edgenas_kit as kit
from edgenas.errors import MissingDependency, ParamError
from edgenas.runtime import (
    executorch,
    litert,
    ncnn,
    onnxruntime,
    openvino,
    tensorrt,
    tflm,
)
from edgenas.runtime import torch as torch_engine
from edgenas.runtime.device_client import upload_body


class Backend(Protocol):
    # read-only facts (properties: the backends are frozen dataclasses, a settable attribute would not match)
    @property
    def name(self) -> str: ...  # the runtime name users write: "onnxruntime-cpu", "tensorrt-int8", ...
    @property
    def engine(self) -> str: ...  # the package family: "onnxruntime", "tensorrt", "torch", ...
    @property
    def precision(self) -> str: ...  # "fp32" | "fp16" | "int8"
    @property
    def suffix(self) -> str: ...  # the artifact's file suffix
    @property
    def needs_gpu(self) -> bool: ...
    @property
    def install(self) -> str: ...  # the one pip command that makes it available

    def available(self) -> None:
        """Raise ``MissingDependency`` (one line naming ``install``) when this machine cannot run it."""

    def version(self) -> str:
        """The engine package's version."""

    def convert(
        self, model, *, out: Path, input_chw: tuple[int, int, int], calibration: np.ndarray | None = None
    ) -> Path:
        """An eval-mode CPU ``nn.Module`` as the artifact at ``out`` (INT8: quantised with ``calibration``,
        NCHW float32 images; None: random ones); returns the main file."""

    def open(self, path: Path, *, threads: int | None = None) -> kit.Runner:
        """A device-kit Runner: ``__call__(NCHW float32 array) -> array``, ``close()``, and its
        ``runtime``, ``runtime_version``, ``device``, ``threads``."""


# each engine module's backends, named one by one and typed by the protocol: mypy checks every implementation
_ENGINE_BACKENDS: tuple[Sequence[Backend], ...] = (
    onnxruntime.BACKENDS,
    tensorrt.BACKENDS,
    torch_engine.BACKENDS,
    litert.BACKENDS,
    executorch.BACKENDS,
    openvino.BACKENDS,
    ncnn.BACKENDS,
    tflm.BACKENDS,
)


def _gather() -> dict[str, Backend]:
    found: dict[str, Backend] = {}
    for backends in _ENGINE_BACKENDS:
        for backend in backends:
            if backend.name in found:
                raise RuntimeError(f"runtime {backend.name} is defined twice ({type(backend).__module__})")
            found[backend.name] = backend
    missing = set(RUNTIMES) - set(found)
    if missing:  # every runtime a profile may name has a plug-in
        raise RuntimeError(f"runtimes without a backend: {', '.join(sorted(missing))}")
    return {name: found[name] for name in RUNTIMES}  # in the table's order


BACKENDS: dict[str, Backend] = _gather()


def backend_of(runtime: str) -> Backend:
    """The plug-in of ``runtime``; an unknown name is a ``ParamError`` naming the allowed ones."""
    try:
        return BACKENDS[runtime]
    except (KeyError, TypeError):
        raise ParamError("runtime", runtime, f"choose one of {', '.join(BACKENDS)}") from None


def check_available(runtime: str) -> Backend:
    """``runtime``'s plug-in when this machine can run it; else ``ParamError`` (unknown) or ``MissingDependency``."""
    backend = backend_of(runtime)
    backend.available()
    return backend


def is_available(runtime: str) -> bool:
    try:
        check_available(runtime)
    except MissingDependency:
        return False
    return True


@contextlib.contextmanager
def module_runner(
    model,
    *,
    runtime: str,
    input_chw: tuple[int, int, int],
    threads: int = 1,
    batch: int = 1,
    calibration: np.ndarray | None = None,
) -> Iterator[kit.Runner]:
    """``model`` converted for ``runtime`` in a temporary folder and opened there (closed after the block).

    PyTorch runs the module itself (no artifact); a TensorRT engine is tuned for ``batch``."""
    backend = check_available(runtime)
    if isinstance(backend, torch_engine.TorchBackend):
        with backend.wrap(model, input_chw=input_chw, model_path=Path("<module>"), threads=threads) as runner:
            yield runner
        return
    with tempfile.TemporaryDirectory(prefix="edgenas-runtime-") as tmp:
        path = convert_into(
            model, runtime=runtime, out=Path(tmp) / "model", input_chw=input_chw, batch=batch, calibration=calibration
        )
        with backend.open(path, threads=threads) as runner:
            yield runner


def convert_into(
    model,
    *,
    runtime: str,
    out: Path,
    input_chw: tuple[int, int, int],
    batch: int = 1,
    calibration: np.ndarray | None = None,
) -> Path:
    """``model`` converted for ``runtime`` as ``module_runner`` converts it, kept at ``out`` + the runtime's suffix
    (to be opened with ``check_available(runtime).open`` as often as needed); the artifact's main file.
    PyTorch runs modules, not artifacts: ``ParamError``."""
    backend = check_available(runtime)
    if isinstance(backend, torch_engine.TorchBackend):
        raise ParamError("runtime", runtime, "PyTorch runs the module itself: there is no artifact to convert")
    options = {"batch": batch} if isinstance(backend, tensorrt.TensorRTBackend) else {}
    return backend.convert(
        model, out=out.with_name(out.name + backend.suffix), input_chw=input_chw, calibration=calibration, **options
    )


def device_graph(
    model, *, runtime: str, input_chw: tuple[int, int, int], calibration: np.ndarray | None = None
) -> bytes:
    """What a device server (``edgenas_kit.py serve``) is sent to time ``model`` on ``runtime``: the ONNX
    graph the runtime runs, or builds its own engine from (TensorRT); for the kit's engine runtimes (LiteRT,
    ExecuTorch, OpenVINO, ncnn) the converted model's files in one archive (``device_client.upload_body``)."""
    backend = backend_of(runtime)
    if isinstance(backend, torch_engine.TorchBackend):
        raise ParamError("runtime", runtime, "a device server runs exported models, not PyTorch modules")
    with tempfile.TemporaryDirectory(prefix="edgenas-runtime-") as tmp:
        if isinstance(backend, tensorrt.TensorRTBackend):
            out = Path(tmp) / "model.onnx"
            return backend.source_onnx(model, out=out, input_chw=input_chw, calibration=calibration).read_bytes()
        path = backend.convert(
            model, out=Path(tmp) / f"model{backend.suffix}", input_chw=input_chw, calibration=calibration
        )
        return upload_body(path, runtime)
