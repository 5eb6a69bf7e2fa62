"""benchmarks/bench_train.py and benchmarks/rank_check.py run end to end at tiny sizes and report every figure."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import bench_train
import pytest
import rank_check
from conftest import BENCHMARKS

from edgenas.search.space import Arch


def _run(tool: str, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, str(BENCHMARKS / tool), *args], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_bench_train_reports_loops_ratios_and_floor(tmp_path):
    out = tmp_path / "bench.json"
    r = _run(
        "bench_train.py",
        "--arch",
        "d4-w8",
        "--dataset",
        "fashionmnist",
        "--epochs",
        "2",
        "--train-images",
        "256",
        "--val-images",
        "64",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--json",
        str(out),
    )
    assert "SYNTHETIC" in r.stdout and "floor" in r.stdout and "x ref loop" in r.stdout
    res = json.loads(out.read_text())
    assert res["arch"] == "d4-w8-ssss-3333" and res["epochs"] == 2 and res["data"]["synthetic"] is True
    assert res["data"]["train_images"] == 256 and res["data"]["val_images"] == 64
    assert set(res["runs"]) == {"reference_loop", "edgenas_reference", "edgenas_fast"}  # no eager variant on the CPU
    for run in res["runs"].values():
        for key in (
            "images_per_s",
            "steady_images_per_s",
            "seconds",
            "steady_epoch_seconds",
            "x_floor",
            "epoch_equivalent_seconds",
        ):
            assert _positive(run[key]), (run["name"], key, run[key])
        assert len(run["epoch_seconds"]) == 2 and 0.0 <= run["val_acc"] <= 100.0 and math.isfinite(run["loss"])
        assert run["graphed"] is False
    assert res["runs"]["reference_loop"]["batch_size"] == 64 and res["runs"]["edgenas_fast"]["batch_size"] == 256
    assert res["runs"]["reference_loop"]["images"] == 512 and res["runs"]["edgenas_reference"]["images"] == 512
    f = res["floor"]
    for key in (
        "macs_per_image",
        "activations_per_image",
        "activation_bytes_per_image",
        "matmul_tflop_per_s",
        "copy_gb_per_s",
        "compute_seconds_per_epoch",
        "memory_seconds_per_epoch",
        "seconds_per_epoch",
    ):
        assert _positive(f[key]), (key, f[key])
    assert f["seconds_per_epoch"] == max(f["compute_seconds_per_epoch"], f["memory_seconds_per_epoch"])
    assert f["matmul_dtype"] == "float32" and f["bytes_per_activation"] == 4 and "3 x MACs" in f["model"]
    assert set(res["ratios"]) == {
        f"{n}/reference_loop {k}" for n in ("edgenas_reference", "edgenas_fast") for k in ("steady", "overall")
    }
    assert all(_positive(v) for v in res["ratios"].values())
    assert res["env"]["torch"] and res["env"]["device"] == "cpu"


@pytest.mark.slow
def test_bench_train_real_digits_and_arch_forms(tmp_path):
    out = tmp_path / "digits.json"
    arch_file = tmp_path / "arch.json"
    arch_file.write_text(Arch(3, 8, (0, 1, 0), (3, 5, 3)).to_json())
    r = _run(
        "bench_train.py",
        "--arch",
        str(arch_file),
        "--dataset",
        "digits",
        "--epochs",
        "1",
        "--train-images",
        "256",
        "--runs",
        "edgenas_reference,edgenas_fast",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--json",
        str(out),
    )
    res = json.loads(out.read_text())
    assert "SYNTHETIC" not in r.stdout and res["data"]["synthetic"] is False and res["arch"] == "d3-w8-scs-353"
    assert set(res["runs"]) == {"edgenas_reference", "edgenas_fast"} and res["ratios"] == {}
    assert bench_train.parse_arch("d20-w64") == Arch.plain(20, 64)
    assert bench_train.parse_arch("d3-w8-scs-353") == Arch(3, 8, (0, 1, 0), (3, 5, 3))
    with pytest.raises(SystemExit):
        bench_train.parse_arch("d3-w8-sxs-353")


@pytest.mark.slow
def test_rank_check_trains_both_protocols_and_reports_tau(tmp_path):
    out = tmp_path / "rank.json"
    r = _run(
        "rank_check.py",
        "--max-candidates",
        "8",
        "--epochs-scale",
        "0.05",
        "--width-scale",
        "0.125",
        "--train-images",
        "192",
        "--val-images",
        "64",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--json",
        str(out),
    )
    assert "Kendall tau reference vs fast" in r.stdout and "SYNTHETIC" in r.stdout
    res = json.loads(out.read_text())
    assert len(res["candidates"]) == 8 and res["data"]["synthetic"] is True
    assert {c["stage"] for c in res["candidates"]} == {"depth", "width"}
    for c in res["candidates"]:
        for p in ("reference", "fast"):
            assert c[p]["status"] == "trained" and 0.0 <= c[p]["val_acc"] <= 100.0 and math.isfinite(c[p]["val_loss"])
            assert _positive(c[p]["seconds"]) and _positive(c[p]["images_per_s"]) and c[p]["images"] > 0
    tau = res["kendall_tau"]
    assert set(tau) == {
        "reference_vs_fast",
        "reference_vs_fast_p",
        "reference_vs_fast_by_val_loss",
        "reference_vs_log",
        "fast_vs_log",
    }
    for key in ("reference_vs_fast", "reference_vs_fast_by_val_loss"):
        assert tau[key] is None or math.isnan(tau[key]) or -1.0 <= tau[key] <= 1.0
    assert (
        sorted(res["rankings"]["reference"])
        == sorted(res["rankings"]["fast"])
        == sorted(c["log_index"] for c in res["candidates"])
    )
    for p in ("reference", "fast"):
        assert _positive(res["protocols"][p]["wall_seconds"]) and _positive(res["protocols"][p]["train_images_per_s"])
    assert _positive(res["speedup_wall"]) and _positive(res["speedup_images_per_s"])


def test_candidate_selection_spreads_over_the_stages():
    log = json.loads(rank_check.DEFAULT_LOG.read_text())
    all_macro = rank_check.select(log, ["depth", "width"], 0)
    assert len(all_macro) == 21 and [i for i, _ in all_macro] == list(range(21))
    eight = rank_check.select(log, ["depth", "width"], 8)
    assert len(eight) == 8 and eight[0][0] == 0 and eight[-1][0] == 20


@pytest.mark.parametrize(
    "a, b, tau",
    [
        ([1, 2, 3, 4], [1, 2, 3, 4], 1.0),
        ([1, 2, 3, 4], [4, 3, 2, 1], -1.0),
        ([1, 2, 3, 4], [1, 3, 2, 4], 4 / 6),
        ([1, 1, 2, 3], [1, 2, 2, 3], 4 / 5),  # tau-b with a tie on each side: (4 - 0) / sqrt(5 * 5)
    ],
)
def test_kendall_tau_b(a, b, tau):
    assert rank_check.kendall_tau(a, b)[0] == pytest.approx(tau)


def test_ranking_of_all_ties_and_nan():
    assert math.isnan(rank_check.kendall_tau([1, 1, 1], [1, 2, 3])[0])
    assert rank_check.ranking([3.0, 9.0, float("nan"), 5.0]) == [1, 3, 0, 2]
