import dataclasses
import json

import pytest
from conftest import make_meta

from edgenas.errors import RunDirError, UserInputError
from edgenas.run.rundir import RunDir, append_jsonl, read_jsonl, write_json_atomic

META = make_meta()


def test_torn_last_line_is_not_trusted_and_is_trimmed_on_resume(tmp_path):
    run = RunDir.start(tmp_path / "r", META, resume=False)
    run.record({"key": "a", "acc": 1.0})
    run.record({"key": "b", "acc": 2.0})
    with open(run.path / RunDir.JOURNAL, "ab") as f:
        f.write(b'{"key": "c", "ac')  # a kill in the middle of a write
    assert [r["key"] for r in run.journal()] == ["a", "b"]
    run = RunDir.start(tmp_path / "r", META, resume=True)
    run.record({"key": "d"})
    assert [r["key"] for r in run.journal()] == ["a", "b", "d"]


def test_garbage_line_stops_reading(tmp_path):
    p = tmp_path / "j.jsonl"
    append_jsonl(p, {"x": 1})
    with open(p, "a") as f:
        f.write("not json\n")
    append_jsonl(p, {"x": 3})
    assert read_jsonl(p) == [{"x": 1}]


def test_taken_directory_is_refused(tmp_path):
    RunDir.start(tmp_path / "r", META, resume=False)
    with pytest.raises(UserInputError, match="out=.*: already holds a search; continue it with resume, or choose another out"):
        RunDir.start(tmp_path / "r", META, resume=False)


def test_resume_needs_a_run_and_the_same_settings(tmp_path):
    with pytest.raises(UserInputError, match="holds no search to resume"):
        RunDir.start(tmp_path / "none", META, resume=True)
    RunDir.start(tmp_path / "r", META, resume=False)
    with pytest.raises(RunDirError, match="different seed"):
        RunDir.start(tmp_path / "r", dataclasses.replace(META, seed=1), resume=True)


def test_atomic_write_leaves_no_temp_files(tmp_path):
    write_json_atomic(tmp_path / "a.json", {"k": [1, 2]})
    assert json.loads((tmp_path / "a.json").read_text()) == {"k": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_open_requires_a_run(tmp_path):
    with pytest.raises(RunDirError, match="not an edgenas run directory"):
        RunDir.open(tmp_path)
