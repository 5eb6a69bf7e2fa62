"""Building a latency table (``edgenas latency-table``) and checking one against measurements (``latency-check``).

Parts and networks are timed through a ``ModuleTimer``: ``LocalTimer`` times them here on a
runtime, ``DeviceTimer`` sends the same models (ONNX graphs, or an edge runtime's converted files) to a
device server and has them timed there.
"""

from __future__ import annotations

import platform
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from types import SimpleNamespace
from typing import Any, Protocol

import numpy as np
from torch import nn

from edgenas.config.runtimes import RUNTIMES
from edgenas.device_kit import edgenas_kit as kit
from edgenas.errors import DataError, ParamError, UserInputError
from edgenas.runtime.backend import check_available
from edgenas.runtime.device_client import DeviceClient
from edgenas.runtime.latency import (
    measure_module,
    median_ms,
    random_network,
    seeded,
    timing_graph,
)
from edgenas.runtime.latency_table import (
    FEATURES,
    MODELS,
    LatencyTable,
    Part,
    arch_features,
    arch_parts,
    space_parts,
)
from edgenas.runtime.target import Target
from edgenas.search.space import CONV, SEPARABLE, Arch, out_size, random_arch
from edgenas.training.network import Layer, build_network
from edgenas.version import __version__

# Timing per measurement (seconds of timed runs, at least 30 runs): parts are short and many.
PART_SECONDS, NET_SECONDS = 0.1, 0.3
QUICK_PART_SECONDS, QUICK_NET_SECONDS = 0.02, 0.05  # --quick: tests and smoke runs
QUICK_DEVICE_RUNS = 30  # --quick on a device server: timed runs per graph
FIT_SAMPLES = {"lookup": 40, "regression": 60}  # measured random networks the model is fitted on
REPEATS = 20  # networks latency-check measures twice, for the noise floor
ANCHORS = (
    20  # of the table's fit networks, latency-check measures again beside the checked ones: the drift since the build
)
ROUNDS = 3  # a network's figure: the median of this many timings, each in its own pass (see _measure_networks)


class ModuleTimer(Protocol):
    def time_ms(self, module, input_chw: tuple[int, int, int], *, part: bool) -> float:
        """Median ms of one batch through ``module`` (``part``: a piece of a network, timed more briefly)."""

    def built_for(self) -> dict:
        """The runtime, its version, the device and the threads the times are for."""


@dataclass(frozen=True)
class LocalTimer:
    """Times modules here, as ``measure_latency`` times networks (exported to ONNX, run on the kit's runner)."""

    target: Target
    quick: bool = False

    def time_ms(self, module, input_chw: tuple[int, int, int], *, part: bool) -> float:
        seconds = (
            (QUICK_PART_SECONDS if part else QUICK_NET_SECONDS)
            if self.quick
            else (PART_SECONDS if part else NET_SECONDS)
        )
        return measure_module(
            module, target=self.target, input_chw=input_chw, timer=partial(median_ms, min_seconds=seconds)
        )

    def built_for(self) -> dict:
        return local_built_for(self.target)


def local_built_for(t: Target) -> dict:
    """A table's ``built_for`` for timing on this machine: checks ``t.runtime`` is usable here."""
    backend = check_available(t.runtime)
    if not backend.needs_gpu:
        device = kit.cpu_name()
    elif backend.engine == "torch":
        import torch

        device = torch.cuda.get_device_name()
    else:
        device = kit.gpu_name()
    return {**t.keys(), "runtime_version": backend.version(), "device": device, "host": platform.node()}


def profile_target(
    profile,
    *,
    runtime: str | None = None,
    threads: int | None = None,
    dataset: str | None = None,
    classes: int | None = None,
) -> Target:
    """The ``Target`` of a profile: its dataset's input shape and classes, its budget's runtime, threads, batch."""
    from edgenas.training.data import get_spec

    spec = get_spec(dataset or profile.data.dataset)
    h, w = profile.data.input_size or spec.input_size
    c = profile.data.channels or spec.in_channels
    outputs = profile.face.embedding_dim if profile.task == "face" else classes or spec.num_classes
    if outputs is None:
        raise DataError(f"dataset {spec.name} takes its classes from the files: give --classes N")
    return Target(
        profile.task,
        (c, h, w),
        int(outputs),
        runtime or profile.budget.runtime,
        threads or profile.budget.threads,
        profile.budget.batch,
    )


def part_module(part: Part, *, task: str):
    """A network piece as the network runs it: the stem (conv and BatchNorm) or a layer without its
    leading ReLU (the runtime fuses that into the previous convolution), or the pooling and head."""

    class Head(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net.head(x)

    if part.kind == "stem":
        return seeded(
            lambda: build_network(Arch.plain(1, part.c_out // 2), task=task, in_channels=part.c_in, outputs=1).stem
        )
    if part.kind == "head":  # a depth-1 network's final width is twice its width
        return seeded(
            lambda: Head(build_network(Arch.plain(1, part.c_in // 2), task=task, in_channels=1, outputs=part.c_out))
        )
    return layer_module(part.c_in, c_out=part.c_out, stride=part.stride, op=part.op, kernel=part.kernel, lead=False)


def layer_module(c_in: int, *, c_out: int, stride: int, op: int, kernel: int, lead: bool):
    """One layer of the network (``lead``: with its leading ReLU, else without it)."""
    return seeded(
        lambda: nn.Sequential(*list(Layer(c_in, c_out=c_out, stride=stride, op=op, kernel=kernel))[0 if lead else 1 :])
    )


def context_layer(channels: int, *, lead: bool):
    """The layer a part is timed in front of: a 3x3 separable layer keeping ``channels`` (``lead``: with the
    leading ReLU, which fuses into the part's last convolution as the next layer's does in a network)."""
    return layer_module(channels, c_out=channels, stride=1, op=SEPARABLE, kernel=3, lead=lead)


def output_shape(part: Part) -> tuple[int, int, int]:
    """(C, H, W) of what a stem or layer puts out: what its context layer takes."""
    return part.c_out, out_size(part.h, part.stride), out_size(part.w, part.stride)


def in_chain(part: Part, *, task: str):
    """``part`` followed by its context layer: the graph whose time, less the context layer's alone, is the part's."""
    return nn.Sequential(part_module(part, task=task), context_layer(part.c_out, lead=True)).eval()


def _measure_networks(
    archs: list[Arch],
    *,
    timer: ModuleTimer,
    target: Target,
    log: Callable[[str], None],
    what: str,
    rounds: int = ROUNDS,
) -> list[float]:
    """Each network's median over ``rounds`` timings, taken in passes over all of them (a session each),
    so that neither one slow session nor the machine drifting over minutes decides a figure."""

    def net(arch: Arch):  # built again for each pass (seeded: the same weights): 100 networks of tiny hold 2.4 GB
        return random_network(arch, target)

    times = []
    for r in range(rounds):
        times.append([timer.time_ms(net(a), target.input_chw, part=False) for a in archs])
        log(f"{what}: {len(archs)} networks measured ({r + 1}/{rounds} passes)")
    return [float(v) for v in np.median(np.asarray(times), axis=0)]


def _time_parts(
    parts: list[Part], *, timer: ModuleTimer, target: Target, log, rounds: int = ROUNDS
) -> tuple[dict, float]:
    """Each part's time inside a chain, and the empty graph's (one tiny ReLU: the call's own cost).

    A part timed alone pays what a network pays once: the call, and the copy of its output out of
    the runtime (for a 56-wide separable layer at 32x32 here: 22 µs, a third of its 60). So a stem or
    layer is timed followed by a context layer (``in_chain``) and that context layer's time alone is
    taken off: what is left is the part as a network runs it, with the ReLU after it fused. The head
    ends a network and is timed alone, less the empty graph. All are medians over ``rounds`` passes
    over every graph, as networks are (``_measure_networks``).
    """
    contexts = sorted({output_shape(p) for p in parts if p.kind != "head"})
    times, empties, bases = [], [], []
    for r in range(rounds):
        empties.append(timer.time_ms(nn.ReLU().eval(), (1, 1, 1), part=True))
        bases.append([timer.time_ms(context_layer(c, lead=False), (c, h, w), part=False) for c, h, w in contexts])
        times.append(
            [
                timer.time_ms(
                    part_module(p, task=target.task) if p.kind == "head" else in_chain(p, task=target.task),
                    (p.c_in, p.h, p.w),
                    part=True,
                )
                for p in parts
            ]
        )
        log(f"parts: {len(parts)} timed in a chain ({r + 1}/{rounds} passes)")
    empty = float(np.median(empties))
    base = dict(zip(contexts, np.median(np.asarray(bases), axis=0)))
    medians = np.median(np.asarray(times), axis=0)
    entries = {}
    for p, ms in zip(parts, medians):
        off = empty if p.kind == "head" else base[output_shape(p)]
        entries[p.key] = max(float(ms - off), 0.0)
    return entries, empty


def build_table(
    config,
    *,
    target: Target,
    timer: ModuleTimer,
    model: str = "lookup",
    samples: int | None = None,
    seed: int = 0,
    space_name: str = "",
    rounds: int = ROUNDS,
    log: Callable[[str], None] = lambda line: None,
) -> LatencyTable:
    """Time what ``config``'s space is made of on ``timer`` and fit ``model`` (``MODELS``) on ``samples`` random networks."""
    if model not in MODELS:
        raise ParamError("model", model, f"choose one of {', '.join(MODELS)}")
    samples = FIT_SAMPLES[model] if samples is None else samples
    least = 6 if model == "lookup" else 2 * len(FEATURES)  # a few networks per fitted number
    if samples < least:
        raise ParamError("samples", samples, f"the {model} model needs at least {least} networks")
    started = time.monotonic()
    built_for = timer.built_for()
    rng = random.Random(seed)
    archs = [random_arch(config, rng) for _ in range(samples)]
    entries: dict[str, float] = {}
    fitted: tuple[float, float] = (1.0, 0.0)
    coef: tuple[float, ...] = ()
    empty: float | None = None
    if model == "lookup":
        entries, empty = _time_parts(
            space_parts(config, target.input_chw, target.outputs), timer=timer, target=target, log=log, rounds=rounds
        )
        sums = np.asarray([sum(entries[p.key] for p in arch_parts(a, target.input_chw, target.outputs)) for a in archs])
        measured = _measure_networks(archs, timer=timer, target=target, log=log, what="calibration", rounds=rounds)
        # predicted = scale * Σ parts + overhead (the call and the copies in and out), least squares on the relative error.
        m = np.asarray(measured)
        scale, overhead = np.linalg.lstsq(np.stack([sums / m, 1 / m], axis=1), np.ones(len(m)), rcond=None)[0]
        fitted = (float(scale), float(overhead))
    else:
        measured = _measure_networks(archs, timer=timer, target=target, log=log, what="fit", rounds=rounds)
        features = np.asarray([arch_features(a, target.input_chw, target.outputs) for a in archs])
        coef = tuple(float(v) for v in np.linalg.lstsq(features, np.asarray(measured), rcond=None)[0])
    space = {
        "profile": space_name,
        "min_depth": config.min_depth,
        "max_depth": config.max_depth,
        "min_width": config.min_width,
        "max_width": config.max_width,
        "width_step": config.width_step,
        "kernels": sorted({3, *config.micro_kernels}),
    }
    extra = {
        "edgenas_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "fit": {
            "networks": samples,
            "seed": seed,
            "empty_graph_ms": empty,
            "archs": [str(a) for a in archs],
            "measured_ms": measured,
        },
    }
    return LatencyTable(built_for, model, space, entries, *fitted, coef, round(time.monotonic() - started, 2), extra)


def _arch_of(text: str) -> Arch:
    """An architecture from its ``str`` (``d3-w8-csc-355``), as a table's fit records it."""
    depth, width, ops, kernels = str(text).split("-")
    return Arch(
        int(depth[1:]),
        int(width[1:]),
        tuple(CONV if o == "c" else SEPARABLE for o in ops),
        tuple(int(k) for k in kernels),
    )


def _anchors(table: LatencyTable) -> tuple[list[Arch], list[float]]:
    """The table's fit networks (at most ``ANCHORS``) and their figures when it was built."""
    fit = (table.extra or {}).get("fit") or {}
    try:
        archs = [_arch_of(a) for a in fit.get("archs", [])[:ANCHORS]]
        return archs, [float(m) for m in fit.get("measured_ms", [])[: len(archs)]]
    except (ValueError, TypeError):
        return [], []  # an older or hand-written table: no drift figure


def check_table(
    table: LatencyTable,
    *,
    config,
    target: Target,
    timer: ModuleTimer,
    samples: int = 100,
    seed: int = 1,
    rounds: int = ROUNDS,
    log: Callable[[str], None] = lambda line: None,
) -> dict:
    """Predicted vs measured latency of ``samples`` random networks of ``config``'s space: error figures and samples.

    Two floors beside the error: the noise (the first ``REPEATS`` networks measured again, right after)
    and the machine's drift since the table was built (up to ``ANCHORS`` of the table's own fit networks,
    measured in the same passes as the checked ones, against their figures at build time). A table
    cannot predict better than the machine repeats itself across that time: ``drift_pct`` is how much
    slower (+) the machine runs now, and ``within_10pct_drift_removed`` the share within ±10 % once
    the predictions are scaled by it."""
    if samples < 1:
        raise ParamError("samples", samples, "give an integer >= 1")
    rng = random.Random(seed)
    archs = [random_arch(config, rng) for _ in range(samples)]
    predicted = [table.predict_ms(a) for a in archs]  # first: a part the table lacks fails before any timing
    anchors, anchors_then = _anchors(table)
    started = time.monotonic()
    both = _measure_networks(archs + anchors, timer=timer, target=target, log=log, what="check", rounds=rounds)
    measured, anchors_now = both[:samples], both[samples:]
    # The noise floor: the first networks measured again (as many passes), compared with themselves.
    again = _measure_networks(
        archs[:REPEATS], timer=timer, target=target, log=log, what="check, repeated", rounds=rounds
    )
    repeat = [100.0 * abs(a - m) / m for a, m in zip(again, measured)]
    errors = [100.0 * abs(p - m) / m for p, m in zip(predicted, measured)]
    signed = [100.0 * (p - m) / m for p, m in zip(predicted, measured)]
    drift = [100.0 * (n - t) / t for n, t in zip(anchors_now, anchors_then)]
    report = {
        "schema": "edgenas.latency-check/1",
        "table_model": table.model,
        "built_for": table.built_for,
        "measured_on": timer.built_for(),
        "samples": samples,
        "seed": seed,
        "median_abs_error_pct": float(np.median(errors)),
        "p95_abs_error_pct": float(np.percentile(errors, 95)),
        "within_10pct": float(np.mean([e <= 10.0 for e in errors])),
        "mean_signed_error_pct": float(np.mean(signed)),
        "repeat_median_abs_diff_pct": float(np.median(repeat)),
        "repeats": len(repeat),
        "repeat_within_10pct": float(np.mean([r <= 10.0 for r in repeat])),
        "anchors": len(drift),
        "drift_pct": None,
        "drift_median_abs_pct": None,
        "drift_within_10pct": None,
        "within_10pct_drift_removed": None,
        "median_abs_error_drift_removed_pct": None,
        "measure_seconds": round(time.monotonic() - started, 2),
        "networks": [
            {"arch": str(a), "predicted_ms": p, "measured_ms": m, "error_pct": s}
            for a, p, m, s in zip(archs, predicted, measured, signed)
        ],
    }
    if drift:
        factor = float(np.median(np.asarray(anchors_now) / np.asarray(anchors_then)))
        removed = [100.0 * abs(p * factor - m) / m for p, m in zip(predicted, measured)]
        report.update(
            drift_pct=100.0 * (factor - 1),
            drift_median_abs_pct=float(np.median(np.abs(drift))),
            drift_within_10pct=float(np.mean([abs(d) <= 10.0 for d in drift])),
            within_10pct_drift_removed=float(np.mean([e <= 10.0 for e in removed])),
            median_abs_error_drift_removed_pct=float(np.median(removed)),
        )
    return report


def format_check(report: dict) -> str:
    b = report["built_for"]
    return (
        f"latency table ({report['table_model']}) for {b['runtime']} {b['runtime_version']}, {b['threads']} thread(s), "
        f"batch {b['batch']}, input {'x'.join(map(str, b['input_shape']))} on {b['device']}\n"
        f"{report['samples']} random networks: median |error| {report['median_abs_error_pct']:.1f} %, "
        f"p95 |error| {report['p95_abs_error_pct']:.1f} %, within ±10 %: {100 * report['within_10pct']:.0f} %, "
        f"mean signed error {report['mean_signed_error_pct']:+.1f} %\n"
        f"noise floor: {report['repeats']} of them measured again differ by "
        f"{report['repeat_median_abs_diff_pct']:.1f} % (median), {100 * report['repeat_within_10pct']:.0f} % "
        "within ±10 % of their first figure (no table can do better here)"
        + (
            ""
            if not report.get("anchors")
            else f"\ndrift since the table was built: {report['anchors']} of its fit networks run {report['drift_pct']:+.1f} % "
            f"(median), {100 * report['drift_within_10pct']:.0f} % within ±10 % of their build figure; with the "
            f"drift taken off the predictions: median |error| {report['median_abs_error_drift_removed_pct']:.1f} %, "
            f"within ±10 %: {100 * report['within_10pct_drift_removed']:.0f} %"
        )
    )


class DeviceTimer:
    """Times modules on a device server (``edgenas_kit.py serve``): each goes there as the model
    ``LocalTimer`` would time here (``timing_graph``), and the device's median comes back (the device sizes the runs to
    last 0.3 s at least; ``quick``: 5 warm-up and 30 timed runs)."""

    def __init__(self, client: DeviceClient, target: Target, *, quick: bool = False):
        self.client, self.target, self.quick = client, target, quick

    def _bench(self, module, input_chw: tuple[int, int, int], name: str) -> dict:
        t = self.target
        onnx = timing_graph(module, target=t, input_chw=input_chw)
        cpu = not RUNTIMES[t.runtime].needs_gpu
        runs: dict[str, Any] = dict(warmup=5, runs=QUICK_DEVICE_RUNS) if self.quick else {}
        return self.client.bench(
            onnx, runtime=t.runtime, threads=t.threads if cpu else None, batch=t.batch, name=name, **runs
        )

    def time_ms(self, module, input_chw: tuple[int, int, int], *, part: bool) -> float:
        return float(self._bench(module, input_chw, "part.onnx" if part else "network.onnx")["p50_ms"])

    def built_for(self) -> dict:
        bench = self._bench(
            nn.ReLU().eval(), (1, 1, 1), "empty.onnx"
        )  # the device's name and runtime version, as it times
        return {
            **self.target.keys(),
            "runtime_version": str(bench["runtime_version"]),
            "device": bench["device"],
            "host": bench.get("host") or self.client.url,
            "device_url": self.client.url,
        }


def make_timer(
    target: Target, *, device: str | None = None, token: str | None = None, quick: bool = False
) -> ModuleTimer:
    """Times on the device server at ``device`` (with ``token``), else here on ``target.runtime``."""
    if device:
        return DeviceTimer(DeviceClient(device, token=token or ""), target, quick=quick)
    return LocalTimer(target, quick=quick)


def table_space(table: LatencyTable, profile=None):
    """The search config random networks are drawn from: ``profile``'s (which the table must cover), else the table's."""
    if profile is None:
        s = table.space
        return SimpleNamespace(
            **{k: s[k] for k in ("min_depth", "max_depth", "min_width", "max_width", "width_step")},
            micro_kernels=tuple(s["kernels"]),
        )
    missing = table.missing_parts(profile.search)
    if missing:
        raise UserInputError(
            f"the table lacks {len(missing)} parts of profile {profile.name}'s space (e.g. {missing[0]}); "
            f"build one with `edgenas latency-table --profile {profile.name}`"
        )
    return profile.search


def table_target(table: LatencyTable, runtime: str | None) -> Target:
    """The target a table was built for; ``runtime``, when given, must be the table's."""
    b = table.built_for
    if runtime and runtime != b["runtime"]:
        raise ParamError("runtime", runtime, f"the table was built for {b['runtime']}; check it there")
    return Target(b["task"], table.input_chw, int(b["outputs"]), b["runtime"], int(b["threads"]), int(b["batch"]))
