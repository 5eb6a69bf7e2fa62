"""The run directory: what a search leaves behind, written so a kill loses at most one candidate.

    run.json        how the run was made (profile, dataset, seed, data shape); checked on --resume
    journal.jsonl   one JSON record per finished candidate, appended and fsynced line by line
    latency.jsonl   measured latencies per architecture (so a resumed search does not re-measure)
    arch.json       the discovered architecture
    summary.json    architecture, params, MACs, latency, budgets, accuracies, epochs, timings, versions
    model.pt        the final network's weights (a state_dict; load with weights_only=True)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from edgenas.device_kit.edgenas_kit import write_atomic
from edgenas.errors import ParamError, RunDirError
from edgenas.run.meta import RunMeta
from edgenas.search.space import Arch


def write_json_atomic(path: Path, obj) -> None:
    """Write JSON to a temp file in the same folder, fsync, then rename over ``path``."""
    write_atomic(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def _whole_records(data: bytes) -> tuple[list[dict], int]:
    """The records of whole, parseable lines, and the byte length they span."""
    records, end = [], 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            records.append(json.loads(line))
        except ValueError:
            break
        end += len(line)
    return records, end


def read_jsonl(path: Path) -> list[dict]:
    """Records of a JSON-lines file; a torn last line (no newline, or not JSON) is not trusted."""
    return _whole_records(path.read_bytes())[0] if path.exists() else []


def append_jsonl(path: Path, record: dict) -> None:
    """Append one record as a single write, then fsync: a kill leaves at most a torn last line."""
    line = (json.dumps(record) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def _trim_torn_tail(path: Path) -> None:
    """Cut a torn last line off so the next append starts on a fresh line."""
    if not path.exists():
        return
    data = path.read_bytes()
    end = _whole_records(data)[1]
    if end != len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())


class RunDir:
    META, JOURNAL, LATENCY = "run.json", "journal.jsonl", "latency.jsonl"
    ARCH, SUMMARY, WEIGHTS = "arch.json", "summary.json", "model.pt"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # -- creation and resume ------------------------------------------------------------------
    @classmethod
    def start(cls, path: str | Path, meta: RunMeta, *, resume: bool) -> "RunDir":
        """Open ``path`` for a new search, or for continuing one with ``resume``."""
        run = cls(path)
        if resume:
            if not (run.path / cls.META).exists():
                raise ParamError("resume", True, f"{run.path} holds no search to resume (no {cls.META}); start one without {{resume}}")
            differs = run.meta.same_run(meta)
            if differs:
                before = json.dumps(run.meta.to_dict()[differs])[:80]
                raise RunDirError(f"{run.path} was started with a different {differs} ({before}); "
                                  "resume with the same settings or start a new run elsewhere")
            _trim_torn_tail(run.path / cls.JOURNAL)
            _trim_torn_tail(run.path / cls.LATENCY)
            return run
        cls.refuse_taken(run.path)
        run.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run.path / cls.META, meta.to_dict())
        return run

    @classmethod
    def refuse_taken(cls, path: Path, hint: str = "continue it with {resume}, or choose another {out}") -> None:
        """A new run never goes into a directory that holds one (or into a file)."""
        if (path / cls.META).exists() or (path / cls.JOURNAL).exists():
            raise ParamError("out", str(path), f"already holds a search; {hint}")
        if path.exists() and not path.is_dir():
            raise ParamError("out", str(path), "is a file, not a directory")

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        """An existing run directory (for train, export, bench, verify)."""
        run = cls(path)
        if not (run.path / cls.META).is_file():
            raise RunDirError(f"{run.path} is not an edgenas run directory (no {cls.META}); "
                              "give the run directory of a finished `edgenas discover`")
        return run

    # -- files ------------------------------------------------------------------------------------
    @property
    def meta(self) -> RunMeta:
        path = self.path / self.META
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as e:
            raise RunDirError(f"{path} cannot be read ({' '.join(str(e).split())[:120]})") from None
        return RunMeta.from_dict(content, str(path))

    def journal(self) -> list[dict]:
        return read_jsonl(self.path / self.JOURNAL)

    def record(self, record: dict) -> None:
        append_jsonl(self.path / self.JOURNAL, record)

    def latencies(self) -> dict[str, float]:
        return {r["key"]: r["ms"] for r in read_jsonl(self.path / self.LATENCY)}

    def record_latency(self, key: str, ms: float, source: Optional[dict] = None) -> None:
        """``source``: what the figure is valid for (``LatencySource.identity()``: runtime, device ...)."""
        append_jsonl(self.path / self.LATENCY, {"key": key, "ms": ms} | ({"source": source} if source else {}))

    def write(self, name: str, obj) -> None:
        write_json_atomic(self.path / name, obj)

    def read(self, name: str) -> dict:
        path = self.path / name
        if not path.is_file():
            raise RunDirError(f"{path} is missing; the search in {self.path} has not finished (resume it)")
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as e:
            raise RunDirError(f"{path} cannot be read ({' '.join(str(e).split())[:120]})") from None

    def arch(self) -> Arch:
        path = self.path / self.ARCH
        try:
            return Arch.from_dict(self.read(self.ARCH))
        except (ValueError, TypeError, AttributeError) as e:
            raise RunDirError(f"{path} is not a valid architecture ({' '.join(str(e).split())[:160]})") from None

    def save_weights(self, model) -> None:
        import torch

        tmp = self.path / f".{self.WEIGHTS}.tmp"
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, self.path / self.WEIGHTS)
