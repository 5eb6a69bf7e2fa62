import json
import subprocess
import sys

import pytest
from conftest import SEARCHLOGS, TESTS

from edgenas.config.strategies import EgnasConfig, TrgConfig
from edgenas.errors import SearchError
from edgenas.search.replay import replay_log
from edgenas.search.space import count_params
from edgenas.search.strategies import Outcome, drive, egnas, trg


@pytest.mark.parametrize("path", SEARCHLOGS, ids=lambda p: p.stem)
def test_replay_matches_published_log(path):
    report = replay_log(path)
    assert report.ok, report.error
    assert report.requests_matched == report.records


def test_all_eleven_logs_are_vendored():
    assert len(SEARCHLOGS) == 11


def test_replay_detects_a_changed_decision(tmp_path):
    log = json.loads(SEARCHLOGS[0].read_text())
    # A depth candidate that now gains a lot more accuracy changes every later request.
    log["candidates"][1]["val_acc"] = log["candidates"][0]["val_acc"] + 5
    bad = tmp_path / SEARCHLOGS[0].name
    bad.write_text(json.dumps(log))
    report = replay_log(bad)
    assert not report.ok and "differs from the log" in report.error


def test_replay_tool_exit_codes(tmp_path):
    tool = TESTS.parent / "tools" / "replay_searchlog.py"
    ok = subprocess.run([sys.executable, str(tool), *map(str, SEARCHLOGS)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "11/11 logs replayed exactly" in ok.stdout
    log = json.loads(SEARCHLOGS[-1].read_text())
    log["final"]["width"] += 1
    (tmp_path / "x.json").write_text(json.dumps(log))
    bad = subprocess.run([sys.executable, str(tool), str(tmp_path / "x.json")], capture_output=True, text=True)
    assert bad.returncode == 1 and "MISMATCH" in bad.stdout


def _run(strategy, answer):
    asked = []

    def ask(cand):
        asked.append(cand)
        return answer(cand)

    return drive(strategy, ask), asked


SMALL = EgnasConfig(min_depth=3, max_depth=8, min_width=4, max_width=16, width_step=4, micro_kernels=(5,))


def test_depth_stage_stops_at_target():
    cfg = EgnasConfig(**{**SMALL.__dict__, "target_acc": 90.0, "target_tolerance": 0.0})
    result, asked = _run(egnas(cfg, 1, 10), lambda c: Outcome(95.0, 50.0))
    assert [c.stage for c in asked].count("depth") == 1
    assert result.arch.depth == 3


def test_over_budget_first_candidate_narrows_until_it_fits():
    """``over_budget = "stop"`` (edgenas before issue 22): the depth stage ends at the first candidate
    over budget, the width stage narrows until one fits. (The default rule: tests/test_budget_search.py.)"""
    budget = 3000

    def answer(cand):
        if count_params(cand.arch, 1, 10) > budget:
            return Outcome(0.0, 0.0, "skipped", "over budget")
        return Outcome(80.0 + cand.arch.width, 50.0)

    result, asked = _run(egnas(EgnasConfig(**{**SMALL.__dict__, "over_budget": "stop"}), 1, 10), answer)
    assert [c.stage for c in asked if c.stage == "depth"] == ["depth"]  # depth stage stops growing
    assert count_params(result.arch, 1, 10) <= budget * 1.0 + SMALL.micro_param_slack * 1e6
    assert all(c.arch.width < 16 for c in asked if c.stage == "width")


def test_nothing_fits_raises():
    with pytest.raises(SearchError, match="no candidate fitted the budget"):
        _run(egnas(SMALL, 1, 10), lambda c: Outcome(0.0, 0.0, "skipped", "over"))


def test_failed_candidates_are_never_accepted():
    def answer(cand):
        if cand.stage == "width":
            return Outcome(0.0, 0.0, "failed")
        return Outcome(70.0, 60.0)

    result, _ = _run(egnas(SMALL, 1, 10), answer)
    assert result.arch.width == 16


def test_trg_width_stage_stops_at_first_drop():
    cfg = TrgConfig(min_depth=3, max_depth=4, min_width=4, max_width=16, width_step=4, epochs=1)

    def answer(cand):
        return Outcome(90.0 if cand.arch.width >= 12 else 10.0, 50.0)

    result, asked = _run(trg(cfg), answer)
    assert [c.arch.width for c in asked if c.stage == "width"] == [12, 8]
    assert result.arch.width == 12
