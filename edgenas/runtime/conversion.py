"""What the LiteRT, ExecuTorch, OpenVINO and ncnn plug-ins share when they convert a network.

Quiet converters, calibration images checked once, an artifact written whole or not at all, and
the metadata file beside it that the device kit reads (``edgenas_engines.write_metadata``).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgenas.device_kit import edgenas_engines as engines
from edgenas.errors import MissingDependency, ParamError

TIMING_CALIBRATION_IMAGES = 8  # random images an INT8 network is quantised with when it is only timed


def require(runtime: str, install: str, *packages: str) -> None:
    """``MissingDependency`` naming ``install`` unless every package in ``packages`` is installed
    (found, not imported: importing openvino alone starts its telemetry)."""
    import importlib.util

    for name in packages:
        if importlib.util.find_spec(name) is None:
            raise MissingDependency(f"runtime {runtime} needs {name}: {install}")


def eval_copy(model):
    """A CPU copy of ``model`` in eval mode: conversion never changes the caller's network."""
    return copy.deepcopy(model).cpu().eval()


def calibration_or_random(calibration: np.ndarray | None, input_chw: tuple[int, int, int]) -> np.ndarray:
    """``calibration`` checked (float32 NCHW images of ``input_chw``), or random ones when None (timing only:
    the kernels, so the latency, do not depend on the ranges)."""
    if calibration is None:
        rng = np.random.default_rng(0)
        return rng.standard_normal((TIMING_CALIBRATION_IMAGES, *input_chw), dtype=np.float32)
    calibration = np.asarray(calibration, np.float32)
    if calibration.ndim != 4 or len(calibration) == 0 or tuple(calibration.shape[1:]) != tuple(input_chw):
        raise ParamError("calibration", calibration.shape, f"give at least one NCHW image of {tuple(input_chw)}")
    return calibration


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Converters print progress bars, advice on the root logger and deprecation warnings; a library call does not."""
    root = logging.getLogger()
    hush = logging.Filter("edgenas-hush")  # matches no record name: drops every record
    root.addFilter(hush)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.removeFilter(hush)


@contextlib.contextmanager
def staging(out: Path) -> Iterator[Path]:
    """A temporary folder beside ``out`` to write an artifact's files in; ``publish`` moves them into place."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish(files: list[tuple[Path, Path]]) -> None:
    """Move staged files to their places, the main file last (``files[-1]``): a reader that finds the
    main file finds its companions (an IR's .bin, ncnn's .bin) complete. Each move is atomic."""
    for staged, final in files:
        os.chmod(staged, 0o644)
        os.replace(staged, final)


def write_artifact_metadata(
    path: Path, *, runtime: str, input_chw: tuple[int, int, int], layout: str = "NCHW", **extra
) -> Path:
    """Write the metadata file the device kit reads beside ``path`` (runtime, input layout and shape,
    ``extra``) and return its path; staged beside a staged artifact, it is published with it."""
    return engines.write_metadata(
        path, {"runtime": runtime, "layout": layout, "input_chw": [int(d) for d in input_chw], **extra}
    )
