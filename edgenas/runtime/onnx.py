"""ONNX files of a network: the checked export, a fast export for timing, FP16 and INT8 (Q/DQ) variants.

Engines are built strongly typed: the precision is in the ONNX file TensorRT parses (an FP16
graph, or Q/DQ nodes for INT8), not in builder flags. TensorRT 11 removed the FP16/INT8 builder
flags and the INT8 calibrators; this way one path serves TensorRT 10 (JetPack 6) and 11.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import warnings
from pathlib import Path

import numpy as np

from edgenas.device_kit import edgenas_kit as kit

ONNX_OPSET = 18  # the lowest opset torch's dynamo exporter implements (it cannot convert down to 17)
INPUT_NAME, OUTPUT_NAME = "input", "output"


def export_onnx(model, *, path: str | Path, input_shape: tuple[int, int, int], metadata: dict) -> Path:
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
        model,
        (x,),
        dynamo=True,
        opset_version=ONNX_OPSET,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        external_data=False,
        verbose=False,
    )
    if program is None:  # only without dynamo=True
        raise RuntimeError("torch.onnx.export(dynamo=True) returned no ONNX program")
    proto = program.model_proto
    onnx.helper.set_model_props(proto, {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})
    onnx.checker.check_model(proto, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    kit.write_atomic(path, lambda f: f.write(proto.SerializeToString()))
    return path


def timing_onnx(model, path: Path, input_chw: tuple[int, int, int]) -> Path:
    """An ONNX file of ``model`` for timing: the TorchScript exporter while torch ships it, else export_onnx.

    The TorchScript exporter takes ~0.05 s where the dynamo exporter of ``edgenas export`` takes
    ~2 s (it rebuilds its op registry on every call), and a search measures many candidates. Both
    fold BatchNorm and emit the same Conv/Relu/Gemm graph, which ONNX Runtime times alike
    (tests/test_latency.py compares the graphs); only the pooling node is spelt differently.
    """
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its deprecation warning: the fallback below takes over
            torch.onnx.export(
                model,
                (torch.zeros(1, *input_chw),),
                str(path),
                dynamo=False,
                opset_version=ONNX_OPSET,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            )
        return path
    except Exception:  # noqa: BLE001 -- a torch without the TorchScript exporter, or a model it cannot trace
        return export_onnx(model, path=path, input_shape=input_chw, metadata={"purpose": "latency"})


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


def quantize_int8(onnx_path: Path, *, out_path: Path, calibration: np.ndarray, batch: int = 32) -> Path:
    """A Q/DQ (explicitly quantised) INT8 copy of an ONNX file, calibrated on ``calibration`` images.

    ONNX Runtime's static quantiser with entropy calibration: symmetric INT8, weights per output
    channel, activations per tensor, as TensorRT reads them. Convolutions are quantised except
    the stem's (it sees raw pixels through few weights); the pooling and the head stay float.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.starts = iter(range(0, len(calibration), batch))

        def get_next(self):
            start = next(self.starts, None)
            return (
                None
                if start is None
                else {INPUT_NAME: np.ascontiguousarray(calibration[start : start + batch], np.float32)}
            )

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    stem = [n.name for n in graph.node if n.op_type == "Conv" and INPUT_NAME in n.input][:1]
    root = logging.getLogger()
    hush = logging.Filter("edgenas-hush")  # matches no record name: drops the quantiser's root-logger advice
    root.addFilter(hush)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the calibrator prints its progress
            quantize_static(
                str(onnx_path),
                str(out_path),
                Batches(),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["Conv"],
                nodes_to_exclude=stem,
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.Entropy,
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
            )
    finally:
        root.removeFilter(hush)
    return out_path
