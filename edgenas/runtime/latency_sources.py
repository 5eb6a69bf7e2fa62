"""Where a candidate's latency comes from: measured on a local runtime (more sources: a remote device, a table).

The search talks to its cost model through ``LatencySource`` (once-for-all's efficiency-predictor
idea), so a measured runtime, a device server or a latency table are interchangeable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from edgenas.runtime.latency import check_runtime_available, measure_latency
from edgenas.search.space import Arch


class LatencySource(Protocol):
    def latency_ms(self, arch: Arch) -> float:
        """Median latency (ms) of one batch through ``arch``'s deployed network."""

    def identity(self) -> dict:
        """What the figures are valid for (runtime, threads, batch, input shape, device), for records."""


@dataclass(frozen=True)
class LocalRuntime:
    """Measured here, on ``runtime`` (ONNX Runtime, TensorRT or PyTorch), with a randomly initialised network."""

    task: str
    input_chw: tuple[int, int, int]
    outputs: int
    runtime: str
    threads: int = 1
    batch: int = 1
    calibration: np.ndarray | None = field(default=None, compare=False, repr=False)  # INT8 runtimes: images to quantise with

    def check(self) -> None:
        check_runtime_available(self.runtime)

    def latency_ms(self, arch: Arch) -> float:
        return measure_latency(arch, task=self.task, input_chw=self.input_chw, outputs=self.outputs,
                               runtime=self.runtime, threads=self.threads, batch=self.batch,
                               calibration=self.calibration)

    def identity(self) -> dict:
        return {"source": "measured", "runtime": self.runtime, "threads": self.threads, "batch": self.batch,
                "input_shape": list(self.input_chw)}
