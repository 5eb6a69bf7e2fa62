"""edgenas compare --history: appending, window verdicts, environments, refused files, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import bench_record as result

from edgenas.cli import main
from edgenas.deploy.gate.history import History, judge, sparkline
from edgenas.device_kit import edgenas_kit as kit
from edgenas.errors import UserInputError


def filled(directory: Path, values: list[float], **env) -> History:
    h = History.load(directory)
    for k, ms in enumerate(values):
        h.append(result(ms, k, **env))
    return History.load(directory)


def test_append_numbers_files_and_never_overwrites(tmp_path):
    h = filled(tmp_path / "h", [1.0, 1.1])
    assert [e.path.name for e in h.entries] == ["000001-20260101T000000Z.json", "000002-20260101T000001Z.json"]
    assert h.entries[1].record == result(1.1, 1)
    (tmp_path / "h" / "000005-torn.json").write_text('{"schema": ')  # a crash or a hand edit left this
    garbage = result(1.0, 7) | {"p50_ms": -1.0}
    (tmp_path / "h" / "000003-garbage.json").write_text(json.dumps(garbage))
    h = History.load(tmp_path / "h")
    assert len(h.entries) == 2 and len(h.refused) == 2
    assert (
        "000003-garbage.json: field 'p50_ms' is -1.0" in h.refused[0]
        and "000005-torn.json is not a readable" in h.refused[1]
    )
    path = h.append(result(1.2, 9))
    assert path.name == "000006-20260101T000009Z.json"  # after the refused files too
    assert (tmp_path / "h" / "000005-torn.json").read_text() == '{"schema": '  # left alone
    assert sorted(p.name for p in (tmp_path / "h").iterdir() if p.name.startswith(".")) == []  # no temp file
    with pytest.raises(UserInputError, match="the current result: field 'p50_ms'"):
        h.append(garbage)
    assert len(list((tmp_path / "h").iterdir())) == 5


def test_append_without_hard_links_still_never_overwrites(tmp_path, monkeypatch):
    """A file system without hard links (some network and FAT mounts): names are reserved with
    O_EXCL instead. os.link is made to fail as it fails there."""
    h = filled(tmp_path, [1.0])

    def no_links(src, dst):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr("os.link", no_links)
    (tmp_path / "000002-20260101T000001Z.json").write_text("taken")  # the name the next result would get
    path = h.append(result(1.1, 1))
    assert path.name == "000003-20260101T000001Z.json" and json.loads(path.read_text()) == result(1.1, 1)
    assert (tmp_path / "000002-20260101T000001Z.json").read_text() == "taken"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_window_median_decides_and_an_equal_change_passes(tmp_path):
    h = filled(tmp_path, [1.0, 0.97, 1.03, 1.0, 2.5, 1.0, 0.99, 1.01, 1.0, 1.02])  # one noisy outlier (2.5)
    assert judge(result(1.05, 99), history=h, name="cur.json").exit_code == 0  # exactly +5 % over the median 1.0
    t = judge(result(1.06, 99), history=h, name="cur.json")
    assert t.regressed and t.baseline == 1.0
    assert t.verdict.startswith("FAIL: p50 regressed by +6.0%: 1.06 ms against the median 1 ms of the last 10 results")
    assert judge(result(0.5, 99), history=h, name="cur.json").exit_code == 0


def test_the_window_is_the_last_n_of_the_same_environment(tmp_path):
    h = filled(tmp_path, [1.0] * 5 + [1.5] * 3)  # a step up three results ago
    assert judge(result(1.5, 99), history=h, name="c", window=3).exit_code == 0  # the new level is the norm
    assert judge(result(1.5, 99), history=h, name="c", window=8).exit_code == 1  # against the older majority
    h = filled(tmp_path / "mixed", [1.0, 1.0, 1.0])
    for k in range(3):
        h.append(result(0.5, 50 + k, threads=4))  # another environment's results
    t = judge(result(0.52, 99, threads=4), history=h, name="c")
    assert len(t.window) == 3 and t.baseline == 0.5 and t.exit_code == 0
    first = judge(result(1.0, 99, batch=8) | kit.latency_stats(result(1.0)["samples_ms"], 8), history=h, name="c")
    assert first.window == [] and "first result in this environment" in first.verdict


def test_sparkline():
    assert sparkline([1, 2, 3, 4, 5, 6, 7, 8]) == "▁▂▃▄▅▆▇█" and sparkline([2.0, 2.0]) == "▄▄"


# -- the CLI ---------------------------------------------------------------------------------------
def invoke(*args):
    return CliRunner().invoke(main, ["compare", *map(str, args)])


def current(tmp_path: Path, ms: float, k: int) -> Path:
    path = tmp_path / f"cur{k}.json"
    path.write_text(json.dumps(result(ms, k)))
    return path


def test_cli_history_first_pass_fail_and_rerun(tmp_path):
    hist = tmp_path / "history"
    r = invoke("history", hist, current(tmp_path, 1.0, 0))
    assert r.exit_code == 0 and "first result in this environment" in r.output and "added" in r.output
    for k in range(1, 5):
        assert invoke("history", hist, current(tmp_path, 1.0 + k / 100, k)).exit_code == 0
    slow = current(tmp_path, 1.2, 5)
    r = invoke("history", hist, slow, "--markdown", "--window", "4")
    assert r.exit_code == 1 and "**FAIL: p50 regressed by +17.1%" in r.output  # 1.2 against the median 1.025 of 4
    assert "`trend of p50 (last 4 results, then this one): ▁▁▁▂█ 1.01-1.2 ms`" in r.output
    assert len(list(hist.glob("*.json"))) == 6  # a failing result is kept too: the history is a record
    r = invoke("history", hist, slow)
    assert "already in" in r.output and len(list(hist.glob("*.json"))) == 6


def test_cli_history_refused_files_png_and_bad_input(tmp_path):
    hist = tmp_path / "history"
    invoke("history", hist, current(tmp_path, 1.0, 0))
    (hist / "000002-bad.json").write_text("not json")
    r = invoke("history", hist, current(tmp_path, 1.01, 1), "--png", tmp_path / "trend.png")
    assert r.exit_code == 0 and "warning: left alone: " in r.output and "000002-bad.json is not a readable" in r.output
    assert (tmp_path / "trend.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (hist / "000002-bad.json").read_text() == "not json" and (hist / "000003-20260101T000001Z.json").is_file()
    garbage = tmp_path / "garbage.json"
    garbage.write_text(json.dumps(result(1.0, 9) | {"p50_ms": float("nan")}))
    r = invoke("history", hist, garbage)
    assert r.exit_code == 2 and "field 'p50_ms' is nan" in r.output and len(list(hist.glob("*.json"))) == 3
    r = invoke("history", hist, current(tmp_path, 1.0, 2), "--update-baseline")
    assert r.exit_code == 2 and "No such option" in r.output and "--update-baseline" in r.output
    (tmp_path / "afile").write_text("x")
    r = invoke("history", tmp_path / "afile", tmp_path / "missing.json")  # checked before the input is read
    assert r.exit_code == 2 and "DIR" in r.output and r.output.count("\n") == 1
    r = invoke("history", hist, current(tmp_path, 1.0, 3), "--window", "0")
    assert r.exit_code == 2 and "--window 0: give an integer >= 1" in r.output
    r = invoke("files", current(tmp_path, 1.0, 3), current(tmp_path, 1.0, 4), "--png", tmp_path / "t.png")
    assert r.exit_code == 2 and "No such option" in r.output and "--png" in r.output
