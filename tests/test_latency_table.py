"""Latency tables: the space's parts, building and checking a table here, and a search that predicts with one."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner

import edgenas
from edgenas.cli import main
from edgenas.config.profile import load_profile
from edgenas.errors import ProfileError, UserInputError
from edgenas.runtime.latency import random_network
from edgenas.runtime.latency_table import (
    FEATURES,
    SCHEMA,
    LatencyTable,
    arch_features,
    arch_parts,
    junction_key,
    read_table,
    space_junctions,
    space_parts,
    table_from_dict,
)
from edgenas.runtime.table_build import (
    Graph,
    build_table,
    check_table,
    format_check,
    in_chain,
    local_built_for,
    pair_module,
    part_module,
)
from edgenas.runtime.target import Target
from edgenas.search.space import (
    OPS,
    Arch,
    count_macs,
    random_arch,
    space_kernels,
    width_grid,
)

TINY_SPACE = """description = "tiny's input and kernels, a few depths and widths: a table that builds in seconds"
[search]
min_depth = 10
max_depth = 11
min_width = 16
max_width = 18
width_step = 2
micro_kernels = [5]
micro_width_floor = true   # the table covers widths 16-18 only
[budget]
runtime = "onnxruntime-cpu"
threads = 1
[data]
dataset = "cifar10"
"""


DEMO_PART = (
    Path(__file__)
    .parents[1]
    .joinpath("profiles", "demo.toml")
    .read_text()
    .replace("max_depth = 6", "max_depth = 4")
    .replace("max_width = 24", "max_width = 12")
    .replace("min_width = 8", "min_width = 12\nmicro_width_floor = true  # width 12 only: a pairs table in seconds")
)


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_random_arch_stays_in_the_space_and_is_seeded():
    config = load_profile("tiny").search
    archs = [random_arch(config, random.Random(3)) for _ in range(2)]
    assert archs[0] == archs[1]
    rng = random.Random(0)
    drawn = [random_arch(config, rng) for _ in range(300)]
    assert all(config.min_depth <= a.depth <= config.max_depth and a.width in width_grid(config) for a in drawn)
    assert {o for a in drawn for o in a.ops} == set(OPS)
    assert {k for a in drawn for k in a.kernels} == set(space_kernels(config)) == {3, 5}
    assert {a.width for a in drawn} == set(width_grid(config))  # 25 widths, 300 draws


def test_parts_follow_the_chain():
    arch = Arch(4, 8, (0, 1, 0, 1), (3, 5, 7, 3))
    assert [p.key for p in arch_parts(arch, (3, 16, 16), 10)] == [
        "stem:3>16@16x16",
        "sep3/s1:16>8@16x16",
        "conv5/s2:8>16@16x16",
        "sep7/s2:16>32@8x8",
        "conv3/s1:32>32@4x4",
        "head:32>10@4x4",
    ]


@pytest.mark.parametrize("name,chw", [("tiny", (3, 32, 32)), ("demo", (1, 8, 8))])
def test_the_space_parts_cover_every_random_network(name, chw):
    config = load_profile(name).search
    keys = {p.key for p in space_parts(config, chw, 10)}
    rng = random.Random(1)
    used = {p.key for _ in range(300) for p in arch_parts(random_arch(config, rng), chw, 10)}
    assert used <= keys
    narrowed = Arch(
        config.min_depth + 2, config.min_width + 1, (1,) * (config.min_depth + 2), (3,) * (config.min_depth + 2)
    )
    assert {p.key for p in arch_parts(narrowed, chw, 10)} <= keys  # micro stages leave the width grid
    below = narrowed.with_width(max(1, config.min_width - 5))
    assert {p.key for p in arch_parts(below, chw, 10)} <= keys  # ... and go below min_width (the published rule)
    assert len(keys) == len(set(keys))


def test_the_cli_offers_every_model():
    from edgenas.cli.latency import latency_table
    from edgenas.runtime.latency_table import MODELS

    (model,) = [p for p in latency_table.params if p.name == "model"]
    assert tuple(model.type.choices) == MODELS and model.default == MODELS[0]  # the CLI spells them out: no import


def test_regression_features_count_the_networks_macs():
    rng = random.Random(2)
    for _ in range(20):
        arch = random_arch(load_profile("tiny").search, rng)
        f = dict(zip(FEATURES, arch_features(arch, (3, 32, 32), 10)))
        convs = sum(v for k, v in f.items() if k.endswith("_mmacs")) * 1e6
        head = 4 * arch.width * 10
        assert convs + head == pytest.approx(
            count_macs(arch, in_channels=3, num_classes=10, input_size=(32, 32)), rel=1e-9
        )
        assert f["sep_layers"] + f["conv_layers"] == arch.depth


@pytest.mark.parametrize("task,outputs", [("classify", 10), ("face", 16)])
def test_part_modules_have_the_parts_shapes(task, outputs):
    arch = Arch(3, 6, (0, 1, 0), (5, 3, 7))
    for part in arch_parts(arch, (3, 12, 12), outputs):
        x = torch.zeros(2, part.c_in, part.h, part.w)
        y = part_module(part, task=task)(x)
        if part.kind == "head":
            assert y.shape == (2, outputs)
            continue
        assert y.shape[:2] == (2, part.c_out)
        chained = in_chain(part, task=task)
        assert chained(x).shape == y.shape and isinstance(chained[1][0], torch.nn.ReLU)  # the next layer's ReLU
    parts = arch_parts(arch, (3, 12, 12), outputs)
    for first, second in zip(parts, parts[1:]):  # a pairs table's pair: the second's output from the first's input
        pair = pair_module(first, second, task=task)
        z = pair(torch.zeros(2, first.c_in, first.h, first.w))
        assert z.shape == part_module(second, task=task)(torch.zeros(2, second.c_in, second.h, second.w)).shape
        assert second.kind == "head" or isinstance(pair[1][0], torch.nn.ReLU)


class CostModelTimer:
    """A ``ModuleTimer`` whose figures follow a known cost model, so a table's arithmetic can be checked exactly:
    a call costs CALL_MS, each convolution or linear node NODE_MS plus MAC_MS per multiply-accumulate, and
    copying the output out of the runtime COPY_MS per element (what a part timed alone pays and a chain does not).
    SEAM_MS (0 here) is paid where a node follows one of another kind (depthwise or dense, kernel size), as a
    runtime that changes a tensor's memory layout between its kernels does: a layer's cost then depends on its
    neighbours."""

    CALL_MS, NODE_MS, MAC_MS, COPY_MS = 0.005, 0.001, 2e-6, 1e-5
    SEAM_MS = 0.0

    def prepare(self, build, input_chw, *, out):
        return Graph(build, input_chw)

    def time_ms(self, graph, *, part):
        cost, kinds = [], []

        def count(layer, inputs, output):
            if isinstance(layer, torch.nn.Conv2d):
                macs = output.numel() * layer.in_channels // layer.groups * layer.kernel_size[0] * layer.kernel_size[1]
                kind = (layer.groups > 1, layer.kernel_size)
            else:
                macs, kind = layer.in_features * layer.out_features, "linear"
            seam = self.SEAM_MS if kinds and kinds[-1] != kind else 0.0
            kinds.append(kind)
            cost.append(self.NODE_MS + self.MAC_MS * macs + seam)

        module = graph.source()
        hooks = [
            m.register_forward_hook(count)
            for m in module.modules()
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
        ]
        try:
            with torch.no_grad():
                y = module(torch.zeros(1, *graph.input_chw))
        finally:
            for h in hooks:
                h.remove()
        return self.CALL_MS + self.COPY_MS * y.numel() + sum(cost)

    def built_for(self):
        return {
            "runtime": "onnxruntime-cpu",
            "runtime_version": "cost-model",
            "device": "cost-model",
            "threads": 1,
            "batch": 1,
            "input_shape": [3, 16, 16],
            "task": "classify",
            "outputs": 10,
        }


class SeamCostModelTimer(CostModelTimer):
    """The cost model with a cost at every seam between nodes of different kinds."""

    SEAM_MS = 0.05


def _ms(timer, build, input_chw) -> float:
    return timer.time_ms(Graph(build, input_chw), part=True)


def test_parts_timed_in_a_chain_add_up_to_the_network():
    """Under a cost model with a per-call and an output-copy cost, the lookup table predicts every network
    exactly: each part's context layer takes the copy and the call off. Parts timed alone would not add up
    (the copy of each part's output counted once per layer): the second half shows the model would see it."""
    config = SimpleNamespace(min_depth=3, max_depth=7, min_width=8, max_width=12, width_step=2, micro_kernels=(5,))
    target, timer = Target("classify", (3, 16, 16), 10, "onnxruntime-cpu"), CostModelTimer()
    table = build_table(config, target=target, timer=timer, model="lookup", samples=8, rounds=1)
    report = check_table(table, config=config, target=target, timer=timer, samples=50, rounds=1)
    assert report["p95_abs_error_pct"] < 1e-6 and report["within_10pct"] == 1.0, report["p95_abs_error_pct"]
    assert table.scale == pytest.approx(1.0) and table.overhead_ms == pytest.approx(timer.CALL_MS + timer.COPY_MS)
    alone = {
        p.key: _ms(timer, lambda p=p: part_module(p, task="classify"), (p.c_in, p.h, p.w)) - timer.CALL_MS
        for p in space_parts(config, target.input_chw, target.outputs)
    }
    wide = Arch.plain(7, 12)
    summed = sum(alone[p.key] for p in arch_parts(wide, target.input_chw, target.outputs)) + timer.CALL_MS
    network = Target(task="classify", input_chw=(3, 16, 16), outputs=10, runtime="onnxruntime-cpu")
    assert summed > 1.1 * _ms(timer, lambda: random_network(wide, network), target.input_chw)
    assert report["anchors"] == 8 and report["drift_pct"] == pytest.approx(0.0, abs=1e-9)


def test_where_a_layer_costs_what_its_neighbours_make_it_the_pairs_table_is_exact_and_the_chain_is_not():
    """With a cost at each seam between nodes of different kinds (as ONNX Runtime pays reordering tensors between
    its blocked and plain layouts), a part's cost depends on what follows it: the lookup table, which times each
    part before one fixed layer, misses networks by up to 11 % (p95 4 %); the pairs table, which times every pair of
    neighbours, predicts every network exactly, with the empty graph as its overhead and no scale."""
    config = SimpleNamespace(min_depth=3, max_depth=6, min_width=8, max_width=10, width_step=2, micro_kernels=(5,))
    target, timer = Target("classify", (3, 16, 16), 10, "onnxruntime-cpu"), SeamCostModelTimer()
    pairs = build_table(config, target=target, timer=timer, model="pairs", samples=8, rounds=1)
    exact = check_table(pairs, config=config, target=target, timer=timer, samples=60, rounds=1)
    assert exact["p95_abs_error_pct"] < 1e-6, exact["p95_abs_error_pct"]
    assert pairs.scale == pytest.approx(1.0) and pairs.overhead_ms == pytest.approx(timer.CALL_MS + timer.COPY_MS)
    j = pairs.junctions or {}
    first = "conv3/s1:16>8@16x16"  # a dense 3x3 node: one more dense 3x3 node after it is no seam, a depthwise one is
    assert j[f"{first}+sep3/s2:8>16@16x16"] - j[f"{first}+conv3/s2:8>16@16x16"] == pytest.approx(timer.SEAM_MS)
    assert read_table_text(pairs) == pairs and pairs.missing_parts(config) == []
    chain = build_table(config, target=target, timer=timer, model="lookup", samples=8, rounds=1)
    missed = check_table(chain, config=config, target=target, timer=timer, samples=60, rounds=1)
    assert missed["p95_abs_error_pct"] > 3.0, missed["p95_abs_error_pct"]


class AfterItsNeighbourTimer(SeamCostModelTimer):
    """The seam cost model, but every seventh graph runs 50 % slower when it is timed right after the graph
    listed before it: what timing in a fixed order did to a few graphs (docs/lab/latency-tables.md)."""

    def __init__(self):
        self.place: dict[int, int] = {}
        self.previous = -2

    def prepare(self, build, input_chw, *, out):
        graph = super().prepare(build, input_chw, out=out)
        self.place[id(graph)] = int(out.name[1:])  # g<i>: its place in the list
        return graph

    def time_ms(self, graph, *, part):
        place = self.place[id(graph)]
        slow = place % 7 == 0 and self.previous == place - 1
        self.previous = place
        return (1.5 if slow else 1.0) * super().time_ms(graph, part=part)


def test_a_graph_slow_after_its_neighbour_does_not_bias_the_table():
    """Each pass times the graphs in its own order, so a graph slowed by the one listed before it is slow in at
    most one of the three passes and the medians are the cost model's: the table stays exact. Timed in the
    listed order every pass, those graphs would be slow three times and the table and check off."""
    config = SimpleNamespace(min_depth=3, max_depth=5, min_width=8, max_width=10, width_step=2, micro_kernels=(5,))
    target, timer = Target("classify", (3, 16, 16), 10, "onnxruntime-cpu"), AfterItsNeighbourTimer()
    table = build_table(config, target=target, timer=timer, model="pairs", samples=8)
    report = check_table(table, config=config, target=target, timer=timer, samples=40)
    assert report["p95_abs_error_pct"] < 1e-6 and report["repeat_within_10pct"] == 1.0, report["p95_abs_error_pct"]


def read_table_text(table):
    return table_from_dict(json.loads(json.dumps(table.to_dict())), "t")


class SlowerCostModelTimer(CostModelTimer):
    """The same cost model on a machine that has since become 20 % slower."""

    def time_ms(self, graph, *, part):
        return 1.2 * super().time_ms(graph, part=part)


def test_the_check_tells_the_machines_drift_from_the_tables_error():
    """A table checked after the machine slowed by 20 % misses every network by -16.7 %; the check measures its
    fit networks again, names the drift (+20 %) and shows that without it the table would be exact."""
    config = SimpleNamespace(min_depth=3, max_depth=5, min_width=8, max_width=10, width_step=2, micro_kernels=(5,))
    target = Target("classify", (3, 16, 16), 10, "onnxruntime-cpu")
    table = build_table(config, target=target, timer=CostModelTimer(), samples=8, rounds=1)
    report = check_table(table, config=config, target=target, timer=SlowerCostModelTimer(), samples=30, rounds=1)
    assert report["within_10pct"] == 0.0 and report["mean_signed_error_pct"] == pytest.approx(100 / 1.2 - 100)
    assert report["drift_pct"] == pytest.approx(20.0) and report["drift_within_10pct"] == 0.0
    assert report["within_10pct_drift_removed"] == 1.0 and report["median_abs_error_drift_removed_pct"] < 1e-6
    assert "run +20.0 % (median)" in format_check(report)


def _regression_table(built_for: dict, *, per_layer_ms: float, fixed_ms: float = 0.0) -> dict:
    coef = [fixed_ms if f == "one" else per_layer_ms if f.endswith("_layers") else 0.0 for f in FEATURES]
    return {
        "schema": SCHEMA,
        "model": "regression",
        "built_for": built_for,
        "space": {},
        "entries": {},
        "coef": coef,
        "build_seconds": 0.0,
    }


def test_table_files_round_trip_and_bad_ones_are_one_line(tmp_path):
    built_for = local_built_for(Target("classify", (1, 8, 8), 10, "onnxruntime-cpu"))
    table = table_from_dict(_regression_table(built_for, per_layer_ms=1.0, fixed_ms=0.5), "t")
    assert table.predict_ms(Arch.plain(3, 8)) == pytest.approx(3.5)
    path = tmp_path / "t.json"
    path.write_text(json.dumps(table.to_dict()))
    assert read_table(path) == table
    cases = {
        "missing.json": None,
        "bad.json": "{",
        "other.json": json.dumps({"schema": "edgenas.bench/2"}),
        "short.json": json.dumps({**table.to_dict(), "coef": [1.0]}),
    }
    for name, text in cases.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        with pytest.raises(UserInputError) as e:
            read_table(tmp_path / name)
        assert "\n" not in str(e.value) and name in str(e.value)


def _profile_with_table(tmp_path, ci_profile, table: dict, budget: str) -> str:
    (tmp_path / "table.json").write_text(json.dumps(table))
    text = ci_profile.read_text() + f'\n[budget]\n{budget}\nlatency_table = "{tmp_path / "table.json"}"\n'
    (tmp_path / "p.toml").write_text(text)
    return str(tmp_path / "p.toml")


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"threads": 2}, "built for threads 2, not 1"),
        ({"input_shape": [3, 32, 32]}, "built for input_shape [3, 32, 32], not [1, 8, 8]"),
        ({"runtime_version": "0.0.1"}, "built for runtime_version '0.0.1'"),
    ],
)
def test_a_table_built_for_another_target_is_refused_before_run_json(tmp_path, ci_profile, change, needle):
    built_for = local_built_for(Target("classify", (1, 8, 8), 10, "onnxruntime-cpu")) | change
    profile = _profile_with_table(
        tmp_path, ci_profile, _regression_table(built_for, per_layer_ms=1.0), "max_latency_ms = 2.5"
    )
    r = _cli("discover", "--profile", profile, "--out", tmp_path / "run", "--device", "cpu")
    assert r.exit_code == 2, r.output
    line = r.output.strip().splitlines()[-1]
    assert line.startswith("edgenas: error:") and "budget.latency_table" in line and needle in line, line
    assert not (tmp_path / "run").exists()


def test_a_search_predicts_from_the_table_and_measures_the_winner(tmp_path, ci_profile, one_thread):
    """1 ms per layer in the table: every depth-3 candidate is over the 2.5 ms budget, never measured."""
    built_for = local_built_for(Target("classify", (1, 8, 8), 10, "onnxruntime-cpu"))
    profile = _profile_with_table(
        tmp_path, ci_profile, _regression_table(built_for, per_layer_ms=1.0), "max_latency_ms = 2.5"
    )
    r = _cli("discover", "--profile", profile, "--out", tmp_path / "run", "--device", "cpu")
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    journal = [json.loads(line) for line in (tmp_path / "run" / "journal.jsonl").read_text().splitlines()]
    assert {r["latency_ms"] for r in journal if r["depth"] == 2} == {2.0}
    assert all(r["status"] == "skipped" and r["latency_ms"] == 3.0 for r in journal if r["depth"] == 3)
    assert summary["arch"]["depth"] == 2 and summary["latency_predicted_ms"] == 2.0
    assert 0 < summary["latency_ms"] < 1.0  # measured for real: a depth-2 net on 8x8 takes microseconds
    assert summary["latency_source"]["source"] == "table" and summary["latency_source"]["threads"] == 1
    assert summary["latency_measured_on"]["source"] == "measured" and summary["latency_seconds"] >= 0
    latencies = [json.loads(line) for line in (tmp_path / "run" / "latency.jsonl").read_text().splitlines()]
    assert latencies and all(
        r["source"]["source"] == "table" for r in latencies
    )  # predictions, kept as measurements are


def test_a_table_timed_on_a_device_is_taken_without_it_on_the_profiles_settings(tmp_path, ci_profile, one_thread):
    """Searching on a GPU box with a table built on the device: its name and runtime version cannot be
    checked without the device, the rest must be the profile's; the winner is measured here."""
    here = local_built_for(Target("classify", (1, 8, 8), 10, "onnxruntime-cpu"))
    built_for = here | {"device": "Cortex-A72 (on the Pi)", "runtime_version": "1.16.3", "device_url": "http://pi:8765"}
    profile = _profile_with_table(
        tmp_path, ci_profile, _regression_table(built_for, per_layer_ms=1.0), "max_latency_ms = 2.5"
    )
    summary = edgenas.discover(profile, dataset="digits", out=tmp_path / "run", device="cpu", log=lambda line: None)
    assert summary["latency_source"]["device"] == "Cortex-A72 (on the Pi)" and summary["latency_predicted_ms"] == 2.0
    assert summary["latency_measured_on"] == {
        "source": "measured",
        "runtime": "onnxruntime-cpu",
        "threads": 1,
        "batch": 1,
        "input_shape": [1, 8, 8],
    }
    bad = _profile_with_table(
        tmp_path, ci_profile, _regression_table(built_for | {"batch": 8}, per_layer_ms=1.0), "max_latency_ms = 2.5"
    )
    with pytest.raises(ProfileError, match="was built for batch 8, not 1"):
        edgenas.discover(bad, dataset="digits", out=tmp_path / "run2", device="cpu", log=lambda line: None)


def _check(table, *extra):
    r = _cli("latency-check", table, "--quick", *extra)
    assert r.exit_code == 0, r.output
    return r


@pytest.mark.slow
@pytest.mark.parametrize(
    "space,model,samples", [("demo", "regression", 24), ("tiny-part", "lookup", 8), ("demo-part", "pairs", 8)]
)
def test_build_and_check_a_table_here(tmp_path, space, model, samples):
    """Built here on onnxruntime-cpu, 1 thread, and checked on 100 random networks of the space.

    --quick tables are timed in short slices (20 ms of runs per part), so a margin is asserted. Measured on
    dev-xeon, idle and with the other core busy, at 1 and 2 torch threads: the lookup table's median |error|
    2.0-2.3 %, p95 4.9-5.4 %, all within ±10 %; the regression table's median 19.6-20.2 %. On dev-cpu (AMD EPYC,
    whose seams the lookup model misses, see docs/lab/latency-tables.md) the tiny-part lookup table's median was
    0.6-6.2 % in 8 quick builds (4 idle, 4 beside a busy core) and 10.6 % in a suite run on 2 pytest-xdist
    workers, so its margin is 20 %; the same table with kernels 3 and 5 swapped is off by 22 %, with separable
    and full convolutions swapped by 30 % (scale and overhead refitted; units are absorbed by the fit, and the
    arithmetic is checked exactly under a cost model above). The pairs table of demo's width 12 (dev-cpu, AMD
    EPYC, the other core busy): median 2.7-32 % in six quick builds. A junction is the difference of four timings of a few µs,
    timed once: one slow session moves it, so a quick pairs table gets the regression's margin (a junction with
    the wrong sign or key is off by far more); its arithmetic is checked exactly under a cost model above, its
    accuracy by a full build (docs/lab/latency-tables.md).
    """
    profile = "demo"
    if space != "demo":
        profile = tmp_path / f"{space}.toml"
        profile.write_text(TINY_SPACE if space == "tiny-part" else DEMO_PART)
    table = tmp_path / "table.json"
    r = _cli(
        "latency-table",
        "--profile",
        profile,
        "--runtime",
        "onnxruntime-cpu",
        "--threads",
        1,
        "--quick",
        "--model",
        model,
        "--samples",
        samples,
        *(["--jobs", 2] if model == "pairs" else []),  # converted by two processes, timed here
        "--out",
        table,
    )
    assert r.exit_code == 0, r.output
    built = json.loads(table.read_text())
    assert built["schema"] == SCHEMA and built["model"] == model and built["built_for"]["threads"] == 1
    assert built["build_seconds"] > 0 and len(built["fit"]["measured_ms"]) == samples
    assert built["built_for"]["input_shape"] == ([3, 32, 32] if space == "tiny-part" else [1, 8, 8])
    if model == "pairs":  # every seam of the space, each op and kernel on either side
        assert len(built["junctions"]) == len(space_junctions(load_profile(profile).search, (1, 8, 8), 10))
    r = _check(table, "--samples", 100, "--json", tmp_path / "check.json")
    report = json.loads((tmp_path / "check.json").read_text())
    assert report["samples"] == 100 and len(report["networks"]) == 100
    assert re.search(r"100 random networks: median \|error\| [\d.]+ %", r.output)
    assert report["median_abs_error_pct"] < (20 if model == "lookup" else 60), report["median_abs_error_pct"]
    assert 0 <= report["within_10pct"] <= 1 and report["p95_abs_error_pct"] >= report["median_abs_error_pct"]


def test_a_pairs_table_floors_a_noisy_sum_below_zero_at_the_empty_graph():
    """Under load, a quick pairs table's junctions (each the difference of four timings of a few µs) summed below
    zero for one of its calibration networks, and the build stopped with "a latency must be ... >= 0"."""
    built_for = {"input_shape": [1, 8, 8], "outputs": 10}
    arch = Arch.from_dict({"depth": 2, "width": 4, "ops": [0, 0], "kernels": [3, 3]})
    parts = arch_parts(arch, (1, 8, 8), 10)
    entries = {p.key: 0.001 for p in parts}
    junctions = {junction_key(a, b): -0.002 for a, b in zip(parts, parts[1:])}
    noisy = LatencyTable(built_for, "pairs", {}, entries, junctions=junctions, extra={"fit": {"empty_graph_ms": 0.004}})
    assert (
        noisy.model_ms(arch) == pytest.approx(len(parts) * 0.001 - (len(parts) - 1) * 0.002)
        and noisy.model_ms(arch) < 0
    )
    assert noisy.predict_ms(arch) == 0.004  # no network runs faster than the empty graph
    scaled = LatencyTable(built_for, "pairs", {}, entries, junctions=junctions, scale=2.0, overhead_ms=0.1)
    assert scaled.predict_ms(arch) == pytest.approx(0.1 + 2 * noisy.model_ms(arch))  # above the floor: the model's
    unfloored = LatencyTable(built_for, "pairs", {}, entries, junctions=junctions)  # no empty graph recorded: refused
    with pytest.raises(UserInputError, match="a latency must be a finite number >= 0"):
        unfloored.predict_ms(arch)


def test_check_refuses_another_runtime_and_an_uncovered_profile(tmp_path):
    built_for = local_built_for(Target("classify", (1, 8, 8), 10, "onnxruntime-cpu"))
    table = _regression_table(built_for, per_layer_ms=1.0) | {"model": "lookup", "coef": [], "entries": {"x": 1.0}}
    (tmp_path / "t.json").write_text(json.dumps(table))
    r = _cli("latency-check", tmp_path / "t.json", "--runtime", "torch-cpu")
    assert r.exit_code == 2 and "--runtime torch-cpu: the table was built for onnxruntime-cpu" in r.output, r.output
    r = _cli("latency-check", tmp_path / "t.json", "--profile", "demo")
    assert r.exit_code == 2 and "the table lacks" in r.output and "profile demo" in r.output, r.output


def test_a_regression_table_floors_what_it_extrapolates_below_zero():
    """A linear fit extrapolated to a network narrower than those it was fitted on (the micro stages narrow
    below min_width) went below zero, and the search stopped with "rebuild the table" (which cannot help)."""
    built_for = {"input_shape": [1, 8, 8], "outputs": 10}
    coef = [0.0] * len(FEATURES)
    coef[FEATURES.index("one")], coef[FEATURES.index("conv_layers")] = 0.05, -0.04  # fitted on wider networks
    narrow = Arch.from_dict({"depth": 4, "width": 3, "ops": [1, 1, 1, 1], "kernels": [3, 3, 3, 3]})
    raw = float(sum(c * x for c, x in zip(coef, arch_features(narrow, (1, 8, 8), 10))))
    assert raw < 0
    fitted = LatencyTable(built_for, "regression", {}, {}, coef=tuple(coef), extra={"fit": {"empty_graph_ms": 0.007}})
    assert fitted.predict_ms(narrow) == 0.007
    fastest = LatencyTable(
        built_for, "regression", {}, {}, coef=tuple(coef), extra={"fit": {"measured_ms": [0.02, 0.011]}}
    )
    assert fastest.predict_ms(narrow) == 0.011  # no empty graph timed (regression tables): the fastest fitted network
    unknown = LatencyTable(built_for, "regression", {}, {}, coef=tuple(coef))  # neither recorded: refused
    with pytest.raises(UserInputError, match="a latency must be a finite number >= 0"):
        unknown.predict_ms(narrow)
