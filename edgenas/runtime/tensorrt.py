"""TensorRT engines built from ONNX files with TensorRT's Python API (TensorRT 10 or newer); the TensorRT plug-in."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from edgenas.config.runtimes import RUNTIMES, Runtime
from edgenas.device_kit import edgenas_kit as kit
from edgenas.errors import EdgenasError, MissingDependency
from edgenas.runtime.onnx import half_precision, quantize_int8, timing_onnx
from edgenas.runtime.runners import kit_errors

TRT_INSTALL = "pip install tensorrt, or pip install 'edgenas[trt]'"
MAX_ENGINE_BATCH = 64  # largest batch of a TensorRT engine's optimisation profile


def import_tensorrt(what: str = "the tensorrt format"):
    try:
        import tensorrt
    except ImportError:
        raise MissingDependency(f"{what} needs TensorRT, which is not installed: {TRT_INSTALL}") from None
    if int(tensorrt.__version__.split(".")[0]) < 10:
        raise MissingDependency(
            f"{what} needs TensorRT 10 or newer (strongly typed engines), found {tensorrt.__version__}: "
            "pip install -U tensorrt"
        )
    return tensorrt


def build_engine(
    onnx_path: Path,
    *,
    engine_path: Path,
    input_chw: tuple[int, int, int],
    opt_batch: int = 1,
    max_batch: int = MAX_ENGINE_BATCH,
) -> Path:
    """Build a strongly typed TensorRT engine from an ONNX file with TensorRT's Python API.

    The precision is the ONNX file's (float32, an FP16 graph from ``half_precision``, or Q/DQ from
    ``quantize_int8``); TF32 is off, so a float32 graph computes in float32. The optimisation
    profile covers batches 1..``max_batch`` and is tuned for ``opt_batch``.
    """
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.ERROR)
    try:
        builder = trt.Builder(logger)
    except (TypeError, RuntimeError):  # the binding's "factory function returned nullptr": no usable GPU
        builder = None
    if builder is None:
        raise MissingDependency("TensorRT could not create a builder: it needs a CUDA GPU and its driver")
    typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)  # TensorRT 11: always on
    network = builder.create_network(0 if typed is None else 1 << int(typed))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EdgenasError(f"TensorRT cannot parse {onnx_path}: {errors[:300]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
    if hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # TF32 convolutions would miss the fp32 tolerance
    profile = builder.create_optimization_profile()
    opt_batch = min(opt_batch, max_batch)
    profile.set_shape(network.get_input(0).name, (1, *input_chw), (opt_batch, *input_chw), (max_batch, *input_chw))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EdgenasError(f"TensorRT could not build an engine from {onnx_path} (see TensorRT's log above)")
    kit.write_atomic(engine_path, lambda f: f.write(memoryview(serialized)))
    return engine_path


@dataclasses.dataclass(frozen=True)
class TensorRTBackend(Runtime):
    """tensorrt-fp16, tensorrt-int8: a strongly typed engine built from an FP16 graph or a Q/DQ one."""

    def available(self) -> None:
        import_tensorrt(f"runtime {self.name}")

    def version(self) -> str:
        return str(import_tensorrt(f"runtime {self.name}").__version__)

    def source_onnx(
        self, model, *, out: Path, input_chw: tuple[int, int, int], calibration: np.ndarray | None = None
    ) -> Path:
        """The ONNX graph the engine is built from (what a device server builds its own engine from).

        INT8 for timing: the Q/DQ ranges of a randomly initialised network are meaningless, but the
        engine runs the INT8 kernels the exported one will; latency does not depend on values."""
        out = Path(out)
        if self.precision == "fp16":
            return timing_onnx(half_precision(model), out, input_chw)
        fp32 = timing_onnx(model, out.with_name(out.stem + ".fp32.onnx"), input_chw)
        if calibration is None:
            calibration = np.random.default_rng(0).standard_normal((8, *input_chw), dtype=np.float32)
        try:
            return quantize_int8(fp32, out_path=out, calibration=calibration)
        finally:
            fp32.unlink(missing_ok=True)

    def convert(
        self,
        model,
        *,
        out: Path,
        input_chw: tuple[int, int, int],
        calibration: np.ndarray | None = None,
        batch: int = 1,
    ) -> Path:
        """The engine at ``out`` for batches 1..max(``batch``, MAX_ENGINE_BATCH), tuned for ``batch``."""
        self.available()
        out = Path(out)
        source = self.source_onnx(model, out=out.with_suffix(".onnx"), input_chw=input_chw, calibration=calibration)
        return build_engine(
            source, engine_path=out, input_chw=input_chw, opt_batch=batch, max_batch=max(batch, MAX_ENGINE_BATCH)
        )

    def open(self, path: Path, *, threads: int | None = None) -> kit.Runner:
        with kit_errors():
            return kit.open_runner(path, self.name, None)


BACKENDS = [TensorRTBackend(**dataclasses.asdict(r)) for r in RUNTIMES.values() if r.engine == "tensorrt"]
