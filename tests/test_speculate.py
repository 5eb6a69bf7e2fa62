"""Speculative execution keeps the sequential search's decisions and journals what it trains."""

import json
import subprocess

import pytest
from conftest import SEARCHLOGS, discover_cmd

from edgenas.config.strategies import EgnasConfig
from edgenas.run.rundir import RunDir
from edgenas.search.replay import replay_log_speculative
from edgenas.search.space import Arch
from edgenas.search.speculation import likely_next, request_after
from edgenas.search.strategies import Outcome, egnas

CFG = EgnasConfig(min_depth=3, max_depth=8, min_width=8, max_width=16, width_step=4)


def factory():
    return egnas(CFG, 1, 10)


@pytest.mark.parametrize("path", SEARCHLOGS, ids=lambda p: p.stem)
def test_replay_with_speculation_matches_published_log(path):
    report = replay_log_speculative(path, slots=4)
    assert report.ok, report.error


def test_request_after_is_pure():
    answers = [Outcome(80.0, 70.0), Outcome(81.0, 72.0)]
    assert request_after(factory, answers) == request_after(factory, answers)
    assert request_after(factory, []).arch == Arch.plain(3, 16)


def test_likely_next_in_the_depth_stage_is_one_layer_deeper():
    nxt = likely_next(factory, answers=[], guess=80.0, k=3)
    assert nxt[0].arch == Arch.plain(4, 16) and nxt[0].epochs == CFG.epochs + 1
    assert len(nxt) == 3 and len(set(nxt)) == 3


def test_likely_next_covers_both_outcomes_of_an_op_choice():
    # drive to the op stage, then look one request ahead: accepted and rejected op-0 differ
    answers, cand = [], request_after(factory, [])
    while cand.stage != "ops" or cand.arch.ops == (0,) * cand.arch.depth:
        answers.append(Outcome(50.0 - len(answers), 40.0))
        cand = request_after(factory, answers)
    nxt = likely_next(factory, answers=answers, guess=answers[-1].acc, k=2)
    assert {c.arch.ops[:2] for c in nxt} == {(1, 1), (0, 1)}


@pytest.mark.slow
def test_discover_with_workers_journals_speculative_results(tmp_path, ci_profile):
    out = tmp_path / "spec"
    cmd = discover_cmd(ci_profile, out, "--workers", "2")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    journal = RunDir(out).journal()
    assert any(rec.get("speculative") for rec in journal)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["candidates_trained"] >= summary["candidates"]
    # a resumed search reuses every journaled result, speculative ones included: nothing retrains
    again = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "speculative]" not in again.stderr and RunDir(out).journal() == journal


@pytest.mark.slow
@pytest.mark.ray
def test_discover_on_ray_reaches_the_same_decisions_as_worker_processes(tmp_path, ci_profile):
    out = tmp_path / "ray"
    cmd = discover_cmd(ci_profile, out, "--workers", "2", "--ray", "local")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "as Ray tasks (local)" in r.stderr
    journal = RunDir(out).journal()
    assert any(rec.get("speculative") for rec in journal)
    requested = [rec for rec in journal if not rec.get("speculative")]
    assert requested and (out / "arch.json").is_file() and (out / "model.pt").is_file()
