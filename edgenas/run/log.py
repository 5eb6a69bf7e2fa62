"""Progress messages of a run: a ``Log`` takes one line; the default prints it to stderr."""

from __future__ import annotations

import sys
from typing import Callable

Log = Callable[[str], None]


def stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def quiet_log(message: str) -> None:
    """A ``Log`` that drops every message."""
