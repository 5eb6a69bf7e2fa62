"""Where a candidate's latency comes from: measured here, on a device server, or predicted by a latency table.

The search talks to its cost model through ``CostSource`` alone (once-for-all's efficiency-predictor
idea): each source implements the whole protocol, so callers never ask which one they hold beyond
its ``kind`` (the same words as ``Budget.latency_from``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from edgenas.config.profile import LATENCY_FROM
from edgenas.config.runtimes import RUNTIMES
from edgenas.errors import DeviceUnavailable, UserInputError
from edgenas.runtime.backend import check_available
from edgenas.runtime.device_client import DeviceClient
from edgenas.runtime.latency import measure_latency, random_network, timing_graph
from edgenas.runtime.latency_table import LatencyTable
from edgenas.runtime.target import Target
from edgenas.search.space import Arch

MEASURED, DEVICE, TABLE = LATENCY_FROM


class CostSource(Protocol):
    kind: str  # "measured" (here), "device" (a device server) or "table" (predicted): Budget.latency_from
    ahead: bool  # worth measuring ahead of need, on another thread, while this machine trains (run/ahead/latency_prefetch.py)

    def check(self) -> None:
        """Refuse (one line, exit 2) a source that cannot give figures: a runtime missing here, a device not answering."""

    def latency_ms(self, arch: Arch) -> float:
        """Median latency (ms) of one batch through ``arch``'s deployed network (``measure(prepare(arch))``)."""

    def prepare(self, arch: Arch) -> Any:
        """What ``measure`` needs for ``arch``, built on the caller's thread (torch stays there); each source
        has its own kind of prepared network (hence ``Any``: only the source that made it measures it)."""

    def measure(self, prepared: Any) -> float:
        """The median latency (ms) of a ``prepare``d network; may run on another thread where ``ahead``."""

    def identity(self) -> dict:
        """What the figures are valid for (source, runtime, threads, batch, input shape, device), for records."""


@dataclass(frozen=True)
class MeasuredHere:
    """Measured on this machine, on ``target.runtime``'s plug-in, with a randomly initialised network."""

    target: Target
    calibration: np.ndarray | None = field(default=None, compare=False, repr=False)  # INT8: images to quantise with
    kind = MEASURED
    ahead = False

    def check(self) -> None:
        check_available(self.target.runtime)

    def latency_ms(self, arch: Arch) -> float:
        return self.measure(self.prepare(arch))

    def prepare(self, arch: Arch) -> Arch:
        return arch

    def measure(self, prepared: Arch) -> float:
        return measure_latency(prepared, self.target, calibration=self.calibration)

    def identity(self) -> dict:
        t = self.target
        return {
            "source": self.kind,
            "runtime": t.runtime,
            "threads": t.threads,
            "batch": t.batch,
            "input_shape": list(t.input_chw),
        }


class OnDevice:
    """Measured on a device server (``edgenas_kit.py serve``): each network goes there as the graph
    ``measure_latency`` would time here, and its median comes back. Safe to ``measure`` from two
    threads (the device queues the requests and times one model at a time)."""

    kind = DEVICE
    ahead = True  # the device works while this machine trains

    def __init__(self, client: DeviceClient, target: Target):
        self.client, self.target = client, target
        self._status: dict | None = None
        self._measured_on: dict = {}  # device, host, runtime_version of the device's first answer

    @property
    def threads(self) -> int | None:
        return None if RUNTIMES[self.target.runtime].needs_gpu else self.target.threads

    def check(self) -> None:
        try:
            status = self.client.status(retry_s=0)
        except DeviceUnavailable as e:
            raise UserInputError(
                f"budget.device {self.client.url} does not answer ({e.reason}): start "
                "`python edgenas_kit.py serve --token-file FILE` on the device first"
            ) from None
        runtime = self.target.runtime
        if runtime not in status.get("runtimes", []):
            raise UserInputError(
                f"budget.runtime {runtime}: the device at {self.client.url} cannot run it "
                f"(it has {', '.join(status.get('runtimes', [])) or 'no runtime'})"
            )
        self._status = status

    def latency_ms(self, arch: Arch) -> float:
        return self.measure(self.prepare(arch))

    def prepare(self, arch: Arch) -> tuple[str, bytes]:
        """The network's name and graph (the ONNX exporter is not thread-safe: on the caller's thread)."""
        return str(arch), timing_graph(random_network(arch, self.target), target=self.target)

    def measure(self, prepared: tuple[str, bytes]) -> float:
        name, graph = prepared
        record = self.client.bench(
            graph, runtime=self.target.runtime, threads=self.threads, batch=self.target.batch, name=f"{name}.onnx"
        )
        if not self._measured_on:
            self._measured_on = {k: record.get(k) for k in ("device", "host", "runtime_version")}
        return float(record["p50_ms"])

    def identity(self) -> dict:
        where = self._measured_on
        if not where:
            if self._status is None:
                self._status = self.client.status()
            where = {"device": self._status["device"], "host": self._status["host"]}
        return {
            "source": self.kind,
            "url": self.client.url,
            **where,
            "runtime": self.target.runtime,
            "threads": self.threads,
            "batch": self.target.batch,
            "input_shape": list(self.target.input_chw),
        }


@dataclass(frozen=True)
class FromTable:
    """Predicted by a latency table (``edgenas latency-table``): no device time during the search.
    The table was checked against its target when it was read (``run/evaluator.table_source``)."""

    table: LatencyTable
    path: str
    kind = TABLE
    ahead = False

    def check(self) -> None:
        """Nothing to reach: the table is in memory."""

    def latency_ms(self, arch: Arch) -> float:
        return self.table.predict_ms(arch)

    def prepare(self, arch: Arch) -> Arch:
        return arch

    def measure(self, prepared: Arch) -> float:
        return self.table.predict_ms(prepared)

    def identity(self) -> dict:
        return {**self.table.built_for, "source": self.kind, "table": self.path, "model": self.table.model}
