"""Ctrl-C and SIGTERM as a request to stop at the end of the current epoch (a second one stops at once)."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

SIGNAL_NAMES: dict[int, str] = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}
EXIT_CODES: dict[int, int] = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal, as a shell reports it


class StopRequest:
    """Which signal asked the training to stop (None: none did)."""

    def __init__(self):
        self.signum: int | None = None

    def __call__(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return "a signal" if self.signum is None else SIGNAL_NAMES.get(self.signum, "a signal")

    @property
    def exit_code(self) -> int:
        return 1 if self.signum is None else EXIT_CODES.get(self.signum, 1)


@contextmanager
def stop_requests():
    """A ``StopRequest`` set by the first Ctrl-C or SIGTERM inside the block; a second one raises
    ``KeyboardInterrupt`` where the process is (the last checkpoint written stays). Outside the main
    thread, where signals cannot be caught, nothing is installed."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum, frame):
        if request.signum is not None:
            raise KeyboardInterrupt
        request.signum = signum

    previous = {s: signal.signal(s, handler) for s in SIGNAL_NAMES}
    try:
        yield request
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
