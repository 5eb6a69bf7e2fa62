"""Progress messages of a run: a ``Log`` takes one line; the default prints it to stderr."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for the annotation only: this module stays free of torch
    from edgenas.training.trainer import EpochCallback

Log = Callable[[str], None]


def stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def quiet_log(message: str) -> None:
    """A ``Log`` that drops every message (``--quiet``: errors still reach stderr through the CLI)."""


def epoch_log(log: Log, *, prefix: str, progress=None, stage: str, arch, epochs: int) -> EpochCallback:
    """The per-epoch callback of a training outside the search: a line per epoch, or the live display."""
    if progress:  # a run.progress.Progress on a terminal (not annotated: that module imports this one)
        progress.candidate(stage, number=0, label=str(arch), epochs=epochs)
        return progress.epoch
    return lambda e, n, loss, acc, s: log(f"{prefix}epoch {e}/{n} loss {loss:.3f} train {acc:.1f}%")
