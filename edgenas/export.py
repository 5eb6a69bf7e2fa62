"""Export a run's network to ONNX (and TensorRT) with parity checks against PyTorch.

The export formats are declared once in ``FORMATS``; export, parity and bench read it. Runners,
the samples file and the output comparison come from the device kit (``export/edgenas_kit.py``).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

import numpy as np

from edgenas import __version__
from edgenas.bench import kit, kit_errors
from edgenas.errors import EdgenasError, MissingDependency, ParityError, UserInputError
from edgenas.runs import RunDir, write_json_atomic

ONNX_OPSET = 18  # the lowest opset torch's dynamo exporter implements (it cannot convert down to 17)
INPUT_NAME, OUTPUT_NAME = "input", "output"
TRT_INSTALL = "pip install tensorrt, or pip install 'edgenas[trt]'"


@dataclass(frozen=True)
class ExportFormat:
    name: str
    file: str  # written in RUN_DIR/export/
    runtime: str  # the kit runtime that runs the file for parity (see edgenas_kit.RUNTIMES)
    needs_gpu: bool
    module: str  # the Python package the format needs
    install: str  # how to get it
    options: tuple[str, ...]  # export options that apply to it


FORMATS = {f.name: f for f in (
    ExportFormat("onnx", "model.onnx", "onnxruntime-cpu", False, "onnxruntime", "pip install onnxruntime", ()),
    ExportFormat("tensorrt", "model.engine", "tensorrt-fp16", True, "tensorrt", TRT_INSTALL,
                 ("fp16", "int8", "calibration_images", "int8_max_drop")),
)}


@dataclass(frozen=True)
class Tolerance:
    """What a runtime's outputs may differ from PyTorch's on the held-out samples."""

    max_abs_diff: float  # logits, over every sample and class; inf: reported, not checked
    min_agreement: float  # top-1 agreement with PyTorch (classify), a fraction
    min_cosine: float  # smallest cosine similarity of embeddings (face)

    def as_kwargs(self) -> dict:
        return {"max_abs_diff": self.max_abs_diff, "min_agreement": self.min_agreement, "min_cosine": self.min_cosine}


DEFAULT_INT8_MAX_DROP = 0.01  # top-1 agreement an INT8 engine may lose against PyTorch (--int8-max-drop)
TOLERANCES = {  # per precision; int8's agreement bound is 1 - int8_max_drop (see ``tolerance``)
    "fp32": Tolerance(1e-3, 0.999, 0.999),
    "fp16": Tolerance(0.1, 0.99, 0.995),
    "int8": Tolerance(math.inf, 1.0 - DEFAULT_INT8_MAX_DROP, 0.98),
}
MAX_ENGINE_BATCH = 64  # largest batch of a TensorRT engine's optimisation profile


def tolerance(precision: str, int8_max_drop: float = DEFAULT_INT8_MAX_DROP) -> Tolerance:
    tol = TOLERANCES[precision]
    if precision == "int8":
        tol = Tolerance(tol.max_abs_diff, 1.0 - int8_max_drop, tol.min_cosine)
    return tol


def parse_formats(formats) -> tuple[str, ...]:
    """``"onnx,tensorrt"`` or a sequence of names -> names in table order; unknown -> UserInputError."""
    names = [f.strip() for f in (formats.split(",") if isinstance(formats, str) else formats) if f.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        raise UserInputError(f"unknown export format {', '.join(unknown) or '(none)'}: choose from {', '.join(FORMATS)}")
    return tuple(n for n in FORMATS if n in names)


def _check_options(formats: tuple[str, ...], **options) -> None:
    for option, value in options.items():
        if value and not any(option in FORMATS[f].options for f in formats):
            owners = [f for f in FORMATS if option in FORMATS[f].options]
            flag = "--" + option.replace("_", "-")
            raise UserInputError(f"{flag} applies to the {'/'.join(owners)} format only: add --format onnx,{owners[0]}")


# -- ONNX ------------------------------------------------------------------------------------------
def export_onnx(model, path: str | Path, input_shape: tuple[int, int, int], metadata: dict) -> Path:
    """Write ``model`` as ONNX (opset ``ONNX_OPSET``, dynamic batch axis, checked) with ``metadata``.

    ``input_shape`` is one input's (C, H, W). Metadata values that are not strings are stored as
    JSON. The caller's model is not changed (a CPU copy in eval mode is exported).
    """
    import onnx
    import torch

    path = Path(path)
    model = copy.deepcopy(model).cpu().eval()
    x = torch.zeros(2, *input_shape)  # batch 2: torch.export would specialise a batch of 1
    with torch.no_grad():
        model(x)  # dry run: a model that cannot take this input fails here, with PyTorch's message
    program = torch.onnx.export(
        model, (x,), dynamo=True, opset_version=ONNX_OPSET, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
        dynamic_shapes=({0: torch.export.Dim("batch")},), external_data=False, verbose=False,
    )
    proto = program.model_proto
    onnx.helper.set_model_props(proto, {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})
    onnx.checker.check_model(proto, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    kit.write_atomic(path, lambda f: f.write(proto.SerializeToString()))
    return path


def onnx_metadata(run: RunDir) -> dict:
    """The metadata an exported model carries: what it is, where it came from, how to feed it."""
    meta, shape = run.meta, run.data_shape
    arch, task = run.arch(), meta.get("task", "classify")
    md = {
        "edgenas_version": __version__,
        "task": task,
        "architecture": arch.to_dict(),
        "architecture_str": str(arch),
        "profile": meta["profile"]["name"],
        "dataset": meta["dataset"]["name"],
        "input_shape": ["batch", shape["in_channels"], *shape["input_size"]],
        "mean": shape["mean"],
        "std": shape["std"],
        "normalization": "float32 NCHW input = (pixel / 255 - mean) / std, per channel",
        "weights_sha256": kit.file_sha256(run.path / RunDir.WEIGHTS),
    }
    if task == "face":
        md |= {"output": "L2-normalised embedding", "embedding_dim": meta["profile"]["face"]["embedding_dim"]}
    else:
        md |= {"output": "logits", "num_classes": shape["num_classes"], "class_names": shape["class_names"]}
    return md


def read_metadata(path: str | Path) -> dict:
    """An ONNX file's metadata_props, JSON values decoded."""
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    out = {}
    for key, value in props.items():
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


# -- reduced precision and TensorRT ----------------------------------------------------------------
# Engines are built strongly typed: the precision is in the ONNX file TensorRT parses (an FP16
# graph, or Q/DQ nodes for INT8), not in builder flags. TensorRT 11 removed the FP16/INT8 builder
# flags and the INT8 calibrators; this way one path serves TensorRT 10 (JetPack 6) and 11.
def half_precision(model):
    """A copy of ``model`` computing in float16 behind float32 input and output (for FP16 engines)."""
    from torch import nn

    class HalfPrecision(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x.half()).float()

    return HalfPrecision(copy.deepcopy(model).cpu().eval().half())


def quantize_int8(onnx_path: Path, out_path: Path, calibration: np.ndarray, batch: int = 32) -> Path:
    """A Q/DQ (explicitly quantised) INT8 copy of an ONNX file, calibrated on ``calibration`` images.

    ONNX Runtime's static quantiser with entropy calibration: symmetric INT8, weights per output
    channel, activations per tensor, as TensorRT reads them. Convolutions are quantised except
    the stem's (it sees raw pixels through few weights); the pooling and the head stay float.
    """
    import contextlib
    import io

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.starts = iter(range(0, len(calibration), batch))

        def get_next(self):
            start = next(self.starts, None)
            return None if start is None else {INPUT_NAME: np.ascontiguousarray(calibration[start:start + batch], np.float32)}

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    stem = [n.name for n in graph.node if n.op_type == "Conv" and INPUT_NAME in n.input][:1]
    root = logging.getLogger()
    hush = logging.Filter("edgenas-hush")  # matches no record name: drops the quantiser's root-logger advice
    root.addFilter(hush)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the calibrator prints its progress
            quantize_static(
                str(onnx_path), str(out_path), Batches(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"],
                nodes_to_exclude=stem, per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.Entropy,
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
            )
    finally:
        root.removeFilter(hush)
    return out_path


def import_tensorrt(what: str = "the tensorrt format"):
    try:
        import tensorrt
    except ImportError:
        raise MissingDependency(f"{what} needs TensorRT, which is not installed: {TRT_INSTALL}") from None
    if int(tensorrt.__version__.split(".")[0]) < 10:
        raise MissingDependency(f"{what} needs TensorRT 10 or newer (strongly typed engines), found {tensorrt.__version__}: "
                                "pip install -U tensorrt")
    return tensorrt


def build_engine(onnx_path: Path, engine_path: Path, input_chw: tuple[int, int, int], opt_batch: int = 1,
                 max_batch: int = MAX_ENGINE_BATCH) -> Path:
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


def precision_onnx(model, onnx_path: Path, precision: str, input_chw: tuple[int, int, int], workdir: Path,
                   calibration: np.ndarray | None = None) -> Path:
    """The ONNX file an engine of ``precision`` is built from (``onnx_path`` itself for fp32)."""
    if precision == "fp16":
        return export_onnx(half_precision(model), workdir / "model.fp16.onnx", input_chw, {"precision": "fp16"})
    if precision == "int8":
        if calibration is None or len(calibration) == 0:
            raise UserInputError("an INT8 engine needs calibration images")
        return quantize_int8(onnx_path, workdir / "model.int8.onnx", calibration)
    return onnx_path


# -- parity ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HeldOut:
    """Held-out images (test split first, then validation), normalised, with PyTorch's outputs."""

    inputs: np.ndarray  # float32 NCHW
    labels: np.ndarray  # int64
    outputs: np.ndarray  # float32: logits, or embeddings for face
    source: str  # e.g. "test" or "test+val"


def held_out(run: RunDir, model, data, samples: int) -> HeldOut:
    """``samples`` held-out images in a fixed, seeded order, and the PyTorch model's outputs on them."""
    import torch

    from edgenas.data import normalize

    parts, source = [], []
    for split in ("test", "val"):
        s = getattr(data, split)
        if len(s) and sum(len(p.y) for p in parts) < samples:
            parts.append(s)
            source.append(split)
    if not parts:
        raise UserInputError(f"the dataset of {run.path} has no held-out images to check the export on")
    x = torch.cat([p.x.cpu() for p in parts])
    y = torch.cat([p.y.cpu() for p in parts])
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[:samples]
    inputs = normalize(x[order], data.mean, data.std)
    model = model.cpu().eval()
    with torch.inference_mode():
        outputs = torch.cat([model(inputs[i:i + 256]) for i in range(0, len(inputs), 256)])
    return HeldOut(inputs.numpy(), y[order].numpy(), outputs.float().numpy(), "+".join(source))


def _parity_figures(ref: HeldOut, actual: np.ndarray, task: str, tol: Tolerance) -> dict:
    report = kit.parity_report(ref.outputs, actual, task, **tol.as_kwargs())
    if task == "classify" and actual.shape == ref.outputs.shape:
        report["reference_accuracy"] = float(np.mean(ref.outputs.argmax(1) == ref.labels))
        report["accuracy"] = float(np.mean(actual.argmax(1) == ref.labels))
    report["held_out"] = ref.source
    return report


def check_file(path: Path, fmt: ExportFormat, ref: HeldOut, task: str, tol: Tolerance, runtime: str | None = None) -> dict:
    """Run ``ref.inputs`` through an exported file on its runtime; the kit's parity figures."""
    with kit_errors(), kit.open_runner(path, runtime or fmt.runtime) as runner:
        actual = kit.run_batched(runner, ref.inputs)
        report = _parity_figures(ref, actual, task, tol)
        report.update(file=path.name, sha256=kit.file_sha256(path), runtime=runner.runtime,
                      runtime_version=str(runner.runtime_version), device=runner.device)
    return report


@dataclass
class ExportReport:
    """What ``export_run`` / ``verify_export`` wrote and found; ``lines()`` is what the CLI prints."""

    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)  # format -> file written
    parity: dict[str, dict] = field(default_factory=dict)  # format -> figures (as in parity.json)
    skipped: dict[str, str] = field(default_factory=dict)  # format -> why it was not built
    removed: list[Path] = field(default_factory=list)  # stale files of formats not exported this time

    @property
    def passed(self) -> bool:
        return all(p["passed"] for p in self.parity.values())

    def lines(self) -> list[str]:
        out = []
        for name, p in self.parity.items():
            figures = [f"{p['samples']} samples"]
            if "top1_agreement" in p:
                figures.append(f"top-1 agreement {p['top1_agreement']:.2%}")
            if "min_cosine" in p:
                figures.append(f"min cosine {p['min_cosine']:.6f}")
            if "max_abs_diff" in p:
                figures.append(f"max |diff| {p['max_abs_diff']:.2g}, mean {p['mean_abs_diff']:.2g}")
            verdict = "passed" if p["passed"] else "FAILED: " + "; ".join(p["failures"])
            out.append(f"{name} ({p['precision']}): {self.out_dir / p['file']}: parity {verdict} ({', '.join(figures)})")
        out += [f"removed {path}: it was built from the previous model.onnx" for path in self.removed]
        return out


def _parity_error(report: ExportReport) -> ParityError:
    failed = [f"{name} {p['precision']}: " + "; ".join(p["failures"]) for name, p in report.parity.items() if not p["passed"]]
    return ParityError(f"parity check failed for {' | '.join(failed)} "
                       f"(figures in {report.out_dir / 'parity.json'})")


def verify_export(run_dir: str | Path, formats=("onnx",), parity_samples: int = 256,
                  int8_max_drop: float = DEFAULT_INT8_MAX_DROP, model=None, data=None) -> ExportReport:
    """Re-check the files in RUN_DIR/export against the run's PyTorch weights; write parity.json.

    Raises ``ParityError`` (after writing parity.json) when any format misses its tolerance.
    """
    run = RunDir.open(run_dir)
    out = run.path / "export"
    formats = parse_formats(formats)
    model = model if model is not None else run.load_model("cpu")
    data = data if data is not None else run.load_data()
    ref = held_out(run, model, data, parity_samples)
    task = run.meta.get("task", "classify")
    previous = _read_parity(out)
    report = ExportReport(out)
    for name in formats:
        fmt = FORMATS[name]
        path = out / fmt.file
        if not path.is_file():
            raise UserInputError(f"{path} does not exist: run `edgenas export {run.path} --format {name}` first")
        precision = previous.get(name, {}).get("precision", "fp32") if name == "tensorrt" else "fp32"
        runtime = "tensorrt-int8" if precision == "int8" else None
        p = check_file(path, fmt, ref, task, tolerance(precision, int8_max_drop), runtime)
        report.files[name] = path
        report.parity[name] = {"precision": precision, **p}
    _write_parity(run, report)
    if not report.passed:
        raise _parity_error(report)
    return report


def _read_parity(out: Path) -> dict:
    path = out / "parity.json"
    return json.loads(path.read_text()).get("formats", {}) if path.is_file() else {}


def _write_parity(run: RunDir, report: ExportReport) -> None:
    write_json_atomic(report.out_dir / "parity.json", {
        "edgenas_version": __version__,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "run_dir": str(run.path),
        "passed": report.passed,
        "formats": report.parity,
        "skipped": report.skipped,
    })


# -- the export ------------------------------------------------------------------------------------
def _calibration_images(data, count: int) -> np.ndarray:
    """``count`` training images (seeded choice), normalised, for INT8 calibration."""
    import torch

    from edgenas.data import normalize

    n = min(count, len(data.train))
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(1))[:n]
    return normalize(data.train.x[order].cpu(), data.mean, data.std).numpy()


KIT_FILES = ("edgenas_kit.py", "edgenas_env.py")  # the kit and the bench-conditions probe it imports


def _copy_kit(out: Path) -> Path:
    for name in KIT_FILES:
        text = (resources.files("edgenas.device_kit") / name).read_bytes()
        kit.write_atomic(out / name, lambda f, text=text: f.write(text))
    os.chmod(out / "edgenas_kit.py", 0o755)
    return out / "edgenas_kit.py"


def export_run(run_dir: str | Path, formats=("onnx",), fp16: bool = False, int8: bool = False,
               calibration_images: int = 512, parity_samples: int = 256, kit_samples: int = 16,
               int8_max_drop: float = DEFAULT_INT8_MAX_DROP) -> ExportReport:
    """Export a finished run into RUN_DIR/export/ and check every file against PyTorch.

    Writes ``model.onnx``, ``samples.npz`` (``kit_samples`` held-out inputs with PyTorch's
    outputs), ``edgenas_kit.py``, ``parity.json`` and, for ``tensorrt``, ``model.engine``
    (built from the ONNX file, so ``tensorrt`` implies ``onnx``). When ``onnx`` and ``tensorrt``
    are asked for and TensorRT is not installed, the engine is skipped (``report.skipped``); when
    only ``tensorrt`` is asked for, that raises ``MissingDependency`` before anything is written.
    A parity failure raises ``ParityError`` after every file (and parity.json) is written.
    """
    asked = parse_formats(formats)
    _check_options(asked, fp16=fp16, int8=int8)
    if calibration_images < 1 or parity_samples < 1 or kit_samples < 1:
        raise UserInputError("calibration images, parity samples and kit samples must each be >= 1")
    if not 0 <= int8_max_drop < 1:
        raise UserInputError(f"the INT8 agreement drop must be in [0, 1), got {int8_max_drop}")
    skipped = {}
    if "tensorrt" in asked:
        try:
            import_tensorrt("--format tensorrt")
        except MissingDependency:
            if "onnx" not in asked:
                raise
            skipped["tensorrt"] = f"TensorRT is not installed, so no model.engine was built ({TRT_INSTALL})"
    run = RunDir.open(run_dir)
    model = run.load_model("cpu")
    data = run.load_data()
    meta, shape = run.meta, run.data_shape
    task = meta.get("task", "classify")
    input_chw = (int(shape["in_channels"]), *(int(s) for s in shape["input_size"]))
    out = run.path / "export"
    out.mkdir(exist_ok=True)

    onnx_path = export_onnx(model, out / FORMATS["onnx"].file, input_chw, onnx_metadata(run))
    ref = held_out(run, model, data, max(parity_samples, kit_samples))
    kit.save_samples(out / "samples.npz", ref.inputs[:kit_samples], ref.outputs[:kit_samples], task)
    _copy_kit(out)
    ref = HeldOut(ref.inputs[:parity_samples], ref.labels[:parity_samples], ref.outputs[:parity_samples], ref.source)

    report = ExportReport(out, skipped=skipped, removed=_remove_stale(out, asked, skipped))
    report.files["onnx"] = onnx_path
    report.parity["onnx"] = {"precision": "fp32", **check_file(onnx_path, FORMATS["onnx"], ref, task, TOLERANCES["fp32"])}
    _write_parity(run, report)  # written now too, so a failing engine build leaves the ONNX figures
    if "tensorrt" in asked and "tensorrt" not in skipped:
        precision = "int8" if int8 else "fp16" if fp16 else "fp32"
        calibration = _calibration_images(data, calibration_images) if int8 else None
        batch = int(meta["profile"].get("budget", {}).get("batch", 1))
        with tempfile.TemporaryDirectory(prefix="edgenas-engine-") as tmp:
            source = precision_onnx(model, onnx_path, precision, input_chw, Path(tmp), calibration)
            engine = build_engine(source, out / FORMATS["tensorrt"].file, input_chw, opt_batch=batch)
        runtime = "tensorrt-int8" if int8 else "tensorrt-fp16"
        p = check_file(engine, FORMATS["tensorrt"], ref, task, tolerance(precision, int8_max_drop), runtime)
        report.files["tensorrt"] = engine
        report.parity["tensorrt"] = {"precision": precision, **p}
        _write_parity(run, report)
    if not report.passed:
        raise _parity_error(report)
    return report


def _remove_stale(out: Path, asked: tuple[str, ...], skipped: dict) -> list[Path]:
    """Delete files of formats not built now: they were built from the ONNX file just replaced."""
    removed = []
    for name, fmt in FORMATS.items():
        stale = out / fmt.file
        if name != "onnx" and (name not in asked or name in skipped) and stale.exists():
            stale.unlink()
            removed.append(stale)
    return removed
