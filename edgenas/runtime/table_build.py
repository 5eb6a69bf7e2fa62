"""Building a latency table (``edgenas latency-table``) and checking one against measurements (``latency-check``).

Parts and networks are timed through a ``ModuleTimer``: each is converted once (``prepare``) and timed in
several passes (``time_ms``). ``LocalTimer`` times them here on a runtime, ``DeviceTimer`` sends the same
models (ONNX graphs, or an edge runtime's converted files) to a device server and has them timed there.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import platform
import random
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple, Protocol

import numpy as np
from torch import nn

from edgenas.config.runtimes import RUNTIMES
from edgenas.device_kit import edgenas_kit as kit
from edgenas.errors import DataError, ParamError, UserInputError
from edgenas.runtime.backend import check_available, convert_into
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
    junction_key,
    space_junctions,
    space_parts,
)
from edgenas.runtime.runners import kit_errors
from edgenas.runtime.target import Target
from edgenas.search.space import CONV, SEPARABLE, Arch, out_size, random_arch
from edgenas.training.network import Layer, build_network
from edgenas.version import __version__

# Timing per measurement (seconds of timed runs, at least 30 runs): parts are short and many.
PART_SECONDS, NET_SECONDS = 0.1, 0.3
QUICK_PART_SECONDS, QUICK_NET_SECONDS = 0.02, 0.05  # --quick: tests and smoke runs
QUICK_DEVICE_RUNS = 30  # --quick on a device server: timed runs per graph
FIT_SAMPLES = {"pairs": 40, "lookup": 40, "regression": 60}  # measured random networks the model is fitted on
REPEATS = 20  # networks latency-check measures twice, for the noise floor
ANCHORS = (
    20  # of the table's fit networks, latency-check measures again beside the checked ones: the drift since the build
)
ROUNDS = 3  # a graph's figure: the median of this many timings, each in its own pass (see _time_in_passes)
PREPARE_LOG_EVERY = 200  # a progress line per this many graphs converted (LiteRT: about a second each)


class Graph(NamedTuple):
    """A module made ready once (converted, or written as a device server is sent it) and timed in every pass."""

    source: Path | Callable[[], nn.Module]  # the artifact; or, for PyTorch (no artifact), the module's builder
    input_chw: tuple[int, int, int]


class ModuleTimer(Protocol):
    def prepare(self, build: Callable[[], nn.Module], input_chw: tuple[int, int, int], *, out: Path) -> Graph:
        """``build()``'s module converted once, its files at ``out`` + a suffix (the caller owns the folder)."""

    def time_ms(self, graph: Graph, *, part: bool) -> float:
        """Median ms of one batch through ``graph`` (``part``: a piece of a network, timed more briefly)."""

    def built_for(self) -> dict:
        """The runtime, its version, the device and the threads the times are for."""


@dataclass(frozen=True)
class LocalTimer:
    """Times modules here, as ``measure_latency`` times networks (converted for the runtime, run on the kit's runner)."""

    target: Target
    quick: bool = False

    def prepare(self, build: Callable[[], nn.Module], input_chw: tuple[int, int, int], *, out: Path) -> Graph:
        t = self.target
        if RUNTIMES[t.runtime].engine == "torch":
            return Graph(build, input_chw)
        return Graph(convert_into(build(), runtime=t.runtime, out=out, input_chw=input_chw, batch=t.batch), input_chw)

    def time_ms(self, graph: Graph, *, part: bool) -> float:
        seconds = (
            (QUICK_PART_SECONDS if part else QUICK_NET_SECONDS)
            if self.quick
            else (PART_SECONDS if part else NET_SECONDS)
        )
        t, timer = self.target, partial(median_ms, min_seconds=seconds)
        if callable(graph.source):
            return measure_module(graph.source(), target=t, input_chw=graph.input_chw, timer=timer)
        x = kit.bench_input(graph.input_chw, t.batch)
        with check_available(t.runtime).open(graph.source, threads=t.threads) as runner, kit_errors():
            return timer(lambda: runner(x))

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


def pair_module(first: Part, second: Part, *, task: str):
    """``second`` running right after ``first`` (a layer with its leading ReLU, which fuses into ``first``)."""
    then = (
        part_module(second, task=task)
        if second.kind == "head"
        else layer_module(
            second.c_in, c_out=second.c_out, stride=second.stride, op=second.op, kernel=second.kernel, lead=True
        )
    )
    return nn.Sequential(part_module(first, task=task), then).eval()


def output_shape(part: Part) -> tuple[int, int, int]:
    """(C, H, W) of what a stem or layer puts out: what its context layer takes."""
    return part.c_out, out_size(part.h, part.stride), out_size(part.w, part.stride)


def in_chain(part: Part, *, task: str):
    """``part`` followed by its context layer: the graph whose time, less the context layer's alone, is the part's."""
    return nn.Sequential(part_module(part, task=task), context_layer(part.c_out, lead=True)).eval()


def _time_in_passes(
    graphs: list[tuple[Callable[[], nn.Module], tuple[int, int, int], bool]],
    *,
    timer: ModuleTimer,
    log: Callable[[str], None],
    what: str,
    rounds: int = ROUNDS,
    jobs: int = 1,
) -> list[float]:
    """Each of ``graphs`` (a builder, its input, whether it is a part) converted once (by ``jobs`` processes),
    then timed in ``rounds`` passes over all of them, one at a time, each pass in another order: a figure is the
    median of its passes, so that neither one slow moment, nor the graph timed before it, nor the machine
    drifting over minutes decides it. The converted files live in a temporary folder until the end."""

    def converted(done: int) -> None:
        if done % PREPARE_LOG_EVERY == 0 or done == len(graphs):
            log(f"{what}: {done} of {len(graphs)} graphs converted")

    with tempfile.TemporaryDirectory(prefix="edgenas-table-") as tmp:
        outs = [Path(tmp) / f"g{i}" for i in range(len(graphs))]
        with contextlib.ExitStack() as stack:
            if jobs > 1:  # conversions only: nothing is timed while they run
                context = multiprocessing.get_context("spawn")  # no fork of a process holding torch's threads
                pool = stack.enter_context(ProcessPoolExecutor(jobs, mp_context=context, initializer=_one_thread))
                futures = [pool.submit(timer.prepare, b, chw, out=o) for (b, chw, _), o in zip(graphs, outs)]
                prepared = (f.result() for f in futures)
            else:
                prepared = (timer.prepare(b, chw, out=o) for (b, chw, _), o in zip(graphs, outs))
            ready = []
            for graph in prepared:
                ready.append(graph)
                converted(len(ready))
        times = np.zeros((rounds, len(graphs)))
        for r in range(rounds):
            # Each pass in its own order: a graph timed after the same neighbour, with its buffers where the same
            # allocations put them, can be slow in every pass alike (ONNX Runtime, AMD EPYC: a few graphs 30-55 %
            # slow in all 3 passes of a fixed order, none in shuffled ones; docs/lab/latency-tables.md).
            for i in random.Random(r).sample(range(len(graphs)), len(graphs)):
                times[r, i] = timer.time_ms(ready[i], part=graphs[i][2])
            log(f"{what}: {len(graphs)} graphs timed ({r + 1}/{rounds} passes)")
    return [float(v) for v in np.median(times, axis=0)]


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)  # a conversion process among ``jobs`` others: one core each


def empty_graph() -> nn.Module:
    """One tiny ReLU: a graph that costs only the call."""
    return nn.ReLU().eval()


def _network_graphs(archs: list[Arch], target: Target) -> list:
    # built when converted (seeded: the same weights each time), never all at once: 100 networks of tiny hold 2.4 GB
    return [(partial(random_network, a, target), target.input_chw, False) for a in archs]


def _part_graphs(parts: list[Part], *, task: str, pairs: list[tuple[Part, Part]] | None) -> tuple[list, Callable]:
    """What a table's parts are timed as, and how to turn those times into its entries (and junctions).

    ``pairs`` None (the ``lookup`` model): each stem or layer followed by a context layer (``in_chain``), that
    context layer's time alone taken off; the head alone, less the empty graph. A part timed alone pays what a
    network pays once: the call, and the copy of its output out of the runtime (for a 56-wide separable layer at
    32x32 on one machine: 22 µs, a third of its 60); the context layer takes that off.

    ``pairs`` given (the ``pairs`` model): each part alone less the empty graph (one tiny ReLU: the call's own
    cost), and each pair (``pair_module``) as the junction: T(a then b) - T(a) - T(b) + T(empty), what running
    them side by side changes. Σ entries + Σ junctions + T(empty) is then exact for any one part and any pair.
    """
    empty: list = [(empty_graph, (1, 1, 1), True)]
    if pairs is None:
        contexts = sorted({output_shape(p) for p in parts if p.kind != "head"})
        graphs = (
            empty
            + [(partial(context_layer, c, lead=False), (c, h, w), False) for c, h, w in contexts]
            + [
                (partial(part_module if p.kind == "head" else in_chain, p, task=task), (p.c_in, p.h, p.w), True)
                for p in parts
            ]
        )

        def lookup_entries(times: list[float]) -> tuple[dict, dict, float]:
            e, base = times[0], dict(zip(contexts, times[1 : 1 + len(contexts)]))
            own = times[1 + len(contexts) :]
            return (
                {p.key: max(ms - (e if p.kind == "head" else base[output_shape(p)]), 0.0) for p, ms in zip(parts, own)},
                {},
                e,
            )

        return graphs, lookup_entries
    graphs = (
        empty
        + [(partial(part_module, p, task=task), (p.c_in, p.h, p.w), True) for p in parts]
        + [(partial(pair_module, a, b, task=task), (a.c_in, a.h, a.w), True) for a, b in pairs]
    )

    def pair_entries(times: list[float]) -> tuple[dict, dict, float]:
        e = times[0]
        alone = {p.key: ms for p, ms in zip(parts, times[1 : 1 + len(parts)])}
        junctions = {
            junction_key(a, b): ms - alone[a.key] - alone[b.key] + e
            for (a, b), ms in zip(pairs, times[1 + len(parts) :])
        }
        return {k: max(ms - e, 0.0) for k, ms in alone.items()}, junctions, e

    return graphs, pair_entries


def build_table(
    config,
    *,
    target: Target,
    timer: ModuleTimer,
    model: str = "pairs",
    samples: int | None = None,
    seed: int = 0,
    space_name: str = "",
    rounds: int = ROUNDS,
    jobs: int = 1,
    log: Callable[[str], None] = lambda line: None,
) -> LatencyTable:
    """Time what ``config``'s space is made of on ``timer`` and fit ``model`` (``MODELS``) on ``samples`` random networks."""
    if model not in MODELS:
        raise ParamError("model", model, f"choose one of {', '.join(MODELS)}")
    samples = FIT_SAMPLES[model] if samples is None else samples
    least = 2 * len(FEATURES) if model == "regression" else 6  # a few networks per fitted number
    if samples < least:
        raise ParamError("samples", samples, f"the {model} model needs at least {least} networks")
    started = time.monotonic()
    built_for = timer.built_for()
    rng = random.Random(seed)
    archs = [random_arch(config, rng) for _ in range(samples)]
    entries: dict[str, float] = {}
    junctions: dict[str, float] | None = None
    fitted: tuple[float, float] = (1.0, 0.0)
    coef: tuple[float, ...] = ()
    empty: float | None = None
    nets = _network_graphs(archs, target)
    if model == "regression":
        measured = _time_in_passes(nets, timer=timer, log=log, what="fit networks", rounds=rounds, jobs=jobs)
        features = np.asarray([arch_features(a, target.input_chw, target.outputs) for a in archs])
        coef = tuple(float(v) for v in np.linalg.lstsq(features, np.asarray(measured), rcond=None)[0])
    else:
        chw, outputs = target.input_chw, target.outputs
        pairs = space_junctions(config, chw, outputs) if model == "pairs" else None
        parts = space_parts(config, chw, outputs)
        graphs, to_entries = _part_graphs(parts, task=target.task, pairs=pairs)
        log(f"{len(parts)} parts{f' and {len(pairs)} pairs of them' if pairs else ''} and {samples} networks to time")
        # parts and the calibration networks in the same passes: the machine's drift touches both alike
        times = _time_in_passes(
            graphs + nets, timer=timer, log=log, what="parts and networks", rounds=rounds, jobs=jobs
        )
        entries, junctions, empty = to_entries(times[: len(graphs)])
        measured = times[len(graphs) :]
        unscaled = LatencyTable(built_for, model, {}, entries, junctions=junctions if pairs else None)
        sums = np.asarray([unscaled.model_ms(a) for a in archs])
        # predicted = scale * Σ parts + overhead (the call and the copies in and out), least squares on the relative error.
        m = np.asarray(measured)
        scale, overhead = np.linalg.lstsq(np.stack([sums / m, 1 / m], axis=1), np.ones(len(m)), rcond=None)[0]
        fitted = (float(scale), float(overhead))
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
    return LatencyTable(
        built_for,
        model,
        space,
        entries,
        *fitted,
        coef,
        round(time.monotonic() - started, 2),
        extra,
        junctions if model == "pairs" else None,
    )


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
    jobs: int = 1,
    log: Callable[[str], None] = lambda line: None,
) -> dict:
    """Predicted vs measured latency of ``samples`` random networks of ``config``'s space: error figures and samples.

    Two floors beside the error: the noise (the first ``REPEATS`` networks measured a second time, converted
    again, in the same passes) and the machine's drift since the table was built (up to ``ANCHORS`` of the table's own fit networks,
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
    # The noise floor: the first networks measured a second time (converted again), in the same passes.
    again = archs[:REPEATS]
    every = _network_graphs(archs + anchors + again, target)
    times = _time_in_passes(every, timer=timer, log=log, what="check", rounds=rounds, jobs=jobs)
    measured, anchors_now = times[:samples], times[samples : samples + len(anchors)]
    again_ms = times[samples + len(anchors) :]
    repeat = [100.0 * abs(a - m) / m for a, m in zip(again_ms, measured)]
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

    def _bench(self, graph: bytes, name: str) -> dict:
        t = self.target
        cpu = not RUNTIMES[t.runtime].needs_gpu
        runs: dict[str, Any] = dict(warmup=5, runs=QUICK_DEVICE_RUNS) if self.quick else {}
        return self.client.bench(
            graph, runtime=t.runtime, threads=t.threads if cpu else None, batch=t.batch, name=name, **runs
        )

    def prepare(self, build: Callable[[], nn.Module], input_chw: tuple[int, int, int], *, out: Path) -> Graph:
        out.write_bytes(timing_graph(build(), target=self.target, input_chw=input_chw))
        return Graph(out, input_chw)

    def time_ms(self, graph: Graph, *, part: bool) -> float:
        assert isinstance(graph.source, Path), "prepare writes the graph a device server is sent"
        sent = graph.source.read_bytes()
        return float(self._bench(sent, "part.onnx" if part else "network.onnx")["p50_ms"])

    def built_for(self) -> dict:
        empty = timing_graph(nn.ReLU().eval(), target=self.target, input_chw=(1, 1, 1))
        bench = self._bench(empty, "empty.onnx")  # the device's name and runtime version, as it times
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
