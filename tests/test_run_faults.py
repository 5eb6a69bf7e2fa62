"""Fault injection on the run directory: short writes, full disks, file-size limits, unwritable
folders, hostile journals, kills at random points and two processes on one run directory.

Every case ends in a one-line error with its exit code, or in a correct result; nothing is lost.
"""

import errno
import json
import os
import random
import resource
import signal
import subprocess
import threading

import pytest
from click.testing import CliRunner
from conftest import discover_cmd, make_meta
from hypothesis import given, settings
from hypothesis import strategies as st
from test_discover import finished_run  # noqa: F401 -- the uninterrupted reference run (a fixture)

from edgenas.cli import main
from edgenas.errors import RunDirError, RunWriteError
from edgenas.run.rundir import RunDir, append_jsonl, read_jsonl, write_json_atomic

META = make_meta()
REAL_WRITE = os.write


def rec(key: str, acc: float = 50.0) -> dict:
    return {"key": key, "status": "trained", "acc": acc, "train_acc": acc, "seconds": 1.0}


def one_line_error(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgenas: error: "), output
    return lines[0]


# -- short writes, full disks, unwritable files (os.write and friends monkeypatched) ---------------
def test_short_writes_are_continued(tmp_path, monkeypatch):
    calls = []

    def short_write(fd, data):
        calls.append(len(data))
        return REAL_WRITE(fd, bytes(data[:7]))  # at most 7 bytes per call

    monkeypatch.setattr(os, "write", short_write)
    append_jsonl(tmp_path / "j.jsonl", rec("a"))
    append_jsonl(tmp_path / "j.jsonl", rec("b"))
    assert len(calls) > 10 and read_jsonl(tmp_path / "j.jsonl") == [rec("a"), rec("b")]


@pytest.mark.parametrize(
    "fault,why",
    [
        (errno.ENOSPC, "no space left on the device"),
        (errno.EFBIG, "file too large"),
        (errno.EDQUOT, "disk quota exceeded"),
        (0, "no space left on the device"),
    ],
)  # 0: os.write wrote nothing
def test_a_failed_append_leaves_no_torn_record_and_resume_goes_on(tmp_path, monkeypatch, fault, why):
    run = RunDir.start(tmp_path / "r", META, resume=False)
    run.record(rec("a"))
    before = (run.path / RunDir.JOURNAL).read_bytes()

    def failing_write(fd, data):
        if not getattr(failing_write, "wrote", False):  # part of the record first, then the fault
            failing_write.wrote = True
            return REAL_WRITE(fd, bytes(data[:20]))
        if fault == 0:
            return 0
        raise OSError(fault, os.strerror(fault))

    monkeypatch.setattr(os, "write", failing_write)
    with pytest.raises(RunWriteError, match=rf"cannot write .*journal.jsonl: {why}.*nothing torn.*--resume") as e:
        run.record(rec("b"))
    assert e.value.exit_code == 1 and "\n" not in str(e.value)
    assert (run.path / RunDir.JOURNAL).read_bytes() == before
    monkeypatch.undo()  # the cause is fixed
    run = RunDir.start(tmp_path / "r", META, resume=True)
    run.record(rec("b"))
    assert [r["key"] for r in run.journal()] == ["a", "b"]


def test_an_unwritable_journal_is_one_line(tmp_path, monkeypatch):
    run = RunDir.start(tmp_path / "r", META, resume=False)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(run.path / RunDir.JOURNAL))

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(RunWriteError, match="journal.jsonl: the file system is read-only"):
        run.record(rec("a"))


def test_a_full_disk_while_saving_weights_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    import torch

    run = RunDir.start(tmp_path / "r", META, resume=False)
    run.save_weights(torch.nn.Linear(2, 2))
    old = (run.path / RunDir.WEIGHTS).read_bytes()

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: _NoSpace(fd))  # the temp file of an atomic write
    with pytest.raises(RunWriteError, match=r"cannot write .*model.pt: no space left on the device; the run stopped"):
        run.save_weights(torch.nn.Linear(3, 3))
    with pytest.raises(RunWriteError, match=r"cannot write .*summary.json: no space left"):
        write_json_atomic(run.path / RunDir.SUMMARY, {"k": 1})
    assert (run.path / RunDir.WEIGHTS).read_bytes() == old
    assert sorted(p.name for p in run.path.iterdir()) == [RunDir.WEIGHTS, RunDir.META]


class _NoSpace:
    """A file whose every write fails as on a full disk."""

    def __init__(self, fd):
        self.fd = fd

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        os.close(self.fd)

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def fileno(self):
        return self.fd


def test_a_run_directory_that_cannot_be_created_is_one_line_exit_2(tmp_path, monkeypatch, ci_profile):
    from pathlib import Path

    def denied(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))

    monkeypatch.setattr(Path, "mkdir", denied)
    r = CliRunner().invoke(
        main, ["discover", "--profile", str(ci_profile), "--out", str(tmp_path / "o"), "--device", "cpu"]
    )
    assert r.exit_code == 2
    assert "cannot write" in one_line_error(r.output) and "permission denied" in r.output
    assert not (tmp_path / "o").exists()


def test_a_full_disk_before_the_search_starts_is_one_line_exit_2_and_leaves_nothing(tmp_path, monkeypatch, ci_profile):
    monkeypatch.setattr(os, "fdopen", lambda fd, mode: _NoSpace(fd))  # no file can be written
    r = CliRunner().invoke(
        main, ["discover", "--profile", str(ci_profile), "--out", str(tmp_path / "o"), "--device", "cpu"]
    )
    assert r.exit_code == 2
    assert "o/.lock.holder: no space left on the device" in one_line_error(r.output)  # the first file written
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", [["train", "{run}", "--epochs", "1", "--device", "cpu"], ["export", "{run}"]])
def test_train_and_export_wait_for_no_one_they_refuse_a_held_run_directory(tmp_path, command):
    run = RunDir.start(tmp_path / "r", META, resume=False)
    run.write(RunDir.ARCH, {"depth": 2, "width": 4, "ops": ["s", "s"], "kernels": [3, 3]})
    with run.lock("discover"):
        r = CliRunner().invoke(main, [c.format(run=run.path) for c in command])
    assert r.exit_code == 2
    assert f"{run.path} is in use by `edgenas discover` (pid {os.getpid()} on" in one_line_error(r.output)
    assert not (run.path / RunDir.WEIGHTS).exists()


def test_a_write_failure_the_library_did_not_foresee_is_one_line_exit_1(monkeypatch):
    import click

    @click.command("fill")
    def fill():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/somewhere/out.json")

    monkeypatch.setitem(main.commands, "fill", fill)
    r = CliRunner().invoke(main, ["fill"])
    assert r.exit_code == 1 and "cannot write /somewhere/out.json: No space left on device" in one_line_error(r.output)


@pytest.mark.parametrize(
    "stop,code,words", [("KeyboardInterrupt", 130, "interrupted"), ("Terminated", 143, "terminated")]
)
def test_ctrl_c_exits_130_and_sigterm_143_in_every_command(monkeypatch, stop, code, words):
    import click

    from edgenas import cli

    @click.command("stopped")
    def stopped():
        raise {"KeyboardInterrupt": KeyboardInterrupt, "Terminated": cli.Terminated}[stop]

    monkeypatch.setitem(main.commands, "stopped", stopped)
    r = CliRunner().invoke(main, ["stopped"])
    assert r.exit_code == code
    assert r.output.strip() == f"edgenas: {words}; a search continues with the same command and --resume"


# -- hostile journals ---------------------------------------------------------------------------
VALID = st.sampled_from(["a", "b", "c", "d"]).map(lambda k: json.dumps(rec(k)).encode())
HOSTILE = st.one_of(
    st.sampled_from(
        [
            b"{}",
            b"[1,2]",
            b"null",
            b"0",
            b'"key"',
            b'{"key": 1}',
            b'{"key": "a", "status": "trained"}',
            json.dumps({**rec("a"), "acc": "x"}).encode(),
            json.dumps({**rec("a"), "seconds": True}).encode(),
            b"[" * 5000,
            b"{" * 100000,
        ]
    ),
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
)


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    return RunDir.start(tmp_path_factory.mktemp("hostile") / "r", META, resume=False).path


@settings(max_examples=150, deadline=None)
@given(lines=st.lists(st.one_of(VALID, HOSTILE), max_size=8), tail=st.binary(max_size=30))
def test_hostile_journals_resume_correctly_or_fail_in_one_line(hostile_run, lines, tail):
    path = hostile_run
    tail = tail.replace(b"\n", b"")
    content = b"".join(line + b"\n" for line in lines) + tail
    (path / RunDir.JOURNAL).write_bytes(content)
    bad = [n for n, line in enumerate(lines, start=1) if line.strip() and not _valid(line)]
    try:
        run = RunDir.start(path, META, resume=True)
    except RunDirError as e:
        assert bad, f"a valid journal was refused: {e}"
        assert f"journal.jsonl, line {bad[0]}, is damaged" in str(e) and "\n" not in str(e)
        assert (path / RunDir.JOURNAL).read_bytes() == content  # nothing cut off
        return
    assert not bad
    assert [json.dumps(r).encode() for r in run.journal()] == [line for line in lines if line.strip()]
    assert (path / RunDir.JOURNAL).read_bytes() == content[: len(content) - len(tail)]  # only the torn tail went


def _valid(line: bytes) -> bool:
    return line in {json.dumps(rec(k)).encode() for k in "abcd"}


def test_the_cli_names_the_damaged_line(tmp_path, ci_profile):
    out = tmp_path / "r"
    runner = CliRunner()
    RunDir.start(out, _ci_meta(ci_profile), resume=False)
    (out / RunDir.JOURNAL).write_bytes(
        json.dumps(rec("a")).encode() + b"\n[1,2]\n" + json.dumps(rec("b")).encode() + b"\n"
    )
    r = runner.invoke(
        main, ["discover", "--profile", str(ci_profile), "--out", str(out), "--device", "cpu", "--resume"]
    )
    assert r.exit_code == 2
    assert "journal.jsonl, line 2, is damaged: list instead of a record" in one_line_error(r.output)


@pytest.mark.parametrize(
    "fault,why", [(errno.EROFS, "the file system is read-only"), (errno.EACCES, "permission denied")]
)
def test_a_run_directory_that_cannot_be_locked_is_one_line_exit_2(tmp_path, monkeypatch, fault, why):
    from edgenas.run.lock import RunLock

    real_open = os.open

    def unwritable(path, *args, **kwargs):
        if str(path).endswith(".lock"):
            raise OSError(fault, os.strerror(fault), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", unwritable)
    with pytest.raises(RunDirError, match=f"cannot write {tmp_path}/.lock: {why}$") as e:
        RunLock(tmp_path, "discover").acquire()
    assert e.value.exit_code == 2


def _ci_meta(ci_profile):
    from edgenas.config.profile import load_profile
    from edgenas.training.tasks import task_for

    profile = load_profile(str(ci_profile))
    data = task_for("classify").load_data("digits", data_dir=None, profile=profile, seed=0, download=False)
    return make_meta(profile, data=data)


# -- processes: kills at random points, a file-size limit, SIGTERM, two processes on one run ------
def _run_until(cmd, stop, *, sig=signal.SIGKILL, limit_fsize=None, timeout=600, on_line=None):
    """Run ``cmd``; send ``sig`` after the stderr line for which ``stop(number, line)`` is true.
    ``on_line(line, pid)`` sees every line first. Returns (exit code, stderr lines). A watchdog
    kills it after ``timeout`` seconds."""

    def preexec():
        if limit_fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_fsize, limit_fsize))

    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, preexec_fn=preexec)
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    lines = []
    try:
        for line in proc.stderr:
            lines.append(line)
            if on_line is not None:
                on_line(line, proc.pid)
            if stop(len(lines), line):
                proc.send_signal(sig)
                lines += proc.stderr.readlines()
                break
        proc.wait()
    finally:
        watchdog.cancel()
    return proc.returncode, lines


def _journal_intact(out) -> list[dict]:
    data = (out / RunDir.JOURNAL).read_bytes()
    assert data.endswith(b"\n"), "a torn record was left"
    return RunDir(out).journal()


def _same_result(out, full):
    assert json.loads((out / "arch.json").read_text()) == json.loads((full / "arch.json").read_text())
    keys = lambda d: [(r["key"], r["acc"]) for r in RunDir(d).journal()]  # noqa: E731
    assert keys(out) == keys(full)


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_ends_at_the_same_arch(finished_run, ci_profile, tmp_path):  # noqa: F811
    full, reference = finished_run
    total = len(reference.stderr.splitlines())
    out, rng = tmp_path / "killed", random.Random(14)
    for attempt in range(3):
        point = rng.randrange(1, total)
        code, lines = _run_until(
            discover_cmd(ci_profile, out, *(["--resume"] if attempt else [])), lambda n, line, point=point: n == point
        )
        if code == 0:
            break
        assert code == -signal.SIGKILL, "".join(lines)
        _journal_intact(out)
    done = subprocess.run(discover_cmd(ci_profile, out, "--resume"), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    _same_result(out, full)


@pytest.mark.slow
def test_file_size_limit_lock_and_sigterm_then_resume(finished_run, ci_profile, tmp_path):  # noqa: F811
    full, _ = finished_run
    out = tmp_path / "run"
    # 1. killed once the first candidate is journaled
    code, _ = _run_until(discover_cmd(ci_profile, out), lambda n, line: line.startswith("[depth #2]"))
    assert code == -signal.SIGKILL and len(_journal_intact(out)) == 1
    # 2. resumed under a file-size limit that lets one more record in, and cuts the next one short
    first = len((out / RunDir.JOURNAL).read_bytes())
    code, lines = _run_until(
        discover_cmd(ci_profile, out, "--resume"), lambda n, line: False, limit_fsize=2 * first + 50
    )
    assert code == 1, "".join(lines)
    assert lines[-1].startswith("edgenas: error: cannot write") and "journal.jsonl: file too large" in lines[-1]
    assert len(_journal_intact(out)) == 2

    # 3. resumed; a second process on the same run directory is refused, naming the holder; 4. SIGTERM
    def second_process(line, pid):
        if line.startswith("edgenas "):  # the run directory is locked from here on
            os.kill(pid, signal.SIGSTOP)  # held still, so it cannot finish (and unlock) before the second asks
            try:
                second = subprocess.run(
                    discover_cmd(ci_profile, out, "--resume"), capture_output=True, text=True, timeout=600
                )
            finally:
                os.kill(pid, signal.SIGCONT)
            assert second.returncode == 2, second.stderr
            assert "is in use by `edgenas discover` (pid" in one_line_error(second.stderr)

    code, lines = _run_until(
        discover_cmd(ci_profile, out, "--resume"),
        lambda n, line: "epoch 1/" in line,
        sig=signal.SIGTERM,
        on_line=second_process,
    )
    assert code == 143 and lines[-1].startswith("edgenas: terminated;"), "".join(lines)
    finished = 2 + sum(": trained, " in line for line in lines)  # a candidate is logged, then journaled
    journaled = len(_journal_intact(out))
    assert finished - 1 <= journaled <= finished
    # 5. the cause fixed, resume finishes at the uninterrupted run's architecture
    done = subprocess.run(discover_cmd(ci_profile, out, "--resume"), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("from the journal") == journaled
    _same_result(out, full)
