"""The ``tflm`` export: a full-integer INT8 ``.tflite`` and its firmware bundle in RUN_DIR/export/tflm/.

Its tensor arena is measured by TFLM and written beside the footprint model's estimate (the bundle's
``memory.json`` and summary.json's ``memory``); its accuracy is evaluated through TFLM's interpreter on
the test split and gated like the other INT8 files (``--int8-max-drop``).
"""

from __future__ import annotations

import numpy as np

from edgenas.config.memory_targets import MEMORY_TARGETS
from edgenas.deploy.evaluate import check_drop, evaluate_run, result_path
from edgenas.deploy.firmware import (
    BUNDLE_DIR,
    MODEL,
    BundleFacts,
    aligned_arena,
    write_bundle,
)
from edgenas.deploy.parity import ExportReport, HeldOut
from edgenas.device_kit import edgenas_kit as kit
from edgenas.errors import AccuracyDropError, UserInputError
from edgenas.run.rundir import RunDir, write_json_atomic
from edgenas.runtime.ort_int8 import calibration_images
from edgenas.runtime.tflm import RUNTIME as TFLM_RUNTIME
from edgenas.runtime.tflm import TflmRunner, measure_arena, tflm_convert, tflm_version
from edgenas.search.footprint import footprint
from edgenas.search.space import count_macs, count_params

TARGET = "tflm-int8"  # the memory target the bundle is measured for
MEMORY = "memory.json"  # RUN_DIR/export/tflm/memory.json: estimate beside measurement
NORMALIZATION = "(pixel / 255 - mean) / std per channel"


def _memory(run: RunDir, path, measured) -> dict:
    shape, arch = run.meta.data, run.arch()
    est = footprint(arch, in_channels=shape.input_chw[0], input_size=shape.input_size,
                    outputs=shape.num_classes, target=MEMORY_TARGETS[TARGET])
    return {"estimate": est.to_dict(),
            "measured": {**measured.to_dict(), "flash_bytes": path.stat().st_size, "tflite_micro": tflm_version(),
                         "file": f"{BUNDLE_DIR}/{MODEL}"}}


def _record_in_summary(run: RunDir, memory: dict) -> None:
    """summary.json's ``memory`` gets the measured figures beside the search's estimate."""
    try:
        summary = run.read(RunDir.SUMMARY)
    except UserInputError:
        return  # a run without a summary (trained by `edgenas train`?) keeps the figures in memory.json only
    summary["memory"] = memory
    run.write(RunDir.SUMMARY, summary)


def export_tflm(run: RunDir, *, model, data, report: ExportReport, ref: HeldOut, calibration_images_count: int,
                int8_max_drop: float, max_images: int | None) -> None:
    """Convert, measure, evaluate through TFLM and write the bundle; record parity and the gate in ``report``."""
    if run.meta.task != "classify":
        raise UserInputError(f"the tflm format exports classifiers; {run.path} is a {run.meta.task} run")
    shape, arch = run.meta.data, run.arch()
    out = report.out_dir / BUNDLE_DIR
    out.mkdir(exist_ok=True)
    calibration = calibration_images(data, calibration_images_count)
    path = tflm_convert(model, out=out / MODEL, input_chw=shape.input_chw, calibration=calibration)
    measured = measure_arena(path)
    memory = _memory(run, path, measured)
    write_json_atomic(out / MEMORY, memory)
    _record_in_summary(run, memory)
    with TflmRunner(path) as runner:
        actual = runner(ref.inputs)
        q = runner.input["quantization_parameters"]
        parity = kit.parity_report(ref.outputs, actual=actual, task="classify", max_abs_diff=np.inf, min_agreement=0.0,
                                   min_cosine=-1.0)  # INT8: figures reported; the gate is test accuracy
        parity.update(file=f"{BUNDLE_DIR}/{MODEL}", sha256=kit.file_sha256(path), runtime=runner.runtime,
                      runtime_version=runner.runtime_version, device=runner.device, held_out=ref.source,
                      accuracy=float(np.mean(actual.argmax(1) == ref.labels)),
                      reference_accuracy=float(np.mean(ref.outputs.argmax(1) == ref.labels)))
    c, h, w = shape.input_chw
    write_bundle(out, path.read_bytes(), BundleFacts(
        arena_bytes=aligned_arena(measured.arena), peak_memory_bytes=measured.head, persistent_bytes=measured.tail,
        input_hwc=(h, w, c), input_scale=float(q["scales"][0]), input_zero_point=int(q["zero_points"][0]),
        outputs=shape.num_classes, macs=count_macs(arch, in_channels=c, num_classes=shape.num_classes, input_size=(h, w)),
        params=count_params(arch, c, shape.num_classes), arch=str(arch), tflm_version=tflm_version(),
        normalization=f"{NORMALIZATION} (mean {list(shape.mean)}, std {list(shape.std)})"))
    result = evaluate_run(run.path, model=path, runtime=TFLM_RUNTIME, torch_model=model, data=data,
                          max_images=max_images)
    figures = result_path(run, path)
    write_json_atomic(figures, result)
    failures = []
    try:
        check_drop(result, max_drop=int8_max_drop, flag="--int8-max-drop")
    except AccuracyDropError as e:
        failures.append(str(e))
    gate = {"metric": result["metric"], "pytorch": result["pytorch"]["top1"], "int8": result["artifact"]["top1"],
            "drop_pp": result["drop_pp"], "max_drop_pp": 100.0 * int8_max_drop, "images": result["images"],
            "test_images": result["test_images"], "figures": f"{BUNDLE_DIR}/{figures.name}"}
    report.files["tflm"] = path
    report.parity["tflm"] = {"precision": "int8", **parity, "passed": not failures, "failures": failures,
                             "calibration": {"images": len(calibration), "quantiser": "PT2E (litert-int8)"},
                             "accuracy_gate": gate, "memory": memory}
