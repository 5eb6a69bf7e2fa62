"""INT8 ONNX files for ONNX Runtime on CPUs: static QDQ quantisation with ``onnxruntime.quantization``.

Unlike ``onnx.quantize_int8`` (symmetric, for TensorRT), this targets ORT's CPU kernels: unsigned
activations (QUInt8, asymmetric, so a ReLU output uses all 256 levels), signed per-channel weights
(QInt8), every op ORT has an integer kernel for (Conv, Gemm/MatMul, pooling, Add...), and the graph
pre-processed (shape inference, BatchNorm folded) before calibration.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path

import numpy as np

from edgenas.errors import ParamError
from edgenas.runtime.onnx import INPUT_NAME
from edgenas.training.augment import normalize

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")  # --calibration-method
DEFAULT_CALIBRATION_METHOD = "minmax"
CALIBRATION_BATCH = 32  # images per calibration step (entropy/percentile keep histograms, not tensors)
LATENCY_CALIBRATION_IMAGES = 8  # training images a search calibrates each timed candidate on


def calibration_images(data, count: int) -> np.ndarray:
    """``count`` training images of ``data`` (an ImageData; seeded choice), normalised, for calibration."""
    import torch

    n = min(count, len(data.train))
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(1))[:n]
    return normalize(data.train.x.cpu()[order], data.mean, data.std).numpy()


def check_calibration_method(method: str) -> str:
    if method not in CALIBRATION_METHODS:
        raise ParamError("calibration_method", method, f"choose one of {', '.join(CALIBRATION_METHODS)}")
    return method


@contextlib.contextmanager
def _quiet():
    """The quantiser prints progress and logs advice on the root logger; a library call stays silent."""
    root = logging.getLogger()
    hush = logging.Filter("edgenas-hush")  # matches no record name: drops every record
    root.addFilter(hush)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        root.removeFilter(hush)


def _reader(calibration: np.ndarray):
    from onnxruntime.quantization import CalibrationDataReader

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.starts = iter(range(0, len(calibration), CALIBRATION_BATCH))

        def get_next(self):
            start = next(self.starts, None)
            if start is None:
                return None
            return {INPUT_NAME: np.ascontiguousarray(calibration[start : start + CALIBRATION_BATCH], np.float32)}

    return Batches()


def quantize_ort_int8(
    onnx_path: str | Path,
    *,
    out_path: str | Path,
    calibration: np.ndarray,
    method: str = DEFAULT_CALIBRATION_METHOD,
    metadata: dict | None = None,
) -> Path:
    """Write a QDQ INT8 copy of ``onnx_path`` to ``out_path`` for ONNX Runtime's CPU provider, calibrated on ``calibration``.

    ``calibration``: float32 NCHW, normalised as the model's input. ``method``: minmax, entropy or
    percentile. The result keeps the source's metadata_props, with ``metadata`` added.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    check_calibration_method(method)
    calibration = np.asarray(calibration, np.float32)
    if calibration.ndim != 4 or len(calibration) == 0:
        raise ParamError("calibration", calibration.shape, "give at least one NCHW calibration image")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    calibrate = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[method]
    with tempfile.TemporaryDirectory(prefix="edgenas-int8-") as tmp, _quiet():
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
        staged = Path(tmp) / "int8.onnx"
        quantize_static(
            str(prepared),
            str(staged),
            _reader(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=calibrate,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
        proto = onnx.load(str(staged))
        source = onnx.load(str(onnx_path), load_external_data=False)
        props = {p.key: p.value for p in source.metadata_props} | {k: str(v) for k, v in (metadata or {}).items()}
        onnx.helper.set_model_props(proto, props)  # the exported model's metadata, plus ``metadata``
        tmp_out = out_path.with_name(f".{out_path.name}.tmp")
        onnx.save(proto, str(tmp_out))
        tmp_out.replace(out_path)  # atomic: a crash leaves no half-written model
    return out_path
