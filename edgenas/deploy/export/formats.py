"""The export formats and the parity tolerances of each precision: the tables export, parity and bench read."""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgenas.config.runtimes import RUNTIMES
from edgenas.deploy.export import layout
from edgenas.errors import ParamError


@dataclass(frozen=True)
class ExportFormat:
    name: str
    file: str  # written in RUN_DIR/export/ (a name of deploy/export/layout.py)
    runtime: str  # the runtime that runs the file for parity (config.runtimes.RUNTIMES)
    options: tuple[str, ...]  # export options that apply to it


FORMATS = {
    f.name: f
    for f in (
        ExportFormat("onnx", layout.ONNX, "onnxruntime-cpu", ()),
        ExportFormat(
            "tensorrt", layout.ENGINE, "tensorrt-fp16", ("fp16", "int8", "calibration_images", "int8_max_drop")
        ),
        # INT8 (QDQ) for ONNX Runtime on CPUs; gated by accuracy on the whole test split, not by logits
        ExportFormat(
            "onnx-int8",
            layout.ONNX_INT8,
            "onnxruntime-cpu-int8",
            ("calibration_images", "int8_max_drop", "calibration_method"),
        ),
        # the edge runtimes, converted from the PyTorch network by their plug-ins (runtime/litert.py, ...); INT8
        # files are gated like onnx-int8
        ExportFormat("litert", layout.TFLITE, "litert-cpu", ()),
        ExportFormat("litert-int8", layout.TFLITE_INT8, "litert-int8", ("calibration_images", "int8_max_drop")),
        ExportFormat("executorch", layout.PTE, "executorch-cpu", ()),
        ExportFormat("executorch-int8", layout.PTE_INT8, "executorch-int8", ("calibration_images", "int8_max_drop")),
        ExportFormat("openvino", layout.OPENVINO, "openvino-cpu", ()),
        ExportFormat("openvino-int8", layout.OPENVINO_INT8, "openvino-int8", ("calibration_images", "int8_max_drop")),
        ExportFormat("ncnn", layout.NCNN, "ncnn-cpu", ()),
        # Full-integer INT8 .tflite (litert-int8's converter) and a firmware bundle, run by TFLM's interpreter here
        ExportFormat("tflm", layout.TFLM, "tflm-int8", ("calibration_images", "int8_max_drop", "max_images")),
    )
}


def file_for_runtime(runtime: str) -> str:
    """The file in the export folder that ``runtime`` runs: the file of the format made for it
    (onnxruntime-cpu-int8: model.int8.onnx), else ``model`` + the runtime's suffix (tensorrt-int8: model.engine)."""
    made_for = {f.runtime: f.file for f in FORMATS.values()}
    return made_for.get(runtime) or f"model{RUNTIMES[runtime].suffix}"


def runtime_for_file(name: str) -> str | None:
    """The runtime the export file ``name`` was made for (None: not a format's file)."""
    return {f.file: f.runtime for f in FORMATS.values()}.get(name)


@dataclass(frozen=True)
class Tolerance:
    """What a runtime's outputs may differ from PyTorch's on the held-out samples."""

    max_abs_diff: float  # logits, over every sample and class; inf: reported, not checked
    min_agreement: float  # top-1 agreement with PyTorch (classify), a fraction
    min_cosine: float  # smallest cosine similarity of embeddings (face)

    def as_kwargs(self) -> dict:
        return {"max_abs_diff": self.max_abs_diff, "min_agreement": self.min_agreement, "min_cosine": self.min_cosine}


# --int8-max-drop: what INT8 may lose against PyTorch. TensorRT engines: top-1 agreement on the
# held-out samples; onnx-int8: accuracy on the whole test split (faces: verification accuracy), 0.01 = 1 pp.
DEFAULT_INT8_MAX_DROP = 0.01
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
        raise ParamError(
            "formats",
            formats,
            f"unknown export format {', '.join(unknown) or '(none)'}; choose from {', '.join(FORMATS)}",
        )
    return tuple(n for n in FORMATS if n in names)


def check_options(formats: tuple[str, ...], **options) -> None:
    """Refuse an option (``fp16=True`` …) that no asked-for format takes."""
    for option, value in options.items():
        if value and not any(option in FORMATS[f].options for f in formats):
            owners = [f for f in FORMATS if option in FORMATS[f].options]
            raise ParamError(
                option, value, f"applies to the {'/'.join(owners)} format only; ask for formats onnx,{owners[0]}"
            )
