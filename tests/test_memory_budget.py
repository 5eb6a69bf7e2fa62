"""Microcontroller memory budgets: the footprint model, the profile's settings, and a search that never trains over them."""

import pytest

from edgenas.config.memory_targets import KB, MEMORY_TARGETS
from edgenas.config.profile import Budget, parse_profile
from edgenas.errors import ProfileError
from edgenas.run.discover import discover
from edgenas.run.evaluator import check_budget
from edgenas.run.rundir import RunDir
from edgenas.search.footprint import (
    Buffer,
    footprint,
    greedy_arena,
    needs_pad,
    same_padding,
)
from edgenas.search.space import Arch

TFLM = MEMORY_TARGETS["tflm-int8"]


def test_same_padding_needs_a_pad_op_only_where_pytorch_differs():
    assert same_padding(32, 3, 2) == (0, 1) and needs_pad((32, 32), 3, 2)  # PyTorch pads (1, 1)
    assert same_padding(7, 3, 2) == (1, 1) and not needs_pad((7, 7), 3, 2)
    assert not any(needs_pad((s, s), k, 1) for s in (1, 2, 8, 32) for k in (3, 5, 7))  # stride 1: always SAME


def test_greedy_planner_places_equal_sizes_last_added_first():
    # Two equal tensors and a smaller pair: placing the later one of the equals first (as TFLM does) lets
    # the 24-byte tensor sit below it; the other order would need 122 880 bytes in the measured network.
    chain = [Buffer("stem", 48, 2, 3), Buffer("dw", 48, 3, 4), Buffer("pw", 32, 4, 5), Buffer("pad", 40, 5, 6)]
    assert greedy_arena(chain) == 96
    assert greedy_arena([Buffer("a", 16, 0, 1), Buffer("b", 16, 2, 3)]) == 16  # never alive together: shared


def test_footprint_of_a_network_measured_in_tflm():
    # d3-w24-scc-737 at 32x32x3, INT8 through TFLM: head 98,304 B (the stem's and the depthwise outputs)
    f = footprint(Arch(3, 24, (0, 1, 1), (7, 3, 7)), in_channels=3, input_size=(32, 32), outputs=10, target=TFLM)
    assert f.activations == 98_304
    assert f.arena % 16 == 0 and f.arena >= f.activations + f.persistent


def test_memory_budget_settings_are_checked():
    b = Budget(max_peak_memory_kb=256, max_flash_kb=1024)
    assert b.memory_target == "tflm-int8"
    with pytest.raises(ProfileError, match="memory_target"):
        Budget(memory_target="tflm-fp64")
    with pytest.raises(ProfileError, match="max_flash_kb"):
        Budget(max_flash_kb=-1)
    with pytest.raises(ProfileError, match='budget.max_peak_memory_kb is for task = "classify"'):
        parse_profile('task = "face"\n[budget]\nmax_peak_memory_kb = 64\n', "f", "f.toml")


def test_memory_budgets_are_checked_before_latency():
    arch = Arch.plain(3, 16)
    memory = footprint(arch, in_channels=1, input_size=(8, 8), outputs=10, target=TFLM)

    def never(a):
        raise AssertionError("latency measured for a network over the memory budget")

    over = check_budget(
        arch, size=(1, 1), budget=Budget(max_peak_memory_kb=1, max_latency_ms=1.0), latency_of=never, memory=memory
    )
    assert "peak memory" in over.reason and "max_peak_memory_kb 1" in over.reason
    flash = check_budget(
        arch, size=(1, 1), budget=Budget(max_flash_kb=1, max_latency_ms=1.0), latency_of=never, memory=memory
    )
    assert "max_flash_kb" in flash.reason
    assert (
        check_budget(arch, size=(1, 1), budget=Budget(max_peak_memory_kb=1024), latency_of=never, memory=memory).reason
        == ""
    )


@pytest.mark.slow
def test_search_trains_only_candidates_under_the_memory_budget(tmp_path, one_thread, budgeted_profile):
    peaks = {
        w: footprint(Arch.plain(3, w), in_channels=1, input_size=(8, 8), outputs=10, target=TFLM).activations
        for w in (8, 16, 24)
    }
    assert peaks[8] < peaks[16] < peaks[24]
    budget = peaks[16] // KB  # width 16 fits (its peak is a whole number of KB), 24 does not
    assert peaks[16] <= budget * KB < peaks[24]
    path = budgeted_profile(tmp_path / "memory.toml", {"max_peak_memory_kb": budget})  # depths 3-4, widths 8-24
    summary = discover(str(path), out=tmp_path / "run", device="cpu", log=lambda m: None)

    journal = RunDir(tmp_path / "run").journal()
    skipped = [r for r in journal if r["status"] == "skipped"]
    trained = [r for r in journal if r["status"] != "skipped"]
    assert skipped and trained
    assert journal[0]["width"] == 24 and journal[0]["status"] == "skipped"  # the widest is never trained
    for r in skipped:
        assert r["peak_memory_bytes"] > budget * KB and "max_peak_memory_kb" in r["reason"]
    for r in trained:
        assert r["peak_memory_bytes"] <= budget * KB
    estimate = summary["memory"]["estimate"]
    assert estimate["peak_memory_bytes"] <= budget * KB and estimate["memory_target"] == "tflm-int8"
    assert summary["budget"]["max_peak_memory_kb"] == budget
