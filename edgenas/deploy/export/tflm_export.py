"""The ``tflm`` export: a full-integer INT8 ``.tflite`` and its firmware bundle in RUN_DIR/export/tflm/.

Its tensor arena is measured by TFLM and written beside the footprint model's estimate (the bundle's
``memory.json`` and summary.json's ``memory``); its accuracy is evaluated through TFLM's interpreter on
the test split and gated like the other INT8 files (``--int8-max-drop``).
"""

from __future__ import annotations

from edgenas.config.memory_targets import MEMORY_TARGETS
from edgenas.config.runtimes import RUNTIMES
from edgenas.deploy.export.firmware import (
    BUNDLE_DIR,
    MODEL,
    BundleFacts,
    aligned_arena,
    write_bundle,
)
from edgenas.deploy.export.formats import FORMATS
from edgenas.deploy.export.int8_gate import gate_int8
from edgenas.deploy.export.parity import ExportReport, HeldOut
from edgenas.errors import UserInputError
from edgenas.run.rundir import RunDir, write_json_atomic
from edgenas.runtime.backend import backend_of
from edgenas.runtime.onnx_quantize import calibration_images
from edgenas.runtime.tflm import RUNTIME as TFLM_RUNTIME
from edgenas.runtime.tflm import input_quantization, measure_arena, tflm_version
from edgenas.search.footprint import footprint
from edgenas.search.space import count_macs, count_params

TARGET = "tflm-int8"  # the memory target the bundle is measured for
BUNDLE_FORMAT = "tflm"  # the export format (deploy/formats.py) whose file the bundle holds
MEMORY = "memory.json"  # RUN_DIR/export/tflm/memory.json: estimate beside measurement
NORMALIZATION = "(pixel / 255 - mean) / std per channel"


def _memory(run: RunDir, path, measured) -> dict:
    shape, arch = run.meta.data, run.arch()
    est = footprint(
        arch,
        in_channels=shape.input_chw[0],
        input_size=shape.input_size,
        outputs=shape.num_classes,
        target=MEMORY_TARGETS[TARGET],
    )
    return {
        "estimate": est.to_dict(),
        "measured": {
            **measured.to_dict(),
            "flash_bytes": path.stat().st_size,
            "tflite_micro": tflm_version(),
            "file": f"{BUNDLE_DIR}/{MODEL}",
        },
    }


def _record_in_summary(run: RunDir, memory: dict) -> None:
    """summary.json's ``memory`` gets the measured figures beside the search's estimate."""
    try:
        summary = run.read(RunDir.SUMMARY)
    except UserInputError:
        return  # a run without a summary (trained by `edgenas train`?) keeps the figures in memory.json only
    summary["memory"] = memory
    run.write(RunDir.SUMMARY, summary)


def export_tflm(
    run: RunDir,
    *,
    model,
    data,
    report: ExportReport,
    ref: HeldOut,
    calibration_images_count: int,
    int8_max_drop: float,
    max_images: int | None,
) -> None:
    """Convert, measure, evaluate through TFLM and write the bundle; record parity and the gate in ``report``."""
    if run.meta.task != "classify":
        raise UserInputError(f"the tflm format exports classifiers; {run.path} is a {run.meta.task} run")
    shape, arch = run.meta.data, run.arch()
    out = report.out_dir / BUNDLE_DIR
    out.mkdir(exist_ok=True)
    calibration = calibration_images(data, calibration_images_count)
    tflm = backend_of(TFLM_RUNTIME)
    path = tflm.convert(model, out=out / MODEL, input_chw=shape.input_chw, calibration=calibration)
    measured = measure_arena(path)
    memory = _memory(run, path, measured)
    write_json_atomic(out / MEMORY, memory)
    _record_in_summary(run, memory)
    fmt = FORMATS[BUNDLE_FORMAT]
    c, h, w = shape.input_chw
    input_scale, input_zero_point = input_quantization(path)
    write_bundle(
        out,
        path.read_bytes(),
        BundleFacts(
            arena_bytes=aligned_arena(measured.arena),
            peak_memory_bytes=measured.head,
            persistent_bytes=measured.tail,
            input_hwc=(h, w, c),
            input_scale=input_scale,
            input_zero_point=input_zero_point,
            outputs=shape.num_classes,
            macs=count_macs(arch, in_channels=c, num_classes=shape.num_classes, input_size=(h, w)),
            params=count_params(arch, c, shape.num_classes),
            arch=str(arch),
            tflm_version=tflm_version(),
            normalization=f"{NORMALIZATION} (mean {list(shape.mean)}, std {list(shape.std)})",
        ),
    )
    gate_int8(
        run,
        fmt=fmt,
        path=path,
        model=model,
        data=data,
        report=report,
        ref=ref,
        samples=None,
        recipe={"images": len(calibration), "quantiser": f"PT2E ({RUNTIMES[TFLM_RUNTIME].converts_via})"},
        int8_max_drop=int8_max_drop,
        max_images=max_images,
        memory=memory,
        file=fmt.file,  # the bundle's file, as the export folder holds it
    )
