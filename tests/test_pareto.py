"""The Pareto front: non-dominated on random journals, never a skipped candidate; ``edgenas pareto`` and
``edgenas train --candidate`` on a real run under a budget."""

import json
import shutil
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from edgenas.cli import main
from edgenas.deploy.report import pareto
from edgenas.run.loading import load_run_model
from edgenas.run.rundir import RunDir

STATUSES = ("trained", "trained", "trained", "skipped", "failed")


@st.composite
def journals(draw):
    """Journal records as pipeline.py writes them, with few distinct values so ties happen."""
    records = []
    for i in range(draw(st.integers(0, 30))):
        depth = draw(st.integers(1, 3))
        status = draw(st.sampled_from(STATUSES))
        records.append(
            {
                "key": f"depth:d{depth}-w{i + 1}:e2",
                "stage": draw(st.sampled_from(["depth", "width", "ops"])),
                "depth": depth,
                "width": i + 1,
                "ops": [0] * depth,
                "kernels": [3] * depth,
                "epochs": 2,
                "params": draw(st.integers(100, 110)),
                "macs": draw(st.integers(1000, 1003)),
                "latency_ms": draw(st.one_of(st.none(), st.sampled_from([0.5, 1.0, 1.5]))),
                "status": status,
                "reason": "over budget" if status == "skipped" else "",
                "acc": 0.0 if status == "skipped" else float(draw(st.integers(0, 5))),
                "train_acc": 0.0,
                "seconds": 1.0,
            }
        )
    return records


@settings(max_examples=300, deadline=None, derandomize=True)
@given(journals(), st.sampled_from(pareto.AXES))
def test_front_is_exactly_the_non_dominated_trained_candidates(journal, axis):
    pts = pareto.points(journal, axis)
    front = pareto.front(pts)
    on_front = {p.number for p in front}
    for p in front:
        assert journal[p.number - 1]["status"] == "trained"
        assert not any(pareto.dominates(q, p) for q in pts), (p, pts)
    for p in pts:  # every trained point off the front is beaten by a point on it
        assert p.number in on_front or any(pareto.dominates(q, p) for q in front)
    assert [p.cost for p in front] == sorted(p.cost for p in front)
    rows = pareto.front_rows(journal, axis)
    assert [r["candidate"] for r in rows] == [p.number for p in front]


def test_latency_falls_back_to_the_runs_latency_table():
    record = {"depth": 1, "width": 4, "ops": [0], "kernels": [3], "latency_ms": None, "status": "trained", "acc": 50.0}
    assert pareto.latency_of(record, {}) is None
    assert pareto.latency_of(record, {"d1-w4-s-3": 0.25}) == 0.25
    assert pareto.points([record], "latency", {"d1-w4-s-3": 0.25}) == [pareto.Point(1, 0.25, 50.0)]
    with pytest.raises(ValueError, match="axis must be one of"):
        pareto.cost_of(record, "energy")


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], standalone_mode=False)


@pytest.mark.slow
def test_pareto_on_a_budgeted_run_never_lists_a_skipped_candidate(budget_run):
    out, _ = budget_run
    journal = RunDir(out).journal()
    skipped = {n for n, r in enumerate(journal, start=1) if r["status"] == "skipped"}
    assert skipped, "the budget should have skipped a candidate"
    for axis in ("params", "macs"):
        r = _cli("pareto", out, "--x", axis, "--json")
        assert r.exit_code == 0, r.output
        front = json.loads(r.output)["front"]
        numbers = [row["candidate"] for row in front]
        assert front and not set(numbers) & skipped
        key = "params" if axis == "params" else "macs"
        trained = [(r[key], r["acc"]) for r in journal if r["status"] == "trained"]
        for row in front:  # no trained candidate is cheaper and more accurate
            assert not any(c <= row[key] and a >= row["acc"] and (c, a) != (row[key], row["acc"]) for c, a in trained)
    text = _cli("pareto", out)
    assert text.exit_code == 0 and "non-dominated trained candidate(s): accuracy against params" in text.output


@pytest.mark.slow
def test_pareto_latency_without_measurements_names_the_flag(budget_run, tmp_path):
    out, _ = budget_run
    copy = tmp_path / "nolatency"
    copy.mkdir()
    for name in ("run.json", "journal.jsonl"):
        shutil.copy(out / name, copy / name)
    r = subprocess.run(
        [sys.executable, "-m", "edgenas.cli", "pareto", str(copy), "--x", "latency"], capture_output=True, text=True
    )
    assert r.returncode == 2 and r.stderr.startswith("edgenas: error:") and "--x latency" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_train_candidate_trains_that_architecture_into_a_run_that_says_where_it_came_from(budget_run, tmp_path):
    out, _ = budget_run
    journal = RunDir(out).journal()
    front = pareto.front_rows(journal, "params")
    number = front[0]["candidate"]
    before = {name: (out / name).read_bytes() for name in ("run.json", "journal.jsonl", "summary.json", "model.pt")}
    target = tmp_path / "candidate"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgenas.cli",
            "train",
            str(out),
            "--candidate",
            str(number),
            "--out",
            str(target),
            "--epochs",
            "2",
            "--device",
            "cpu",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # --quiet
    record = journal[number - 1]
    run = RunDir.open(target)
    assert run.arch().to_dict() == {k: record[k] for k in ("depth", "width", "ops", "kernels")}
    meta, summary = run.meta.to_dict(), run.read(RunDir.SUMMARY)
    assert (
        meta["from_run"] == str(out.resolve())
        and meta["candidate"] == number
        and meta["candidate_key"] == record["key"]
    )
    assert summary["from_run"] == str(out.resolve()) and summary["candidate"] == number
    assert summary["params"] == record["params"] and summary["final_training"]["epochs"] == 2
    assert summary["test_from"] == summary["final_training"]["test_from"] == "final_epochs (2)"  # the CI profile's
    assert json.loads(r.stdout)["run_dir"] == str(target)
    state = torch.load(target / "model.pt", weights_only=True)
    assert load_run_model(run).state_dict().keys() == state.keys()
    assert before == {name: (out / name).read_bytes() for name in before}  # the source run is untouched


@pytest.mark.slow
@pytest.mark.parametrize("pick,message", [("skipped", "was skipped"), ("beyond", "holds candidates 1 to")])
def test_train_candidate_refuses_a_skipped_or_missing_candidate(budget_run, tmp_path, pick, message):
    out, _ = budget_run
    journal = RunDir(out).journal()
    number = (
        next(n for n, r in enumerate(journal, start=1) if r["status"] == "skipped")
        if pick == "skipped"
        else len(journal) + 1
    )
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgenas.cli",
            "train",
            str(out),
            "--candidate",
            str(number),
            "--out",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and r.stderr.startswith(f"edgenas: error: --candidate {number}:") and message in r.stderr
    assert not (tmp_path / "x").exists()
