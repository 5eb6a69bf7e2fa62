"""One edgenas process per run directory: an exclusive lock (``RUN_DIR/.lock``) held by discover, train, export.

The kernel releases the lock when its holder ends, however it ends (``kill -9`` included). Who
holds it (command, pid, host, since when) is written beside it, for the error another process gets.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path

from filelock import FileLock, Timeout

from edgenas.errors import RunDirError
from edgenas.run.files import write_failure, write_json_atomic

LOCK_FILE, HOLDER_FILE = ".lock", ".lock.holder"


def _holder(directory: Path) -> str:
    """Who holds the lock of ``directory``, in words (from the holder file, when it can be read)."""
    try:
        h = json.loads((directory / HOLDER_FILE).read_text(encoding="utf-8"))
        return f"`edgenas {h['command']}` (pid {h['pid']} on {h['host']}, since {h['since']})"
    except (OSError, ValueError, TypeError, KeyError):
        return "another edgenas process"


class RunLock:
    """``with RunLock(path, "discover"):`` — the run directory ``path`` (created if needed) is this
    process's until the block ends; another holder gives a one-line ``RunDirError`` naming it."""

    def __init__(self, directory: str | Path, command: str):
        self.directory, self.command = Path(directory), command
        self._lock: FileLock | None = None
        self._created = False  # the directory was made for this lock (removed again if nothing was put in it)

    def acquire(self) -> RunLock:
        if self.directory.exists() and not self.directory.is_dir():
            raise RunDirError(f"{self.directory} is a file, not a directory")
        try:
            self._created = not self.directory.exists()
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise write_failure(self.directory, e, in_progress=False) from None
        lock = FileLock(str(self.directory / LOCK_FILE))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise RunDirError(
                f"{self.directory} is in use by {_holder(self.directory)}; wait until it ends "
                "(or stop it), then try again"
            ) from None
        except OSError as e:
            raise write_failure(self.directory / LOCK_FILE, e, in_progress=False) from None
        self._lock = lock
        holder = {
            "command": self.command,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        try:
            write_json_atomic(self.directory / HOLDER_FILE, holder, in_progress=False)
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        if self._lock is None:
            return
        try:
            (self.directory / HOLDER_FILE).unlink(missing_ok=True)
        except OSError:
            pass  # a stale holder file is only read while someone holds the lock (and rewrites it)
        self._lock.release()
        self._lock = None
        if self._created:
            try:  # a run that failed before writing anything leaves no directory behind
                if {p.name for p in self.directory.iterdir()} <= {LOCK_FILE}:
                    (self.directory / LOCK_FILE).unlink()
                    self.directory.rmdir()
            except OSError:
                pass

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
