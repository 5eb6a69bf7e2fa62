"""The run directory: what a search leaves behind, written so a kill loses at most one candidate.

    run.json        how the run was made (profile, dataset, seed, data shape); checked on --resume
    journal.jsonl   one JSON record per finished candidate, appended and fsynced line by line
    latency.jsonl   measured latencies per architecture (so a resumed search does not re-measure)
    arch.json       the discovered architecture
    summary.json    architecture, params, MACs, latency, budgets, accuracies, epochs, timings, versions
    model.pt        the final network's weights (a state_dict; load with weights_only=True)
    model.N.pt      earlier final weights, kept when `edgenas train` trained the network again
                    (their figures: summary.json's ``earlier_models``)
    checkpoint.pt   an unfinished `edgenas train`: everything `--resume` needs (gone once model.pt is written)
    .lock           held by the one process working in the directory (see lock.py)

Damage is reported, never skipped: see files.py for what a write and a read guarantee.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from edgenas.errors import ParamError, RunDirError
from edgenas.run.files import (
    NUMBER,
    Fields,
    append_jsonl,
    read_jsonl,
    trim_torn_tail,
    write_file_atomic,
    write_json_atomic,
)
from edgenas.run.lock import RunLock
from edgenas.run.meta import RunMeta
from edgenas.search.space import Arch

__all__ = ["RunDir", "append_jsonl", "read_jsonl", "write_json_atomic"]

# What the search reads back from each record (the rest is for people and summaries).
JOURNAL_FIELDS: Fields = {"key": str, "status": str, "acc": NUMBER, "train_acc": NUMBER, "seconds": NUMBER}
LATENCY_FIELDS: Fields = {"key": str, "ms": NUMBER}
DATA_CHANGES = {"data": "classes, image shape or pixel statistics", "sizes": "split sizes", "fingerprint": "images"}


def _changed(stored, given) -> str:
    """Where two run.json values first differ, in words."""
    if isinstance(stored, dict) and isinstance(given, dict):
        key = next((k for k in {**stored, **given} if stored.get(k) != given.get(k)), None)
        if key is not None:
            return f"{key} {json.dumps(stored.get(key))[:60]}, now {json.dumps(given.get(key))[:60]}"
    return f"{json.dumps(stored)[:60]}, now {json.dumps(given)[:60]}"


class RunDir:
    META, JOURNAL, LATENCY = "run.json", "journal.jsonl", "latency.jsonl"
    ARCH, SUMMARY, WEIGHTS = "arch.json", "summary.json", "model.pt"
    CHECKPOINT = "checkpoint.pt"

    @staticmethod
    def earlier_weights(number: int) -> str:
        """The name of the ``number``-th earlier final weights (1-based: model.1.pt is the oldest)."""
        return f"model.{number}.pt"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # -- creation and resume ------------------------------------------------------------------
    @classmethod
    def start(cls, path: str | Path, meta: RunMeta, *, resume: bool) -> RunDir:
        """Open ``path`` for a new search, or for continuing one with ``resume`` (hold its ``lock`` first)."""
        run = cls(path)
        if resume:
            cls.refuse_headless(run.path)
            if not (run.path / cls.META).exists():
                raise ParamError(
                    "resume",
                    True,
                    f"{run.path} holds no search to resume (no {cls.META}); start one without {{resume}}",
                )
            run.check_same_run(meta)
            run.journal(), run.latencies()  # damage anywhere is an error now, before anything is trained
            trim_torn_tail(run.path / cls.JOURNAL)
            trim_torn_tail(run.path / cls.LATENCY)
            return run
        cls.refuse_taken(run.path)
        try:
            run.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunDirError(f"cannot create {run.path} ({' '.join(str(e).split())[:120]})") from None
        write_json_atomic(run.path / cls.META, meta.to_dict(), in_progress=False)
        return run

    def check_same_run(self, meta: RunMeta) -> None:
        """Refuse to resume with settings or data other than the run's own (one line naming what differs)."""
        stored = self.meta
        differs = stored.same_run(meta)
        if differs is None:
            return
        before, now = stored.identity()[differs], meta.identity()[differs]
        if differs in DATA_CHANGES:
            raise RunDirError(
                f"{self.path} was searched on other data: the dataset's {DATA_CHANGES[differs]} changed "
                f"({_changed(before, now)}); resume on the same data, or start a new run elsewhere"
            )
        raise RunDirError(
            f"{self.path} was started with a different {differs} ({_changed(before, now)}); "
            "resume with the same settings or start a new run elsewhere"
        )

    @classmethod
    def refuse_taken(cls, path: Path, hint: str = "continue it with {resume}, or choose another {out}") -> None:
        """A new run never goes into a directory that holds one (or into a file)."""
        cls.refuse_headless(path)
        if (path / cls.META).exists() or (path / cls.JOURNAL).exists():
            raise ParamError("out", str(path), f"already holds a search; {hint}")
        if path.exists() and not path.is_dir():
            raise ParamError("out", str(path), "is a file, not a directory")

    @staticmethod
    def refuse_headless(path: Path) -> None:
        """A journal without run.json can be neither resumed (what made it is unknown) nor overwritten."""
        if (path / RunDir.JOURNAL).exists() and not (path / RunDir.META).exists():
            raise RunDirError(
                f"{path} holds a search's {RunDir.JOURNAL} but no {RunDir.META} (deleted?): it can "
                f"neither be resumed nor started again there; put its {RunDir.META} back to resume it, "
                "or start the search in another directory (or delete this one)"
            )

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """An existing run directory (for train, export, bench, verify)."""
        run = cls(path)
        if not (run.path / cls.META).is_file():
            raise RunDirError(
                f"{run.path} is not an edgenas run directory (no {cls.META}); "
                "give the run directory of a finished `edgenas discover`"
            )
        return run

    def lock(self, command: str) -> RunLock:
        """The run directory's exclusive lock, for ``with``: ``command`` names the holder for others."""
        return RunLock(self.path, command)

    @property
    def finished(self) -> bool:
        """The search ended and its network was trained (``--resume`` has nothing left to do)."""
        return (self.path / self.SUMMARY).is_file() and (self.path / self.WEIGHTS).is_file()

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
        return read_jsonl(self.path / self.JOURNAL, JOURNAL_FIELDS)

    def record(self, record: dict) -> None:
        append_jsonl(self.path / self.JOURNAL, record)

    def latencies(self) -> dict[str, float]:
        return {r["key"]: r["ms"] for r in read_jsonl(self.path / self.LATENCY, LATENCY_FIELDS)}

    def record_latency(self, key: str, ms: float, source: dict | None = None) -> None:
        """``source``: what the figure is valid for (``CostSource.identity()``: runtime, device ...)."""
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

    def save_checkpoint(self, checkpoint: dict) -> None:
        """checkpoint.pt (tensors and plain data only), written whole or not at all."""
        import torch

        buf = io.BytesIO()
        torch.save(checkpoint, buf)
        write_file_atomic(self.path / self.CHECKPOINT, lambda f: f.write(buf.getbuffer()), in_progress=True)

    def checkpoint(self) -> dict | None:
        """The unfinished training's checkpoint (loaded with weights_only=True), or None."""
        import pickle

        import torch

        path = self.path / self.CHECKPOINT
        if not path.is_file():
            return None
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, ValueError) as e:
            raise RunDirError(
                f"{path} cannot be read ({' '.join(str(e).split())[:120]}); delete it to train from the start"
            ) from None
        if not isinstance(checkpoint, dict) or "state" not in checkpoint:
            raise RunDirError(f"{path} is not an edgenas training checkpoint; delete it to train from the start")
        return checkpoint

    def drop_checkpoint(self) -> None:
        (self.path / self.CHECKPOINT).unlink(missing_ok=True)

    def keep_weights(self) -> str | None:
        """Keep the current model.pt as the next free model.N.pt (a hard link, else a copy), before new
        weights replace it; that name, or None when there is no model.pt."""
        current = self.path / self.WEIGHTS
        if not current.is_file():
            return None
        number = 1
        while (self.path / self.earlier_weights(number)).exists():
            number += 1
        kept = self.path / self.earlier_weights(number)
        try:
            os.link(current, kept)
        except OSError:
            data = current.read_bytes()
            write_file_atomic(kept, lambda f: f.write(data), in_progress=True)
        return kept.name

    def save_weights(self, model) -> None:
        """model.pt, written whole or not at all (a full disk leaves the previous file and no temp file)."""
        import torch

        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        write_file_atomic(self.path / self.WEIGHTS, lambda f: f.write(buf.getbuffer()), in_progress=True)
