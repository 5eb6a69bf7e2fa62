"""The edge runtimes' export formats: litert, executorch, openvino, ncnn and their INT8 variants.

Each file is converted from the PyTorch network by its runtime's plug-in (``Backend.convert``) and
run by the device kit's runner of that runtime for parity on held-out images; the metadata file
beside it carries what ``model.onnx``'s metadata carries (weights, normalisation, classes).
Float32 files are held to the fp32 tolerance; INT8 files are gated on accuracy over the whole
test split, as ``onnx-int8`` is (``int8_gate.gate_int8``).
"""

from __future__ import annotations

from pathlib import Path

from edgenas.config.runtimes import RUNTIMES
from edgenas.deploy.export.formats import FORMATS, TOLERANCES
from edgenas.deploy.export.int8_gate import gate_int8
from edgenas.deploy.export.parity import ExportReport, HeldOut, check_file
from edgenas.device_kit import edgenas_engines as engines
from edgenas.run.rundir import RunDir
from edgenas.runtime.backend import backend_of
from edgenas.runtime.onnx_quantize import calibration_images
from edgenas.runtime.runners import kit_errors

EDGE_ENGINES = tuple(engines.PACKAGES)  # litert, executorch, openvino, ncnn


def is_edge_format(name: str) -> bool:
    return RUNTIMES[FORMATS[name].runtime].engine in EDGE_ENGINES  # tflm: its own export (tflm_export.py)


def export_edge(
    run: RunDir,
    *,
    name: str,
    model,
    data,
    report: ExportReport,
    ref: HeldOut,
    samples: HeldOut,
    metadata: dict,
    calibration_images_count: int,
    int8_max_drop: float,
) -> Path:
    """Write format ``name``'s file (and its companions) into the export folder and record its parity
    (INT8: its accuracy gate) in ``report``."""
    fmt = FORMATS[name]
    backend = backend_of(fmt.runtime)
    int8 = backend.precision == "int8"
    calibration = calibration_images(data, calibration_images_count) if int8 else None
    path = backend.convert(
        model, out=report.out_dir / fmt.file, input_chw=run.meta.data.input_chw, calibration=calibration
    )
    with kit_errors():
        recorded = engines.read_metadata(path)
    recipe = _recipe(fmt.runtime, calibration) if int8 else None
    engines.write_metadata(
        path, {**metadata, **recorded, "precision": backend.precision, **({"calibration": recipe} if recipe else {})}
    )
    report.files[name] = path
    if recipe is None:  # fp32: parity at fp32 tolerances, no gate
        report.parity[name] = {
            "precision": "fp32",
            **check_file(path, fmt=fmt, ref=ref, task=run.meta.task, tol=TOLERANCES["fp32"]),
        }
        return path
    gate_int8(
        run,
        fmt=fmt,
        path=path,
        model=model,
        data=data,
        report=report,
        ref=ref,
        samples=samples,
        recipe=recipe,
        int8_max_drop=int8_max_drop,
    )
    return path


RECIPES = {  # how each runtime's INT8 file is quantised (recorded in parity.json and the metadata file)
    "litert": "PT2E, litert-torch PT2EQuantizer: symmetric INT8, weights per channel, int8 input and output",
    "executorch": "PT2E, XNNPACKQuantizer: symmetric INT8, weights per channel (XNNPACK delegate)",
    "openvino": "NNCF post-training quantisation (performance preset: symmetric INT8, weights per channel; "
    "full bias correction)",
}


def _recipe(runtime: str, calibration) -> dict:
    return {"method": RECIPES[RUNTIMES[runtime].engine], "images": int(len(calibration))}
