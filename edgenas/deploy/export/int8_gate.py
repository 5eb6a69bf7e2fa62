"""The ``onnx-int8`` export: model.int8.onnx for ONNX Runtime on CPUs, gated by accuracy on the whole test split.

Logits of an INT8 model differ from PyTorch's by design, so the gate is what a user loses: top-1
accuracy (faces: 10-fold verification accuracy) against PyTorch's on the same test images.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from edgenas.config.runtimes import RUNTIMES
from edgenas.deploy.evaluate import check_drop, evaluate_run, result_path
from edgenas.deploy.export.formats import FORMATS, TOLERANCES, ExportFormat, Tolerance
from edgenas.deploy.export.parity import ExportReport, HeldOut, check_file
from edgenas.device_kit import edgenas_kit as kit
from edgenas.errors import AccuracyDropError
from edgenas.run.rundir import RunDir, write_json_atomic
from edgenas.runtime.backend import backend_of
from edgenas.runtime.onnx_quantize import (
    DEFAULT_CALIBRATION_METHOD,
    calibration_images,
    quantize_ort_int8,
)
from edgenas.runtime.runners import kit_errors

FIGURES_ONLY = Tolerance(math.inf, 0.0, -1.0)  # parity figures of an INT8 file are reported, not checked


def kit_tolerances(
    path: Path, *, samples: HeldOut, task: str, int8_max_drop: float, runtime: str = FORMATS["onnx-int8"].runtime
) -> dict:
    """What the device kit's check of ``path`` on samples.npz allows: no logit bound; top-1 agreement
    (faces: cosine) no lower than 1 - ``int8_max_drop`` (faces: the int8 cosine bound) or than this
    machine's INT8 kernels of ``runtime`` reach on the same samples, whichever is lower."""
    with kit_errors(), backend_of(runtime).open(path) as runner:
        here = kit.parity_report(
            samples.outputs, actual=kit.run_batched(runner, samples.inputs), task=task, **FIGURES_ONLY.as_kwargs()
        )
    tol = {"max_abs_diff": math.inf}
    if task == "face":
        tol["min_cosine"] = min(TOLERANCES["int8"].min_cosine, here.get("min_cosine", -1.0))
    else:
        tol["min_agreement"] = min(1.0 - int8_max_drop, here.get("top1_agreement", 0.0))
    return tol


def export_onnx_int8(
    run: RunDir,
    *,
    model,
    data,
    report: ExportReport,
    onnx_path: Path,
    ref: HeldOut,
    samples: HeldOut,
    calibration_images_count: int,
    calibration_method: str | None,
    int8_max_drop: float,
) -> None:
    """Quantise ``onnx_path`` into model.int8.onnx, evaluate it on the whole test split against PyTorch,
    record parity and the gate in ``report``; the figures go to ``model.int8.evaluate.json``."""
    fmt = FORMATS["onnx-int8"]
    method = calibration_method or DEFAULT_CALIBRATION_METHOD
    calibration = calibration_images(data, calibration_images_count)
    recipe = {
        "method": method,
        "images": int(len(calibration)),
        "format": "QDQ",
        "activations": "QUInt8 per tensor",
        "weights": "QInt8 per channel",
    }
    path = quantize_ort_int8(
        onnx_path,
        out_path=report.out_dir / fmt.file,
        calibration=calibration,
        method=method,
        metadata={"precision": "int8", "calibration": json.dumps(recipe)},
    )
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


def gate_int8(
    run: RunDir,
    *,
    fmt: ExportFormat,
    path: Path,
    model,
    data,
    report: ExportReport,
    ref: HeldOut,
    samples: HeldOut | None,
    recipe: dict,
    int8_max_drop: float,
    max_images: int | None = None,
    **extra,
) -> None:
    """The INT8 file ``path`` of ``fmt`` evaluated on the whole test split against PyTorch (``max_images``: its
    first N images only, for a slow interpreter such as TFLM's; figures in ``<file>.evaluate.json``) and gated on
    what it loses (``int8_max_drop``); its parity figures on ``ref`` (reported, not checked), calibration
    ``recipe``, gate and ``extra`` entries (the tflm bundle's ``memory``) recorded in ``report``, with the
    tolerances of the kit's check of ``samples`` where the kit runs the file. A file over the gate stays for
    inspection."""
    task = run.meta.task
    parity = check_file(path, fmt=fmt, ref=ref, task=task, tol=FIGURES_ONLY)
    result = evaluate_run(
        run.path, model=path, runtime=fmt.runtime, torch_model=model, data=data, max_images=max_images
    )
    figures = result_path(run, path)
    write_json_atomic(figures, result)
    failures = []
    try:
        check_drop(result, max_drop=int8_max_drop, flag="--int8-max-drop")
    except AccuracyDropError as e:
        failures.append(str(e))
    key = "top1" if task == "classify" else "accuracy"
    gate = {
        "metric": result["metric"],
        "pytorch": result["pytorch"][key],
        "int8": result["artifact"][key],
        "drop_pp": result["drop_pp"],
        "max_drop_pp": 100.0 * int8_max_drop,
        "images": result["images"],
        "test_images": result["test_images"],
        "figures": figures.relative_to(report.out_dir).as_posix(),
    }
    entry = {
        "precision": "int8",
        **parity,
        "passed": not failures,
        "failures": failures,
        "calibration": recipe,
        "accuracy_gate": gate,
        **extra,
    }
    if RUNTIMES[fmt.runtime].in_kit and samples is not None:  # the kit checks a file it runs, on held-out images
        entry["kit_tolerances"] = kit_tolerances(
            path, samples=samples, task=task, int8_max_drop=int8_max_drop, runtime=fmt.runtime
        )
    report.files[fmt.name] = path
    report.parity[fmt.name] = entry
