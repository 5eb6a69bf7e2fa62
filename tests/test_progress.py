"""Progress output: a live bar on a terminal (a pseudo-terminal here); on a pipe the log lines of
before the display existed, unchanged; nothing with --quiet."""

import fcntl
import io
import os
import re
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from edgenas.run.progress import (
    QUIET,
    STDERR,
    LiveProgress,
    Progress,
    SearchTally,
    as_progress,
    reporter,
)
from edgenas.run.rundir import RunDir

BEFORE = (
    Path(__file__).parent / "data" / "progress" / "ci-budget-pipe-before.txt"
)  # stderr of the code before the display
ARCH = r"d\d+-w\d+-[sc]+-[357]+"
TAG = rf"\[(?P<stage>\w+) #(?P<n>\d+)\] (?P<arch>{ARCH}) e(?P<e>\d+)"
# Every kind of line `edgenas discover` writes to a pipe, as the code before this display wrote it.
LINES = {
    "start": r"edgenas \S+: profile \S+ \(\w+\), dataset \w+, device \w+( \(\d+ CPU threads?\))?, run \S+",
    "epoch": TAG + r": epoch (?P<epoch>\d+)/(?P<of>\d+) loss \d+\.\d{3} train \d+\.\d% \(\d+s elapsed\)",
    "trained": TAG + r": (?P<status>trained|failed), val acc \d+\.\d\d% in \d+\.\ds",
    "skipped": TAG + r": skipped, over budget \(params [\d,]+ > max_params [\d,]+\)",
    "search done": rf"search done: {ARCH} after \d+ candidates; training it for \d+ epochs",
    "final": rf"\[final\] {ARCH}: epoch \d+/\d+ loss \d+\.\d{{3}} train \d+\.\d%",
    "done": rf"done: {ARCH}, [\d,]+ params, [\d,]+ MACs, test_acc \d+\.\d\d%"
    r"( \(after discovered epochs \(\d+\); `edgenas train` trains final_epochs \(\d+\)\))?; run directory \S+",
}
# Lines added since (issue 22): what the budget rule did, before the "done" line.
NEW_LINES = {"budget rule": r"over_budget = \w+: .+|no budget: the published search"}


def kinds(text: str) -> list[tuple[str, re.Match]]:
    out = []
    for line in text.splitlines():
        match = [(k, m) for k, p in {**LINES, **NEW_LINES}.items() if (m := re.fullmatch(p, line))]
        assert len(match) == 1, f"not a line of the old format: {line!r}"
        out.append(match[0])
    return out


def test_the_patterns_describe_the_log_of_the_code_before_the_display():
    found = [k for k, _ in kinds(BEFORE.read_text())]
    assert set(found) == set(LINES)


@pytest.mark.slow
def test_on_a_pipe_the_log_lines_are_the_old_ones(budget_run):
    out, stderr = budget_run
    assert "\x1b" not in stderr and "\r" not in stderr and "━" not in stderr
    lines = kinds(stderr)
    assert [k for k, _ in lines][:1] == ["start"] and [k for k, _ in lines][-1] == "done"
    # one epoch line per epoch of each trained candidate, then its result line: as before
    journal = RunDir(out).journal()
    epochs = [int(m["epoch"]) for k, m in lines if k == "epoch"]
    assert len(epochs) == sum(r["epochs"] for r in journal if r["status"] == "trained")
    results = [(m["stage"], int(m["n"])) for k, m in lines if k in ("trained", "skipped")]
    assert results == [(r["stage"], n) for n, r in enumerate(journal, start=1)]
    # every kind of line the old code wrote is still written (the old log itself is of an older
    # search engine, whose micro stages made other requests, so the sequences differ in length)
    assert {k for k, _ in lines} - set(NEW_LINES) == {k for k, _ in kinds(BEFORE.read_text())}
    assert [k for k, _ in lines][-2] == "budget rule"


def _under_a_pty(args, cwd=None, timeout=600) -> tuple[int, str]:
    """Run ``edgenas ARGS`` with stderr on a pseudo-terminal (120 columns); its stderr as text."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgenas.cli", *map(str, args)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=slave,
        env=env,
        cwd=cwd,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return proc.wait(timeout=timeout), b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.slow
def test_on_a_terminal_a_bar_shows_stage_candidate_epoch_eta_best_and_skipped(budget_run, tmp_path):
    """--resume of the budgeted run with its last two candidates unfinished: they train under the bar."""
    out, _ = budget_run
    run = tmp_path / "resumed"
    run.mkdir()
    shutil.copy(out / "run.json", run / "run.json")
    journal = (out / "journal.jsonl").read_text().splitlines(keepends=True)
    (run / "journal.jsonl").write_text("".join(journal[:-2]))
    profile = out.parent / "ci-budget.toml"  # the profile the run was made with (--resume checks it)
    code, text = _under_a_pty(["discover", "--profile", profile, "--out", run, "--device", "cpu", "--resume"])
    assert code == 0, text
    assert "━" in text and "\x1b[" in text  # a drawn bar
    last = journal[-1]
    stage, n = re.search(r'"stage": "(\w+)"', last)[1], len(journal)
    assert f"[{stage} #{n}]" in text and re.search(r"epoch \S*2/2", text)
    assert "ETA" in text and "best " in text and "skipped 1" in text
    assert "[final]" in text and "from the journal" in text
    assert " loss " not in text  # the per-epoch lines give way to the bar
    assert (run / "summary.json").is_file()


def test_live_progress_tally_and_reporter_choice():
    tally = SearchTally()
    assert tally.text() == ""
    for record in (
        {"status": "trained", "acc": 40.0},
        {"status": "skipped"},
        {"status": "trained", "acc": 75.5},
        {"status": "failed"},
        {"status": "trained", "acc": 60.0},
    ):
        tally.add(record)
    assert tally.text() == "best 75.50% · skipped 1 · failed 1"

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    with reporter(stream=io.StringIO()) as progress:
        assert progress is STDERR
    with reporter(quiet=True, stream=Terminal()) as progress:
        assert progress is QUIET and progress("anything") is None
    screen = Terminal()
    with reporter(stream=screen) as progress:
        assert isinstance(progress, LiveProgress)
        progress.candidate("width", number=3, label="d2-w8-ss-33", epochs=4)
        progress.epoch(2, 4, "[width #3] d2-w8-ss-33: epoch 2/4")
        progress("[width #3] a message")
    assert "[width #3] d2-w8-ss-33" in screen.getvalue() and "[width #3] a message" in screen.getvalue()


def test_one_progress_object_plain_lines_or_the_live_bar():
    """Both implementations are a ``Progress``; a plain line sink (``list.append``) becomes ``Lines``:
    messages and epoch lines reach it, the candidate and record calls say nothing on their own."""
    seen: list[str] = []
    lines = as_progress(seen.append)
    assert isinstance(lines, Progress) and not isinstance(seen.append, Progress)
    assert as_progress(lines) is lines and as_progress(STDERR) is STDERR
    lines.candidate("depth", number=1, label="d2-w8-ss-33", epochs=2)
    lines("a message")
    lines.epoch(1, 2, "[depth #1] d2-w8-ss-33 e2: epoch 1/2")
    lines.record({"status": "trained", "acc": 50.0})
    assert seen == ["a message", "[depth #1] d2-w8-ss-33 e2: epoch 1/2"]
    assert isinstance(LiveProgress(io.StringIO()), Progress)
