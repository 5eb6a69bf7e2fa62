"""tools/gpu_check.py: a --quick CPU run end to end, the time box, and the figures it derives."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import gpu_check
import pytest
from conftest import TOOLS

STEPS = ("pytest_gpu", "bench_cifar10", "bench_fashionmnist", "rank_check", "synthetic_data", "search_w1", "search_w2")


@pytest.mark.slow
def test_quick_cpu_run_writes_every_step_and_the_summary(tmp_path):
    out = tmp_path / "figures"
    r = subprocess.run(
        [sys.executable, str(TOOLS / "gpu_check.py"), "--quick", "--device", "cpu", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["device"] == "cpu" and summary["quick"] is True and list(summary["steps"]) == list(STEPS)
    assert summary["environment"]["torch"] and "cuda" in summary["environment"]
    gpu = summary["steps"]["pytest_gpu"]
    assert gpu["status"] == "skipped" and "CUDA" in gpu["reason"] and gpu["exit_code"] is None
    for name in STEPS[1:]:
        step = summary["steps"][name]
        assert step["status"] == "ok" and step["exit_code"] == 0 and step["wall_s"] > 0 and step["command"], (
            name,
            step,
        )
        assert json.loads((out / f"{name}.json").read_text()) == json.loads(json.dumps(step["figures"]))
    bench = summary["steps"]["bench_fashionmnist"]["figures"]
    assert bench["complete"] and set(bench["runs"]) == {"reference_loop", "edgenas_reference", "edgenas_fast"}
    assert bench["data"]["dataset"] == "fashionmnist" and bench["arch"].startswith("d4-w8")
    rank = summary["steps"]["rank_check"]["figures"]
    assert rank["complete"] and len(rank["candidates"]) == 8 and "reference_vs_fast" in rank["kendall_tau"]
    for name, workers in (("search_w1", 1), ("search_w2", 2)):
        fig = summary["steps"][name]["figures"]
        assert fig["workers"] == workers and fig["finished"] and fig["candidates_trained"] >= 1
        assert fig["requests_answered"] == fig["summary"]["candidates"] and fig["candidates_trained_per_hour"] > 0
        assert (out / "runs" / name / "journal.jsonl").exists()
    # every target has a figure, at tiny scale: no verdict
    assert len(summary["targets"]) == 8 and all(
        t["met"] is None and t["verdict"] == "quick: n/a" for t in summary["targets"]
    )
    assert "quick: n/a" in r.stdout and "not measured" not in r.stdout


def test_time_box_stops_the_step_and_its_children(tmp_path):
    pid_file = tmp_path / "child.pid"
    script = (
        "import signal, subprocess, sys, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
        f"c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); open({str(pid_file)!r}, 'w').write(str(c.pid)); "
        "time.sleep(60)"
    )
    t0 = time.monotonic()
    record = gpu_check.run_boxed([sys.executable, "-c", script], box_s=2, log=tmp_path / "step.log", grace_s=1)
    assert record["timed_out"] and record["exit_code"] == -9 and time.monotonic() - t0 < 20  # SIGINT ignored: SIGKILL
    child = int(pid_file.read_text())
    for _ in range(50):  # the orphaned child is reaped by init a moment after the group's SIGKILL
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"child {child} of the stopped step still runs")


def test_a_step_that_stops_on_sigint_exits_at_the_box(tmp_path):
    record = gpu_check.run_boxed([sys.executable, "-c", "import time; time.sleep(60)"], box_s=1, log=tmp_path / "s.log")
    assert record["timed_out"] and record["exit_code"] != 0 and record["wall_s"] < 15
    assert "KeyboardInterrupt" in (tmp_path / "s.log").read_text()


def test_search_figures_of_a_stopped_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    records = [
        {"key": "a", "status": "trained", "seconds": 10.0, "speculative": False},
        {"key": "b", "status": "trained", "seconds": 12.0, "speculative": True},
        {"key": "c", "status": "skipped", "seconds": 0.0},
    ]
    (run / "journal.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"key": "torn')
    log = tmp_path / "search.log"
    log.write_text(
        "[depth #1] d10-w64-ssssssssss-3333333333 e10: epoch 1/10 loss 2.1 train 20.0% (3s elapsed)\n"
        "[depth #1] d10-w64-ssssssssss-3333333333 e10: trained, val acc 80.00% in 10.0s\n"
        "[depth speculative] d11-w64-sssssssssss-33333333333 e11: trained, val acc 81.00% in 12.0s\n"
        "[depth #2] d11-w64-sssssssssss-33333333333 e11: trained, acc 81.00% (journal or speculation)\n"
        "[depth #3] d12-w64-ssssssssssss-333333333333 e12: epoch 1/12 loss 2.0 train 21.0% (30s elapsed)\n"
    )
    fig = gpu_check.search_figures_of(run, log, {"wall_s": 360.0, "timed_out": True, "time_box_s": 360.0})
    assert not fig["finished"] and fig["stopped_at_time_box"] and fig["journal_records"] == 3
    assert (
        fig["candidates_trained"] == 2
        and fig["candidates_trained_speculatively"] == 1
        and fig["candidates_skipped"] == 1
    )
    assert fig["requests_answered"] == 2 and fig["candidate_train_seconds"] == 22.0
    assert math.isclose(fig["candidates_trained_per_hour"], 20.0) and math.isclose(
        fig["requests_answered_per_hour"], 20.0
    )
    row = gpu_check.search_target("search_w4", {"profile": "tiny", "workers": 4, **fig})
    assert row["met"] is None and "not finished" in row["measured"] and "20/h" in row["measured"]


def _bench(ref_ips: float, fast_ips: float, *, ref_acc: float = 90.0, acc: float = 90.5) -> dict:
    def run(ips, val, x_floor):
        return {"steady_images_per_s": ips, "val_acc": val, "x_floor": x_floor}

    return {
        "arch": "d20-w64-ss-33",
        "data": {"val_images": 5000},
        "floor": {"seconds_per_epoch": 0.5},
        "runs": {
            "reference_loop": run(1000.0, ref_acc, 50.0),
            "edgenas_reference": run(ref_ips, acc, 2.5),
            "edgenas_fast": run(fast_ips, acc, 1.5),
        },
    }


def test_target_verdicts():
    ok = gpu_check.bench_targets("bench_cifar10", _bench(6000.0, 25000.0))
    assert [r["met"] for r in ok] == [True, True] and "6.00x" in ok[0]["measured"]
    slow = gpu_check.bench_targets("bench_cifar10", _bench(4000.0, 19000.0))
    assert [r["met"] for r in slow] == [False, False]
    off = gpu_check.bench_targets(
        "bench_cifar10", _bench(6000.0, 25000.0, ref_acc=80.0)
    )  # 10 points apart on 5000 images
    assert off[0]["met"] is False
    assert [r["met"] for r in gpu_check.bench_targets("bench_cifar10", {})] == [None, None]
    assert gpu_check.floor_target(_bench(6000.0, 25000.0))["met"] is True
    assert gpu_check.floor_target({})["measured"] == "not measured"
    assert gpu_check.tau_target({"kendall_tau": {"reference_vs_fast": 0.69}, "candidates": [{}] * 8})["met"] is False
    assert gpu_check.tau_target({})["met"] is None
    done = gpu_check.search_target(
        "search_w1",
        {
            "finished": True,
            "wall_s": 420.0,
            "candidates_trained": 60,
            "candidates_trained_per_hour": 514.0,
            "requests_answered": 58,
            "requests_answered_per_hour": 497.0,
            "workers": 1,
        },
    )
    assert done["met"] is True and "finished in 420 s" in done["measured"]
    results = {"bench_cifar10": {"figures": _bench(6000.0, 19000.0)}, "search_w1": {"figures": {}}}
    verdicts = [t["verdict"] for t in gpu_check.targets(results, quick=False)]
    assert verdicts == ["met", "NOT met"] + ["not measured"] * 3 + ["met", "not measured"]
    assert all(t["verdict"] in ("quick: n/a", "not measured") for t in gpu_check.targets(results, quick=True))


def test_pytest_figures_from_junit_xml(tmp_path):
    (tmp_path / "pytest_gpu.xml").write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.test_train" name="test_graphs"/>'
        '<testcase classname="tests.test_train_fast" name="test_fast"><failure message="AssertionError: 3 &gt; 2&#10;more">tb</failure></testcase>'
        '<testcase classname="tests.test_export" name="test_trt"><error message="">tb</error></testcase>'
        '<testcase classname="tests.test_latency" name="test_ort_cuda"><skipped message="needs onnxruntime-gpu"/></testcase>'
        "</testsuite></testsuites>"
    )
    ctx = gpu_check.Context(tmp_path, tmp_path, "cuda", gpu_check.FULL, "tiny")
    fig = gpu_check.pytest_figures(ctx, {})
    assert (fig["tests"], fig["n_passed"], fig["n_failed"], fig["n_skipped"]) == (4, 1, 2, 1)
    assert fig["failed"] == ["tests.test_train_fast::test_fast: AssertionError: 3 > 2", "tests.test_export::test_trt"]
    assert fig["skipped"] == ["tests.test_latency::test_ort_cuda: needs onnxruntime-gpu"]
    assert gpu_check.pytest_figures(
        gpu_check.Context(tmp_path / "none", tmp_path, "cuda", gpu_check.FULL, "tiny"), {}
    ) == {"junit": "missing (pytest did not finish)"}
