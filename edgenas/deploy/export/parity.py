"""Parity: an exported file's outputs against PyTorch's on held-out images, within the precision's tolerance."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from edgenas.deploy.export import layout
from edgenas.deploy.export.formats import (
    DEFAULT_INT8_MAX_DROP,
    FORMATS,
    ExportFormat,
    Tolerance,
    parse_formats,
    tolerance,
)
from edgenas.device_kit import edgenas_kit as kit
from edgenas.errors import ParityError, UserInputError
from edgenas.run.loading import load_run_data, load_run_model
from edgenas.run.rundir import RunDir, write_json_atomic
from edgenas.runtime.backend import backend_of
from edgenas.runtime.runners import kit_errors
from edgenas.training.augment import normalize
from edgenas.training.data import Split
from edgenas.version import __version__


@dataclass(frozen=True)
class HeldOut:
    """Held-out images (test split first, then validation), normalised, with PyTorch's outputs."""

    inputs: np.ndarray  # float32 NCHW
    labels: np.ndarray  # int64
    outputs: np.ndarray  # float32: logits, or embeddings for face
    source: str  # e.g. "test" or "test+val"


def held_out(run: RunDir, *, model, data, samples: int) -> HeldOut:
    """``samples`` held-out images in a fixed, seeded order, and the PyTorch model's outputs on them."""
    parts: list[Split] = []
    source: list[str] = []
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
        outputs = torch.cat([model(inputs[i : i + 256]) for i in range(0, len(inputs), 256)])
    return HeldOut(inputs.numpy(), y[order].numpy(), outputs.float().numpy(), "+".join(source))


def _parity_figures(ref: HeldOut, *, actual: np.ndarray, task: str, tol: Tolerance) -> dict:
    report = kit.parity_report(ref.outputs, actual=actual, task=task, **tol.as_kwargs())
    if task == "classify" and actual.shape == ref.outputs.shape:
        report["reference_accuracy"] = float(np.mean(ref.outputs.argmax(1) == ref.labels))
        report["accuracy"] = float(np.mean(actual.argmax(1) == ref.labels))
    report["held_out"] = ref.source
    return report


def check_file(
    path: Path, *, fmt: ExportFormat, ref: HeldOut, task: str, tol: Tolerance, runtime: str | None = None
) -> dict:
    """Run ``ref.inputs`` through an exported file on its runtime; the kit's parity figures."""
    with kit_errors(), backend_of(runtime or fmt.runtime).open(path) as runner:
        actual = kit.run_batched(runner, ref.inputs)
        report = _parity_figures(ref, actual=actual, task=task, tol=tol)
        report.update(
            file=path.name,
            sha256=kit.file_sha256(path),
            runtime=runner.runtime,
            runtime_version=str(runner.runtime_version),
            device=runner.device,
        )
    return report


@dataclass
class ExportReport:
    """What ``export_run`` / ``recheck_parity`` wrote and found; ``lines()`` is what the CLI prints."""

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
            check = "parity"
            if "accuracy_gate" in p:  # an INT8 file is judged by accuracy on the test split, not by logits
                g, check = p["accuracy_gate"], "accuracy gate"
                figures.insert(
                    0,
                    f"test {g['metric']} {g['int8']:.2f}% vs PyTorch {g['pytorch']:.2f}% on {g['images']} "
                    f"images, {g['drop_pp']:.2f} pp lost, at most {g['max_drop_pp']:g} pp allowed",
                )
            verdict = "passed" if p["passed"] else "FAILED: " + "; ".join(p["failures"])
            out.append(
                f"{name} ({p['precision']}): {self.out_dir / p['file']}: {check} {verdict} ({', '.join(figures)})"
            )
        out += [f"removed {path}: it was built from the previous model.onnx" for path in self.removed]
        return out


def parity_error(report: ExportReport) -> ParityError:
    failed = [
        f"{name} {p['precision']}: " + "; ".join(p["failures"]) for name, p in report.parity.items() if not p["passed"]
    ]
    return ParityError(f"parity check failed for {' | '.join(failed)} (figures in {report.out_dir / layout.PARITY})")


def recheck_parity(
    run_dir: str | Path,
    *,
    formats=("onnx",),
    parity_samples: int = 256,
    int8_max_drop: float = DEFAULT_INT8_MAX_DROP,
    model=None,
    data=None,
) -> ExportReport:
    """Re-check the files in RUN_DIR/export against the run's PyTorch weights; write parity.json.

    Raises ``ParityError`` (after writing parity.json) when any format misses its tolerance.
    """
    run = RunDir.open(run_dir)
    out = layout.export_dir(run.path)
    formats = parse_formats(formats)
    model = model if model is not None else load_run_model(run, "cpu")
    data = data if data is not None else load_run_data(run)
    ref = held_out(run, model=model, data=data, samples=parity_samples)
    task = run.meta.task
    previous = _read_parity(out)
    report = ExportReport(out)
    for name in formats:
        fmt = FORMATS[name]
        path = out / fmt.file
        if not path.is_file():
            raise UserInputError(f"{path} does not exist: export the {name} format of {run.path} first")
        precision = {"tensorrt": previous.get(name, {}).get("precision", "fp32"), "onnx-int8": "int8"}.get(name, "fp32")
        runtime = "tensorrt-int8" if name == "tensorrt" and precision == "int8" else None
        p = check_file(path, fmt=fmt, ref=ref, task=task, tol=tolerance(precision, int8_max_drop), runtime=runtime)
        report.files[name] = path
        report.parity[name] = {"precision": precision, **p}
    write_parity(run, report)
    if not report.passed:
        raise parity_error(report)
    return report


def _read_parity(out: Path) -> dict:
    path = out / layout.PARITY
    try:
        return json.loads(path.read_text()).get("formats", {}) if path.is_file() else {}
    except (ValueError, AttributeError, OSError):
        return {}  # a damaged parity.json is rewritten below


def write_parity(run: RunDir, report: ExportReport) -> None:
    write_json_atomic(
        report.out_dir / layout.PARITY,
        {
            "edgenas_version": __version__,
            "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "run_dir": str(run.path),
            "weights_sha256": kit.file_sha256(run.path / RunDir.WEIGHTS),  # the model.pt these figures are of
            "passed": report.passed,
            "formats": report.parity,
            "skipped": report.skipped,
        },
    )
