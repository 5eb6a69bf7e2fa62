"""The device kit's runners for LiteRT, ExecuTorch, OpenVINO and ncnn: numpy and each runtime's own package.

Loaded by ``edgenas_kit.py`` like its other sibling files; it imports neither torch nor edgenas
(ExecuTorch's Python runtime is the exception the runtime itself makes: its wheel needs torch).
Each model file has a metadata file beside it (``model.tflite`` -> ``model.tflite.json``: layout,
input shape, the weights it came from) written by ``edgenas export``; a runner reads it to feed the
model right (LiteRT files take NHWC images).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

# The runtimes of this file: name -> (engine, model suffix, needs a GPU); the kit adds them to its table.
RUNTIMES = {
    "litert-cpu": ("litert", ".tflite", False),
    "litert-int8": ("litert", ".tflite", False),  # fully INT8 (int8 input and output, quantised here)
    "executorch-cpu": ("executorch", ".pte", False),  # XNNPACK delegate
    "executorch-int8": ("executorch", ".pte", False),
    "openvino-cpu": ("openvino", ".xml", False),  # the IR's .bin beside it
    "openvino-int8": ("openvino", ".xml", False),
    "ncnn-cpu": ("ncnn", ".ncnn.param", False),  # the .ncnn.bin beside it
}
# engine -> (the module it imports, how to install it on a device)
PACKAGES = {
    "litert": ("ai_edge_litert", "pip install ai-edge-litert"),
    "executorch": ("executorch", "pip install executorch"),
    "openvino": ("openvino", "pip install openvino"),
    "ncnn": ("ncnn", "pip install ncnn"),
}
LAYOUTS = ("NCHW", "NHWC")  # the layout of the model file's input; the runner's input is always NCHW


class EngineError(Exception):
    """A model file this runtime cannot run, or its metadata is missing or wrong (the kit: exit 2)."""


class EngineMissing(EngineError):
    """The runtime's package is not installed."""


# -- the metadata file beside each model ----------------------------------------------------------
def metadata_path(model: str | Path) -> Path:
    model = Path(model)
    return model.with_name(model.name + ".json")


def write_metadata(model: str | Path, metadata: dict) -> Path:
    """Write (atomically) the metadata file of ``model``: its ``layout``, ``input_chw`` and the rest."""
    path = metadata_path(model)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(metadata, f, indent=2, sort_keys=True)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def companion_files(model: str | Path) -> list[Path]:
    """The files a model file needs beside it: an OpenVINO IR's ``.bin``, ncnn's ``.ncnn.bin``, the metadata."""
    model = Path(model)
    if model.name.endswith(".ncnn.param"):
        weights = [model.with_name(model.name[: -len(".param")] + ".bin")]
    elif model.suffix == ".xml":
        weights = [model.with_suffix(".bin")]
    else:
        weights = []
    return [*weights, metadata_path(model)]


def upload_names(runtime: str) -> tuple[list[str], str]:
    """The names of ``runtime``'s files in an upload to a device server (an uncompressed tar, ``upload=tar``):
    those of an export of ``model<suffix>`` — the model file and its weights (required), and its metadata
    file's name (optional: without it the server writes the runtime and the query's ``layout``)."""
    main = Path("model" + RUNTIMES[runtime][1])
    *weights, metadata = companion_files(main)
    return [main.name, *(w.name for w in weights)], metadata.name


def size_on_disk(model: str | Path) -> int:
    """Bytes of ``model`` and its weights file (an IR's ``.bin``, ncnn's ``.ncnn.bin``): what a device stores."""
    return sum(p.stat().st_size for p in [Path(model), *companion_files(model)[:-1]] if p.is_file())


def read_metadata(model: str | Path) -> dict:
    """The metadata file of ``model`` ({} when there is none); a damaged one is an EngineError."""
    path = metadata_path(model)
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise EngineError(f"{path}: not a readable metadata file ({e}); export the model again") from None
    if not isinstance(meta, dict):
        raise EngineError(f"{path}: not a metadata object; export the model again")
    return meta


def _input_chw(model: Path, meta: dict, found=None) -> tuple[int, int, int]:
    """The input's (C, H, W): the metadata's, checked against what the file says where it says it."""
    chw = meta.get("input_chw", found)
    if not (isinstance(chw, (list, tuple)) and len(chw) == 3 and all(isinstance(d, int) and d > 0 for d in chw)):
        raise EngineError(
            f"{metadata_path(model)} must give input_chw, the input's [C, H, W]; "
            f"copy it with the model, or export the model again"
        )
    if found is not None and tuple(found) != tuple(chw):
        raise EngineError(
            f"{model} takes {list(found)} (C, H, W) but {metadata_path(model).name} says {list(chw)}: "
            f"they belong to different exports"
        )
    return tuple(chw)


def _layout(model: Path, meta: dict, default: str | None = None) -> str:
    layout = meta.get("layout", default)
    if layout not in LAYOUTS:
        raise EngineError(
            f"{metadata_path(model)} must give the input layout ({' or '.join(LAYOUTS)}); "
            f"copy it with the model, or export the model again"
        )
    return layout


@contextlib.contextmanager
def openvino_telemetry_off():
    """No telemetry from OpenVINO (its converter, imported with ``openvino``) or NNCF, and no files
    under ``~/intel``: both create their telemetry client with ``disable_in_ci=True`` and read ``CI``
    when they do, which is when they are first imported (then on each conversion). Wrap those in this."""
    before = os.environ.get("CI")
    os.environ["CI"] = "true"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("CI", None)
        else:
            os.environ["CI"] = before


def _import(engine: str):
    module, install = PACKAGES[engine]
    try:
        with openvino_telemetry_off() if engine == "openvino" else contextlib.nullcontext():
            return importlib.import_module(module)
    except ImportError:
        raise EngineMissing(f"{module} is not installed: {install}") from None


def package_version(engine: str) -> str:
    dist = PACKAGES[engine][1].split()[-1]
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        raise EngineMissing(f"{dist} is not installed: {PACKAGES[engine][1]}") from None


# -- runners ---------------------------------------------------------------------------------------
class EngineRunner:
    """The kit's runner interface (``edgenas_kit.Runner``): ``runner(x)`` takes float32 NCHW images and
    returns the first output, host to host. These files take one image per call (batch 1); a batch
    is run image by image."""

    max_batch = None  # any batch: run one image at a time
    input_chw: tuple[int, int, int]  # each engine's __init__ reads it from its file

    def __init__(self, model: Path, *, runtime: str, threads: int, device: str):
        self.model_path, self.runtime, self.threads, self.device = Path(model), runtime, threads, device
        self.meta = read_metadata(model)
        self.weights_sha256 = self.meta.get("weights_sha256")

    def run_one(self, image: np.ndarray) -> np.ndarray:
        """One (1, C, H, W) float32 image -> its (1, K) output."""
        raise NotImplementedError

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        inputs = np.ascontiguousarray(inputs, np.float32)
        if inputs.ndim != 4 or tuple(inputs.shape[1:]) != tuple(self.input_chw):
            raise EngineError(
                f"{self.model_path} takes (N, {', '.join(map(str, self.input_chw))}) images, got {inputs.shape}"
            )
        return np.concatenate([self.run_one(inputs[i : i + 1]) for i in range(len(inputs))])

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LiteRTRunner(EngineRunner):
    """A ``.tflite`` file on LiteRT's interpreter (XNNPACK on CPUs). INT8 files take and give int8:
    the image is quantised and the output dequantised with the file's own scales."""

    def __init__(self, model: Path, *, runtime: str, threads: int, device: str):
        super().__init__(model, runtime=runtime, threads=threads, device=device)
        _import("litert")
        from ai_edge_litert.interpreter import Interpreter

        self.runtime_version = package_version("litert")
        try:
            self.interpreter = Interpreter(model_path=str(model), num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise EngineError(f"{model} is not a model LiteRT can load: {str(e).strip().splitlines()[0]}") from None
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(inputs) != 1 or len(inputs[0]["shape"]) != 4:
            raise EngineError(f"{model} must take one image input, it takes {[list(i['shape']) for i in inputs]}")
        self.input, self.output = inputs[0], outputs[0]
        self.layout = _layout(model, self.meta)
        shape = [int(d) for d in self.input["shape"][1:]]
        self.input_chw = _input_chw(
            model, self.meta, shape if self.layout == "NCHW" else [shape[2], shape[0], shape[1]]
        )

    def _quantise(self, x: np.ndarray) -> np.ndarray:
        dtype = self.input["dtype"]
        if dtype == np.float32:
            return x
        scale, zero = self.input["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)

    def _dequantise(self, y: np.ndarray) -> np.ndarray:
        if y.dtype == np.float32:
            return y.copy()
        scale, zero = self.output["quantization"]
        return (y.astype(np.float32) - zero) * np.float32(scale)

    def run_one(self, image: np.ndarray) -> np.ndarray:
        if self.layout == "NHWC":
            image = image.transpose(0, 2, 3, 1)
        self.interpreter.set_tensor(self.input["index"], np.ascontiguousarray(self._quantise(image)))
        self.interpreter.invoke()
        return self._dequantise(self.interpreter.get_tensor(self.output["index"]))


class ExecuTorchRunner(EngineRunner):
    """A ``.pte`` program on ExecuTorch's runtime (its XNNPACK delegate). ``threads`` sets the
    runtime's one thread pool, shared by every program in the process."""

    def __init__(self, model: Path, *, runtime: str, threads: int, device: str):
        super().__init__(model, runtime=runtime, threads=threads, device=device)
        _import("executorch")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "experimental API": its thread pool's only setter
            from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime

        self.torch = importlib.import_module("torch")  # ExecuTorch's Python runtime takes torch tensors
        self.runtime_version = package_version("executorch")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            portable_lib._unsafe_reset_threadpool(threads)
        try:
            program = Runtime.get().load_program(Path(model))
            self.method = program.load_method("forward")
        except (ValueError, RuntimeError) as e:
            raise EngineError(
                f"{model} is not a program ExecuTorch can load: {str(e).strip().splitlines()[0]}"
            ) from None
        meta = self.method.metadata
        if meta.num_inputs() != 1 or len(meta.input_tensor_meta(0).sizes()) != 4:
            raise EngineError(f"{model} must take one image input")
        self.layout = _layout(model, self.meta, "NCHW")
        self.input_chw = _input_chw(model, self.meta, [int(d) for d in meta.input_tensor_meta(0).sizes()[1:]])

    def run_one(self, image: np.ndarray) -> np.ndarray:
        return self.method.execute([self.torch.from_numpy(image)])[0].numpy().copy()


class OpenVINORunner(EngineRunner):
    """An OpenVINO IR (``.xml`` and its ``.bin``) compiled for the CPU plugin in f32 (no bf16/f16
    execution of the float parts), latency mode; a batch runs in one call (the batch axis is dynamic)."""

    def __init__(self, model: Path, *, runtime: str, threads: int, device: str):
        super().__init__(model, runtime=runtime, threads=threads, device=device)
        ov = _import("openvino")
        self.runtime_version = package_version("openvino")
        if not companion_files(model)[0].is_file():
            raise EngineError(f"{companion_files(model)[0]}: no such file (an OpenVINO model is the .xml and its .bin)")
        try:
            core = ov.Core()
            compiled = core.compile_model(
                core.read_model(str(model)),
                "CPU",
                {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"},
            )
        except RuntimeError as e:
            raise EngineError(
                f"{model} is not a model OpenVINO can compile: {str(e).strip().splitlines()[0]}"
            ) from None
        self.request, self.output = compiled.create_infer_request(), compiled.output(0)
        shape = compiled.input(0).get_partial_shape()
        if len(compiled.inputs) != 1 or shape.rank.get_length() != 4:
            raise EngineError(f"{model} must take one image input")
        found = [d.get_length() if d.is_static else None for d in shape][1:]
        self.layout = _layout(model, self.meta, "NCHW")
        self.input_chw = _input_chw(model, self.meta, found if None not in found else None)

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        inputs = np.ascontiguousarray(inputs, np.float32)
        if inputs.ndim != 4 or tuple(inputs.shape[1:]) != tuple(self.input_chw):
            raise EngineError(
                f"{self.model_path} takes (N, {', '.join(map(str, self.input_chw))}) images, got {inputs.shape}"
            )
        return np.array(self.request.infer({0: inputs})[self.output], np.float32)  # a copy: the request reuses it


class NcnnRunner(EngineRunner):
    """An ncnn model (``.ncnn.param`` and its ``.ncnn.bin``) with fp16 storage and arithmetic off
    (ncnn's default stores weights in fp16 where the CPU can)."""

    def __init__(self, model: Path, *, runtime: str, threads: int, device: str):
        super().__init__(model, runtime=runtime, threads=threads, device=device)
        ncnn = _import("ncnn")
        self.ncnn, self.runtime_version = ncnn, package_version("ncnn")
        weights = companion_files(model)[0]
        if not weights.is_file():
            raise EngineError(f"{weights}: no such file (an ncnn model is the .param and its .bin)")
        self.net = ncnn.Net()
        opt = self.net.opt
        opt.use_fp16_storage = opt.use_fp16_packed = opt.use_fp16_arithmetic = False
        opt.use_bf16_storage = False
        opt.num_threads = threads
        if self.net.load_param(str(model)) != 0 or self.net.load_model(str(weights)) != 0:
            raise EngineError(f"{model} and {weights.name} are not an ncnn model this ncnn can load")
        if len(self.net.input_names()) != 1 or not self.net.output_names():
            raise EngineError(f"{model} must take one image input, it takes {list(self.net.input_names())}")
        self.input_name, self.output_name = self.net.input_names()[0], self.net.output_names()[0]
        self.layout = _layout(model, self.meta, "NCHW")
        self.input_chw = _input_chw(model, self.meta)  # an ncnn file does not record its input shape

    def run_one(self, image: np.ndarray) -> np.ndarray:
        chw = np.ascontiguousarray(image[0])  # ncnn.Mat keeps a view: ``chw`` must outlive the extraction
        extractor = self.net.create_extractor()
        extractor.input(self.input_name, self.ncnn.Mat(chw))
        status, out = extractor.extract(self.output_name)
        if status != 0:
            raise EngineError(f"{self.model_path}: ncnn could not compute {self.output_name} (status {status})")
        return np.array(out, np.float32).reshape(1, -1)

    def close(self) -> None:
        self.net.clear()


RUNNERS = {"litert": LiteRTRunner, "executorch": ExecuTorchRunner, "openvino": OpenVINORunner, "ncnn": NcnnRunner}


def open_runner(model: str | Path, *, runtime: str, threads: int, device: str) -> EngineRunner:
    """Load ``model`` on ``runtime`` (one of ``RUNTIMES``) with ``threads`` CPU threads."""
    engine, suffix, _ = RUNTIMES[runtime]
    model = Path(model)
    if not model.name.endswith(suffix):
        raise EngineError(f"{model}: runtime {runtime} runs {suffix} files")
    return RUNNERS[engine](model, runtime=runtime, threads=threads, device=device)
