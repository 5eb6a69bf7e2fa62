"""How the run directory's files are written and read: whole records or none, one-line errors.

A record is appended by one loop of ``os.write`` calls and fsynced; when a write fails (disk
full, file-size limit, read-only, no permission) the file is cut back to its previous length, so
no torn record stays. Reading trusts a torn last line (no newline: a kill in the middle of a
write) to be cut off; any other line that is not a record is an error naming its line number.
"""

from __future__ import annotations

import errno
import json
import math
import os
from collections.abc import Callable
from pathlib import Path

from edgenas.device_kit.edgenas_kit import write_atomic
from edgenas.errors import EdgenasError, RunDirError, RunWriteError

NUMBER = (int, float)
# The fields every record of a file must carry, with their types (checked when the file is read).
Fields = dict[str, type | tuple[type, ...]]

WHY = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large (a file-size limit was reached)",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:160]


def write_failure(path: Path, e: OSError, *, in_progress: bool) -> EdgenasError:
    """The one-line error for a failed write of ``path``: ``RunWriteError`` (exit 1) when work was in
    progress, else ``RunDirError`` (exit 2: nothing was started)."""
    why = (e.errno is not None and WHY.get(e.errno)) or " ".join((e.strerror or str(e)).split())
    if not in_progress:
        return RunDirError(f"cannot write {path}: {why}")
    return RunWriteError(
        f"cannot write {path}: {why}; the run stopped and nothing torn was left: fix that "
        "(free space, permissions), then run the same command again (a search: with --resume)"
    )


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written: a short write (full disk, size limit) is continued."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[n:]


def _cut_back(fd: int, length: int) -> None:
    """Truncate a file back to ``length`` after a failed append (best effort: a torn, newline-less
    tail that stays is cut off by the next ``--resume``)."""
    try:
        os.ftruncate(fd, length)
        os.fsync(fd)
    except OSError:
        pass


def append_jsonl(path: Path, record: dict) -> None:
    """Append one record as a whole line and fsync it, or raise ``RunWriteError`` with the file as it was."""
    line = (json.dumps(record) + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)  # the umask applies
    except OSError as e:
        raise write_failure(path, e, in_progress=True) from None
    try:
        before = os.fstat(fd).st_size
        try:
            _write_all(fd, line)
            os.fsync(fd)
        except BaseException as e:  # also Ctrl-C or SIGTERM between two partial writes
            _cut_back(fd, before)
            if isinstance(e, OSError):
                raise write_failure(path, e, in_progress=True) from None
            raise
    finally:
        os.close(fd)


def _parse_record(line: bytes, fields: Fields, where: str) -> dict:
    fix = "fix or delete that line (a deleted candidate is trained again), then resume"
    try:
        record = json.loads(line)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise RunDirError(f"{where} is damaged: not JSON ({_one_line(e)[:80]}); {fix}") from None
    if not isinstance(record, dict):
        raise RunDirError(f"{where} is damaged: {type(record).__name__} instead of a record (a JSON object); {fix}")
    for name, kind in fields.items():
        value = record.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise RunDirError(f"{where} is damaged: the record has no valid {name!r}; {fix}")
        if isinstance(value, float) and not math.isfinite(value):  # a NaN accuracy would rank, a NaN latency pass
            raise RunDirError(f"{where} is damaged: its {name!r} is {value}, not a finite number; {fix}")
    return record


def read_jsonl(path: Path, fields: Fields | None = None) -> list[dict]:
    """The records of a JSON-lines file, each a dict with ``fields`` (name → type).

    A last line without its newline (a write cut short by a kill) is not trusted. Any other line
    that is not such a record raises ``RunDirError`` naming the file and line number: records after
    a damaged line are never dropped silently. Blank lines are ignored."""
    if not path.exists():
        return []
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as e:
        raise RunDirError(f"{path} cannot be read ({_one_line(e)})") from None
    return [
        _parse_record(line, fields or {}, f"{path}, line {number},")
        for number, line in enumerate(lines[:-1], start=1)
        if line.strip()
    ]


def trim_torn_tail(path: Path) -> int:
    """Cut a torn last line (no newline) off, so the next append starts on a fresh line; its length."""
    if not path.exists():
        return 0
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end != len(data):
        try:
            with open(path, "r+b") as f:
                f.truncate(end)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise write_failure(path, e, in_progress=False) from None
    return len(data) - end


def write_file_atomic(path: Path, write: Callable, *, in_progress: bool) -> None:
    """``write(file)`` into a temp file beside ``path``, fsync, rename over ``path``; on failure the
    temp file is removed and the error is one line (see ``write_failure``)."""
    try:
        write_atomic(path, write)
    except OSError as e:
        raise write_failure(path, e, in_progress=in_progress) from None


def write_json_atomic(path: Path, obj, *, in_progress: bool = True) -> None:
    """Write JSON to a temp file in the same folder, fsync, then rename over ``path``."""
    data = (json.dumps(obj, indent=2) + "\n").encode()
    write_file_atomic(Path(path), lambda f: f.write(data), in_progress=in_progress)
