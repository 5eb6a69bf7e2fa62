"""ONNX Runtime as a runtime plug-in: onnxruntime-cpu, onnxruntime-cpu-int8 (QDQ, ORT's CPU kernels), onnxruntime-cuda.

The artifact is the fast timing export (``onnx.timing_onnx``); ``edgenas export`` writes the checked
one with metadata. Runs on the device kit's ``OnnxRuntimeRunner``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from edgenas.config.runtimes import RUNTIMES, Runtime
from edgenas.device_kit import edgenas_kit as kit
from edgenas.errors import MissingDependency
from edgenas.runtime.onnx import timing_onnx
from edgenas.runtime.onnx_quantize import LATENCY_CALIBRATION_IMAGES, quantize_ort_int8
from edgenas.runtime.runners import kit_errors


def random_calibration(input_chw: tuple[int, int, int]) -> np.ndarray:
    """Images to quantise a network for timing with: the kernels, so the latency, do not depend on the ranges."""
    return np.random.default_rng(0).standard_normal((LATENCY_CALIBRATION_IMAGES, *input_chw), dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class OnnxRuntimeBackend(Runtime):
    def available(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise MissingDependency(f"runtime {self.name} needs ONNX Runtime: {self.install}") from None
        if self.needs_gpu and "CUDAExecutionProvider" not in ort.get_available_providers():
            raise MissingDependency(f"runtime {self.name} needs onnxruntime-gpu and a CUDA GPU: {self.install}")

    def version(self) -> str:
        import onnxruntime

        return str(onnxruntime.__version__)

    def convert(
        self, model, *, out: Path, input_chw: tuple[int, int, int], calibration: np.ndarray | None = None
    ) -> Path:
        out = Path(out)
        if self.precision != "int8":
            return timing_onnx(model, out, input_chw)
        fp32 = timing_onnx(model, out.with_name(out.stem + ".fp32.onnx"), input_chw)
        calibration = random_calibration(input_chw) if calibration is None else calibration
        try:  # as `edgenas export --format onnx-int8` writes it
            return quantize_ort_int8(fp32, out_path=out, calibration=calibration)
        finally:
            fp32.unlink(missing_ok=True)

    def open(self, path: Path, *, threads: int | None = None) -> kit.Runner:
        with kit_errors():
            return kit.open_runner(path, self.name, threads)


BACKENDS = [OnnxRuntimeBackend(**dataclasses.asdict(r)) for r in RUNTIMES.values() if r.engine == "onnxruntime"]
