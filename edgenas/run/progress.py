"""What a run tells its user, as one object: ``Lines`` (one line per message, to stderr by default)
or ``LiveProgress`` (a rich bar on a terminal), both a ``Progress``.

Off a terminal (a pipe, a CI log) nothing changes: one line per epoch goes to stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # for the annotations only: this module stays free of torch and loads rich lazily
    from rich.progress import TaskID

    from edgenas.training.trainer import EpochCallback


@runtime_checkable
class Progress(Protocol):
    """What the pipeline tells its user: messages, and the candidate and epoch it is at."""

    def __call__(self, message: str) -> None:
        """One line of text (a plain ``Callable[[str], None]`` is a ``Log``)."""

    def candidate(self, stage: str, *, number: int, label: str, epochs: int) -> None:
        """A candidate (``number`` 0: the final training) starts ``epochs`` epochs."""

    def epoch(self, epoch: int, epochs: int, line: str) -> None:
        """One epoch of the current candidate finished; ``line`` says so in words."""

    def record(self, record: dict) -> None:
        """A candidate's journal record (trained, failed or skipped), also one read back on --resume."""


Log = Progress | Callable[[str], None]  # what discover and train_final accept: a Progress or a line sink


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Lines:
    """A ``Progress`` as plain lines: every message and every epoch is one line given to ``write``."""

    def __init__(self, write: Callable[[str], None] = _to_stderr) -> None:
        self.write = write

    def __call__(self, message: str) -> None:
        self.write(message)

    def candidate(self, stage: str, *, number: int, label: str, epochs: int) -> None:
        pass  # the epoch and result lines name the candidate

    def epoch(self, epoch: int, epochs: int, line: str) -> None:
        self.write(line)

    def record(self, record: dict) -> None:
        pass  # its result line was written when it finished


STDERR = Lines()
QUIET = Lines(lambda message: None)  # --quiet: errors still reach stderr through the CLI


def as_progress(log: Log) -> Progress:
    """``log`` as a ``Progress``: itself, or a plain line sink (``print``, ``list.append``) as ``Lines``."""
    return log if isinstance(log, Progress) else Lines(log)


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
        self.bar = Bar(
            TextColumn("{task.description}", markup=False),
            BarColumn(bar_width=30),
            TextColumn("epoch"),
            MofNCompleteColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[tally]}"),
            console=self.console,
            transient=False,
            refresh_per_second=4,
        )
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

    def epoch(self, epoch: int, epochs: int, line: str) -> None:
        if self.task is not None:
            self.bar.update(self.task, completed=epoch, total=epochs)
            self.bar.refresh()

    def record(self, record: dict) -> None:
        self.tally.add(record)
        if self.task is not None:
            self.bar.update(self.task, tally=self.tally.text())


@contextmanager
def reporter(quiet: bool = False, stream=None) -> Iterator[Progress]:
    """The ``Progress`` of a command: silent with ``quiet``, a live bar when ``stream`` (default
    stderr) is a terminal, else one plain line per message and per epoch."""
    stream = stream or sys.stderr
    if quiet:
        yield QUIET
    elif stream.isatty():
        with LiveProgress(stream) as live:
            yield live
    else:
        yield STDERR


def epoch_lines(progress: Progress, *, prefix: str, stage: str, arch, epochs: int) -> EpochCallback:
    """The per-epoch callback of a training outside the search (``[final]``, ``[train]``): a line per
    epoch, or the live bar's candidate."""
    progress.candidate(stage, number=0, label=str(arch), epochs=epochs)
    return lambda e, n, loss, acc, s: progress.epoch(e, n, f"{prefix}epoch {e}/{n} loss {loss:.3f} train {acc:.1f}%")
