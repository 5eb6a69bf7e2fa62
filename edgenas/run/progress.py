"""Live progress of a search on a terminal (rich): stage, candidate, epoch bar with ETA, best so far, skipped.

Off a terminal (a pipe, a CI log) nothing changes: the pipeline's one line per epoch goes to stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

from edgenas.run.log import quiet_log, stderr_log

if TYPE_CHECKING:
    from rich.progress import TaskID

Log = Callable[[str], None]


class Progress(Protocol):
    """What the pipeline tells a progress display (all optional to act on)."""

    def candidate(self, stage: str, *, number: int, label: str, epochs: int) -> None:
        """A candidate (``number`` 0: the final training) starts ``epochs`` epochs."""

    def epoch(self, epoch: int, epochs: int, loss: float, train_acc: float, seconds: float) -> None:  # noqa: PLR0917 (an EpochCallback: called positionally)
        """One epoch of the current candidate finished."""

    def record(self, record: dict) -> None:
        """A candidate's journal record (trained, failed or skipped), also one read back on --resume."""


class SearchTally:
    """Best ranking accuracy so far and the skipped/failed counts, from journal records."""

    def __init__(self) -> None:
        self.best: float | None = None
        self.best_label = ""
        self.skipped = 0
        self.failed = 0
        self.seen = 0

    def add(self, record: dict) -> None:
        status = record.get("status")
        self.seen += 1
        if status == "skipped":
            self.skipped += 1
        elif status == "failed":
            self.failed += 1
        elif status == "trained" and (self.best is None or record["acc"] > self.best):
            self.best, self.best_label = float(record["acc"]), record.get("key", "")

    def text(self) -> str:
        if not self.seen:
            return ""
        best = "best -" if self.best is None else f"best {self.best:.2f}%"
        failed = f" · failed {self.failed}" if self.failed else ""
        return f"{best} · skipped {self.skipped}{failed}"


class LiveProgress:
    """A rich progress bar on ``stream`` (a terminal); log lines print above it."""

    def __init__(self, stream) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as Bar

        self.console = Console(file=stream, force_terminal=True, highlight=False)
        self.tally = SearchTally()
        self.bar = Bar(TextColumn("{task.description}", markup=False), BarColumn(bar_width=30), TextColumn("epoch"),
                       MofNCompleteColumn(), TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[tally]}"),
                       console=self.console, transient=False, refresh_per_second=4)
        self.task: TaskID | None = None

    def __enter__(self) -> LiveProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.stop()

    def __call__(self, message: str) -> None:
        self.console.print(message, markup=False, highlight=False, soft_wrap=True)

    def candidate(self, stage: str, *, number: int, label: str, epochs: int) -> None:
        where = f"[{stage} #{number}]" if number else f"[{stage}]"
        if self.task is not None:
            self.bar.remove_task(self.task)
        self.task = self.bar.add_task(f"{where} {label}", total=epochs, tally=self.tally.text())
        self.bar.refresh()  # every candidate and epoch is drawn at least once, however short

    def epoch(self, epoch: int, epochs: int, loss: float, train_acc: float, seconds: float) -> None:  # noqa: PLR0917 (an EpochCallback: called positionally)
        if self.task is not None:
            self.bar.update(self.task, completed=epoch, total=epochs)
            self.bar.refresh()

    def record(self, record: dict) -> None:
        self.tally.add(record)
        if self.task is not None:
            self.bar.update(self.task, tally=self.tally.text())


@contextmanager
def reporter(quiet: bool = False, stream=None) -> Iterator[tuple[Log, Progress | None]]:
    """``(log, progress)`` for a command: silent with ``quiet``, a live bar when ``stream`` (default
    stderr) is a terminal, else the plain one-line-per-epoch log and no progress display."""
    stream = stream or sys.stderr
    if quiet:
        yield quiet_log, None
    elif stream.isatty():
        with LiveProgress(stream) as live:
            yield live, live
    else:
        yield stderr_log, None
