"""Budgets in the search: candidates over a latency budget are never trained, and the winner meets it."""

import pytest

from edgenas.config.profile import Budget, load_profile
from edgenas.run.discover import discover
from edgenas.run.evaluator import check_budget
from edgenas.run.rundir import RunDir
from edgenas.runtime.latency import measure_latency
from edgenas.runtime.target import Target
from edgenas.search.space import Arch, count_macs, count_params

# 32x32 digits, widths 16 to 64: the widest is 14x the narrowest's MACs, so the timings see compute
LATENCY_SPACE = {"depths": (2, 3), "widths": (16, 64), "width_step": 16, "input_size": (32, 32)}


@pytest.mark.slow
def test_latency_budget_skips_slow_candidates_and_the_winner_meets_it(tmp_path, budgeted_profile):
    def latency(width):
        return measure_latency(
            Arch.plain(2, width),
            Target(task="classify", input_chw=(1, 32, 32), outputs=10, runtime="onnxruntime-cpu", threads=1),
        )

    widest, wider, narrowest = latency(64), latency(32), latency(16)
    assert widest > 2 * narrowest, (widest, narrowest)  # 14x the MACs: the measurement sees compute
    budget = (max(wider, narrowest) * narrowest) ** 0.5  # the narrowest fits; 48 and 64 clearly do not
    path = budgeted_profile(
        tmp_path / "latency.toml",
        {"runtime": "onnxruntime-cpu", "threads": 1, "max_latency_ms": round(budget, 4)},
        **LATENCY_SPACE,
    )
    summary = discover(str(path), out=tmp_path / "run", device="cpu", log=lambda m: None)

    journal = RunDir(tmp_path / "run").journal()
    skipped = [r for r in journal if r["status"] == "skipped"]
    trained = [r for r in journal if r["status"] != "skipped"]
    assert skipped and trained
    for r in skipped:
        assert r["latency_ms"] > budget and "latency" in r["reason"] and "max_latency_ms" in r["reason"]
    for r in trained:
        assert r["latency_ms"] is not None and r["latency_ms"] <= budget
    assert journal[0]["status"] == "skipped" and journal[0]["width"] == 64  # the widest never trained
    # over_budget = "narrow": the depth stage went on at the width that fits (depth 2, then depth 3)
    depth = [(r["depth"], r["width"], r["status"]) for r in journal if r["stage"] == "depth"]
    assert (2, 16, "trained") in depth and any(d == 3 for d, _, _ in depth), depth
    assert summary["latency_ms"] <= budget and summary["budget"]["max_latency_ms"] == round(budget, 4)

    # (a second timing of the exported winner is not compared with the budget here: two timings on a
    # shared 2-core machine differed by 40 % in the suite's runs; benchmarks/ and `edgenas compare` measure that)
    # latencies are measured once per architecture and kept: a resumed search measures nothing again
    measured = (tmp_path / "run" / "latency.jsonl").read_text()
    assert len(RunDir(tmp_path / "run").latencies()) >= len(journal) - 1
    discover(str(path), out=tmp_path / "run", device="cpu", resume=True, log=lambda m: None)
    assert (tmp_path / "run" / "latency.jsonl").read_text() == measured
    assert RunDir(tmp_path / "run").journal() == journal


def test_params_and_macs_budgets_are_checked_without_measuring():
    arch = Arch.plain(3, 16)
    size = (count_params(arch, 1, 10), count_macs(arch, in_channels=1, num_classes=10, input_size=(8, 8)))
    never = lambda arch: pytest.fail("latency measured although a free budget already failed")  # noqa: E731
    check = check_budget(arch, size=size, budget=Budget(max_params=100, max_latency_ms=1.0), latency_of=never)
    assert "params" in check.reason and check.latency_ms is None and check.params == size[0]
    check = check_budget(arch, size=size, budget=Budget(max_macs=100, max_latency_ms=1.0), latency_of=never)
    assert "MACs" in check.reason and check.macs == size[1]
    assert check_budget(arch, size=size, budget=Budget(), latency_of=never).reason == ""


def test_builtin_target_profiles():
    cpu = load_profile("cpu-1thread").budget
    assert (cpu.runtime, cpu.threads, cpu.batch) == ("onnxruntime-cpu", 1, 1) and cpu.max_latency_ms > 0
    assert load_profile("jetson-fp16").budget.runtime == "tensorrt-fp16"


def test_workers_with_a_cpu_latency_budget_on_the_cpu_are_refused(tmp_path, budgeted_profile):
    from click.testing import CliRunner

    from edgenas.cli import main

    path = budgeted_profile(
        tmp_path / "latency.toml", {"runtime": "onnxruntime-cpu", "threads": 1, "max_latency_ms": 1.0}, **LATENCY_SPACE
    )
    r = CliRunner().invoke(
        main, ["discover", "--profile", str(path), "--out", str(tmp_path / "o"), "--device", "cpu", "--workers", "2"]
    )
    assert r.exit_code == 2 and "--workers 2: a CPU latency budget" in r.output and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_an_int8_budget_times_candidates_quantised_and_a_resume_measures_nothing(
    tmp_path, monkeypatch, budgeted_profile
):
    import numpy as np
    import onnx
    from conftest import torch_threads

    import edgenas.runtime.onnxruntime as latency_mod  # the ONNX Runtime plug-in quantises what it times
    from edgenas.run.loading import load_run_data
    from edgenas.runtime.onnx_quantize import calibration_images

    real, seen = latency_mod.quantize_ort_int8, []

    def spy(onnx_path, **kw):
        path = real(onnx_path, **kw)
        seen.append(([n.op_type for n in onnx.load(str(path)).graph.node], np.array(kw["calibration"])))
        return path

    monkeypatch.setattr(latency_mod, "quantize_ort_int8", spy)
    path = budgeted_profile(
        tmp_path / "int8.toml",
        {"runtime": "onnxruntime-cpu-int8", "threads": 1, "max_latency_ms": 1000.0},
        depths=(2, 3),
        widths=(4, 12),
        width_step=4,
    )
    with torch_threads(1):
        discover(str(path), out=tmp_path / "run", device="cpu", log=lambda m: None)
    run = RunDir(tmp_path / "run")
    assert len(seen) == len(run.latencies()) >= 3 and all(r["latency_ms"] > 0 for r in run.journal())
    for ops, calibration in seen:  # every timed file was the quantised graph, calibrated on 8 training images
        assert ops.count("QuantizeLinear") >= 3 and "ConvInteger" not in ops
        np.testing.assert_array_equal(calibration, calibration_images(load_run_data(run), 8))
    measured = (tmp_path / "run" / "latency.jsonl").read_text()
    seen.clear()
    with torch_threads(1):
        discover(str(path), out=tmp_path / "run", device="cpu", resume=True, log=lambda m: None)
    assert seen == [] and (tmp_path / "run" / "latency.jsonl").read_text() == measured
