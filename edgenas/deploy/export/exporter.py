"""``edgenas export``: a run's network into RUN_DIR/export/ — ONNX (and TensorRT, LiteRT, ExecuTorch,
OpenVINO, ncnn files), parity-checked.

The folder it writes is what goes onto the device: the model, held-out samples with PyTorch's
outputs, ``parity.json`` and the device kit (``edgenas_kit.py``, shipped from ``export/``).
"""

from __future__ import annotations

import os
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np

from edgenas.deploy.export import layout
from edgenas.deploy.export.edge_export import export_edge, is_edge_format
from edgenas.deploy.export.formats import (
    DEFAULT_INT8_MAX_DROP,
    FORMATS,
    TOLERANCES,
    check_options,
    parse_formats,
    tolerance,
)
from edgenas.deploy.export.int8_gate import export_onnx_int8
from edgenas.deploy.export.parity import (
    ExportReport,
    HeldOut,
    check_file,
    held_out,
    parity_error,
    write_parity,
)
from edgenas.deploy.export.tflm_export import export_tflm
from edgenas.device_kit import edgenas_engines as engines
from edgenas.device_kit import edgenas_kit as kit
from edgenas.errors import MissingDependency, ParamError, RunDirError, UserInputError
from edgenas.run.loading import load_run_data, load_run_model
from edgenas.run.rundir import RunDir
from edgenas.runtime.backend import check_available
from edgenas.runtime.onnx import export_onnx, half_precision, quantize_int8
from edgenas.runtime.onnx_quantize import calibration_images as _calibration_images
from edgenas.runtime.onnx_quantize import check_calibration_method
from edgenas.runtime.tensorrt import TRT_INSTALL, build_engine, import_tensorrt
from edgenas.version import __version__


def onnx_metadata(run: RunDir) -> dict:
    """The metadata an exported model carries: what it is, where it came from, how to feed it."""
    meta, shape = run.meta, run.meta.data
    arch, task = run.arch(), meta.task
    md = {
        "edgenas_version": __version__,
        "task": task,
        "architecture": arch.to_dict(),
        "architecture_str": str(arch),
        "profile": meta.profile.name,
        "dataset": meta.dataset.name,
        "input_shape": ["batch", *shape.input_chw],
        "mean": list(shape.mean),
        "std": list(shape.std),
        "normalization": "float32 NCHW input = (pixel / 255 - mean) / std, per channel",
        "weights_sha256": kit.file_sha256(run.path / RunDir.WEIGHTS),
    }
    if task == "face":
        md |= {"output": "L2-normalised embedding", "embedding_dim": meta.outputs}
    else:
        md |= {"output": "logits", "num_classes": shape.num_classes, "class_names": list(shape.class_names)}
    return md


def precision_onnx(
    model,
    *,
    onnx_path: Path,
    precision: str,
    input_chw: tuple[int, int, int],
    workdir: Path,
    calibration: np.ndarray | None = None,
) -> Path:
    """The ONNX file an engine of ``precision`` is built from (``onnx_path`` itself for fp32)."""
    if precision == "fp16":
        return export_onnx(
            half_precision(model),
            path=workdir / "model.fp16.onnx",
            input_shape=input_chw,
            metadata={"precision": "fp16"},
        )
    if precision == "int8":
        if calibration is None or len(calibration) == 0:
            raise UserInputError("an INT8 engine needs calibration images")
        return quantize_int8(onnx_path, out_path=workdir / "model.int8.onnx", calibration=calibration)
    return onnx_path


def _copy_kit(out: Path) -> Path:
    for name in layout.KIT_FILES:
        text = (resources.files("edgenas.device_kit") / name).read_bytes()
        kit.write_atomic(out / name, lambda f, text=text: f.write(text))
    os.chmod(out / layout.KIT, 0o755)
    return out / layout.KIT


def _engine_missing(asked: tuple[str, ...]) -> dict:
    """``{"tensorrt": why}`` when an engine was asked for beside ONNX and TensorRT is missing here."""
    if "tensorrt" not in asked:
        return {}
    try:
        import_tensorrt("the tensorrt format")
    except MissingDependency:
        if "onnx" not in asked:
            raise
        return {"tensorrt": f"TensorRT is not installed, so no {layout.ENGINE} was built ({TRT_INSTALL})"}
    return {}


def _check_export_args(*, calibration_images: int, parity_samples: int, kit_samples: int, int8_max_drop: float) -> None:
    for name, value in (
        ("calibration_images", calibration_images),
        ("parity_samples", parity_samples),
        ("kit_samples", kit_samples),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ParamError(name, value, "give an integer >= 1")
    if not 0 <= int8_max_drop < 1:
        raise ParamError("int8_max_drop", int8_max_drop, "give a fraction in [0, 1), e.g. 0.01 for 1 %")


def _export_engine(
    run: RunDir,
    *,
    model,
    data,
    report: ExportReport,
    ref: HeldOut,
    onnx_path: Path,
    precision: str,
    calibration_images: int,
    int8_max_drop: float,
) -> None:
    """Build ``model.engine`` from the ONNX file (at ``precision``) and check it against PyTorch."""
    meta = run.meta
    input_chw = meta.data.input_chw
    calibration = _calibration_images(data, calibration_images) if precision == "int8" else None
    with tempfile.TemporaryDirectory(prefix="edgenas-engine-") as tmp:
        source = precision_onnx(
            model,
            onnx_path=onnx_path,
            precision=precision,
            input_chw=input_chw,
            workdir=Path(tmp),
            calibration=calibration,
        )
        engine = build_engine(
            source,
            engine_path=report.out_dir / FORMATS["tensorrt"].file,
            input_chw=input_chw,
            opt_batch=meta.profile.budget.batch,
        )
    runtime = "tensorrt-int8" if precision == "int8" else "tensorrt-fp16"
    p = check_file(
        engine,
        fmt=FORMATS["tensorrt"],
        ref=ref,
        task=meta.task,
        tol=tolerance(precision, int8_max_drop),
        runtime=runtime,
    )
    report.files["tensorrt"] = engine
    report.parity["tensorrt"] = {"precision": precision, **p}
    write_parity(run, report)


def export_run(
    run_dir: str | Path,
    *,
    formats=("onnx",),
    fp16: bool = False,
    int8: bool = False,
    calibration_images: int = 512,
    parity_samples: int = 256,
    kit_samples: int = 16,
    int8_max_drop: float = DEFAULT_INT8_MAX_DROP,
    calibration_method: str | None = None,
    max_images: int | None = None,
) -> ExportReport:
    """Export a finished run into RUN_DIR/export/ and check every file against PyTorch.

    Writes ``model.onnx``, ``samples.npz`` (``kit_samples`` held-out inputs with PyTorch's
    outputs), ``edgenas_kit.py``, ``parity.json`` and, for ``tensorrt``, ``model.engine``
    (built from the ONNX file, so ``tensorrt`` implies ``onnx``); for ``onnx-int8``, ``model.int8.onnx``
    (ONNX Runtime, QDQ, ``calibration_method`` minmax/entropy/percentile on ``calibration_images``
    training images), gated by accuracy on the test split (``int8_max_drop``); for ``litert``, ``executorch``,
    ``openvino``, ``ncnn`` (and the ``-int8`` variants, gated alike) their files, converted by the runtime's
    plug-in, with a metadata file beside each (``deploy/export/edge_export.py``). When ``onnx`` and ``tensorrt``
    are asked for and TensorRT is not installed, the engine is skipped (``report.skipped``); for ``tflm``,
    ``tflm/model.tflite`` and its firmware bundle (``deploy/export/tflm_export.py``; ``max_images``: test images
    evaluated through TFLM, default all); when
    only ``tensorrt`` is asked for, that raises ``MissingDependency`` before anything is written.
    A parity failure raises ``ParityError`` after every file (and parity.json) is written.
    """
    asked = parse_formats(formats)
    check_options(asked, fp16=fp16, int8=int8, calibration_method=calibration_method, max_images=max_images)
    if calibration_method is not None:
        check_calibration_method(calibration_method)
    _check_export_args(
        calibration_images=calibration_images,
        parity_samples=parity_samples,
        kit_samples=kit_samples,
        int8_max_drop=int8_max_drop,
    )
    skipped = _engine_missing(asked)
    for name in asked:  # an edge runtime's package missing: one line naming its extra, before anything is written
        if is_edge_format(name):
            check_available(FORMATS[name].runtime)
    run = RunDir.open(run_dir)
    with run.lock("export"):
        return _export_locked(
            run,
            asked=asked,
            skipped=skipped,
            fp16=fp16,
            int8=int8,
            calibration_images=calibration_images,
            calibration_method=calibration_method,
            parity_samples=parity_samples,
            kit_samples=kit_samples,
            int8_max_drop=int8_max_drop,
            max_images=max_images,
        )


def _export_locked(
    run: RunDir,
    *,
    asked: tuple[str, ...],
    skipped: dict,
    fp16: bool,
    int8: bool,
    calibration_images: int,
    calibration_method: str | None,
    parity_samples: int,
    kit_samples: int,
    int8_max_drop: float,
    max_images: int | None = None,
) -> ExportReport:
    """``export_run`` with the run directory locked (see there)."""
    out = layout.export_dir(run.path)
    if out.is_symlink() and not out.exists():
        raise RunDirError(
            f"{out} is a symbolic link to {os.readlink(out)}, which does not exist; create that folder, "
            "or remove the link so the export folder can be written there"
        )
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{out} is a file; move it away so the export folder can be written there")
    model, data, task = load_run_model(run, "cpu"), load_run_data(run), run.meta.task
    out.mkdir(exist_ok=True)
    metadata = onnx_metadata(run)
    onnx_path = export_onnx(
        model, path=out / FORMATS["onnx"].file, input_shape=run.meta.data.input_chw, metadata=metadata
    )
    ref = held_out(run, model=model, data=data, samples=max(parity_samples, kit_samples))
    kit.save_samples(
        out / layout.SAMPLES,
        inputs=ref.inputs[:kit_samples],
        outputs=ref.outputs[:kit_samples],
        task=task,
        weights_sha256=metadata["weights_sha256"],
    )
    _copy_kit(out)
    samples = HeldOut(ref.inputs[:kit_samples], ref.labels[:kit_samples], ref.outputs[:kit_samples], ref.source)
    ref = HeldOut(ref.inputs[:parity_samples], ref.labels[:parity_samples], ref.outputs[:parity_samples], ref.source)
    report = ExportReport(out, skipped=skipped, removed=_remove_stale(out, asked, skipped))
    report.files["onnx"] = onnx_path
    report.parity["onnx"] = {
        "precision": "fp32",
        **check_file(onnx_path, fmt=FORMATS["onnx"], ref=ref, task=task, tol=TOLERANCES["fp32"]),
    }
    write_parity(run, report)  # written now too, so a failing engine build leaves the ONNX figures
    if "tensorrt" in asked and "tensorrt" not in skipped:
        _export_engine(
            run,
            model=model,
            data=data,
            report=report,
            ref=ref,
            onnx_path=onnx_path,
            precision="int8" if int8 else "fp16" if fp16 else "fp32",
            calibration_images=calibration_images,
            int8_max_drop=int8_max_drop,
        )
    if "onnx-int8" in asked:
        export_onnx_int8(
            run,
            model=model,
            data=data,
            report=report,
            onnx_path=onnx_path,
            ref=ref,
            samples=samples,
            calibration_images_count=calibration_images,
            calibration_method=calibration_method,
            int8_max_drop=int8_max_drop,
        )
        write_parity(run, report)
    for name in (n for n in asked if is_edge_format(n)):
        export_edge(
            run,
            name=name,
            model=model,
            data=data,
            report=report,
            ref=ref,
            samples=samples,
            metadata=metadata,
            calibration_images_count=calibration_images,
            int8_max_drop=int8_max_drop,
        )
        write_parity(run, report)
    if "tflm" in asked:
        export_tflm(
            run,
            model=model,
            data=data,
            report=report,
            ref=ref,
            calibration_images_count=calibration_images,
            int8_max_drop=int8_max_drop,
            max_images=max_images,
        )
        write_parity(run, report)
    if not report.passed:
        raise parity_error(report)
    return report


def _remove_stale(out: Path, asked: tuple[str, ...], skipped: dict) -> list[Path]:
    """Delete files of formats not built now (with their weights, metadata and evaluation files): they
    were built from an earlier network than the ONNX file just written. (A bundle in its own folder, as tflm/,
    is built from the weights and stays whole.)"""
    removed = []
    for name, fmt in FORMATS.items():
        main = out / fmt.file
        if name == "onnx" or "/" in fmt.file or (name in asked and name not in skipped) or not main.exists():
            continue
        for stale in (main, *engines.companion_files(main), layout.evaluate_json(main)):
            if stale.exists():
                stale.unlink()
                removed.append(stale)
    return removed
