"""``run.json`` as a typed record: how a run was made, enough to reload its data and check a resume."""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from edgenas.config.profile import Profile, stored_profile
from edgenas.errors import ProfileError, RunDirError
from edgenas.version import __version__

ORIGIN = ("from_run", "candidate", "candidate_key")  # run.json keys of a run made by `train --candidate`


@dataclass(frozen=True)
class DatasetRecord:
    """Which data a run used and how it was split (``--dataset``, ``--data-dir``, the split seed)."""

    name: str
    data_dir: str | None  # absolute; None for built-in data
    val_fraction: float
    split_seed: int
    input_size: list[int] | None  # the profile's data.input_size
    channels: int | None  # the profile's data.channels
    sizes: dict | None = None  # images per split: {"train": n, "val": n, "test": n} (None in older run.json)
    fingerprint: str | None = None  # "sha256:…" of every image and label (see data_fingerprint; None in older run.json)

    def to_dict(self) -> dict:
        d = {
            "name": self.name,
            "data_dir": self.data_dir,
            "val_fraction": self.val_fraction,
            "split_seed": self.split_seed,
            "input_size": self.input_size,
            "channels": self.channels,
        }
        return d | {k: v for k, v in (("sizes", self.sizes), ("fingerprint", self.fingerprint)) if v is not None}


@dataclass(frozen=True)
class DataShape:
    """What the networks of a run see: input shape, normalisation, classes (and face-split facts)."""

    in_channels: int
    num_classes: int
    input_size: tuple[int, int]  # (H, W)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    face: dict | None = None  # face runs: identities, images and pairs per split, image root

    @property
    def input_chw(self) -> tuple[int, int, int]:
        return (self.in_channels, *self.input_size)

    def to_dict(self) -> dict:
        d = {
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "input_size": list(self.input_size),
            "mean": list(self.mean),
            "std": list(self.std),
            "class_names": list(self.class_names),
        }
        return d | ({"face": self.face} if self.face is not None else {})


@dataclass(frozen=True)
class RunMeta:
    edgenas_version: str
    created: str  # ISO 8601, UTC
    task: str
    seed: int
    device: str
    profile: Profile
    dataset: DatasetRecord
    data: DataShape
    origin: dict | None = None  # a run made by `train --candidate`: from_run, candidate, candidate_key
    threads: int | None = None  # CPU threads its candidates train with (None in older run.json); --resume keeps them

    @property
    def outputs(self) -> int:
        """Outputs of the deployed network: classes, or the embedding size of a face run."""
        return self.profile.face.embedding_dim if self.task == "face" else self.data.num_classes

    def identity(self) -> dict:
        """What defines the run for a resume: the profile by content (not its path), the dataset and
        split, seed, task, the data's shape and classes, its split sizes and fingerprint."""
        d = self.to_dict()
        d["profile"].pop("source", None)
        sizes, fingerprint = d["dataset"].pop("sizes", None), d["dataset"].pop("fingerprint", None)
        return {key: d[key] for key in ("profile", "dataset", "seed", "task", "data")} | {
            "sizes": sizes,
            "fingerprint": fingerprint,
        }

    def same_run(self, other: RunMeta) -> str | None:
        """The first part of ``identity`` that differs from ``other``'s (None when they agree).

        Sizes and fingerprint are compared only when both runs recorded them (older run.json did not)."""
        mine, theirs = self.identity(), other.identity()
        keys = ["profile", "seed", "dataset", "task", "data"]  # seed first: it is the dataset's split seed too
        keys += [k for k in ("sizes", "fingerprint") if mine[k] is not None and theirs[k] is not None]
        return next((key for key in keys if mine[key] != theirs[key]), None)

    def to_dict(self) -> dict:
        ds = self.dataset
        return {
            "edgenas_version": self.edgenas_version,
            "created": self.created,
            "task": self.task,
            "seed": self.seed,
            "device": self.device,
            "profile": self.profile.to_dict(),
            "dataset": ds.to_dict(),
            "data": self.data.to_dict(),
            **(self.origin or {}),
        } | ({"threads": self.threads} if self.threads is not None else {})

    @classmethod
    def from_dict(cls, d, source: str = "run.json") -> RunMeta:
        """Read run.json's content; anything missing or of the wrong kind is a one-line ``RunDirError``."""
        try:
            ds, data = d["dataset"], d["data"]
            return cls(
                edgenas_version=str(d["edgenas_version"]),
                created=str(d["created"]),
                task=str(d["task"]),
                seed=int(d["seed"]),
                device=str(d["device"]),
                profile=stored_profile(d["profile"]),
                dataset=DatasetRecord(
                    str(ds["name"]),
                    ds["data_dir"],
                    float(ds["val_fraction"]),
                    int(ds["split_seed"]),
                    ds.get("input_size"),
                    ds.get("channels"),
                    _sizes(ds.get("sizes")),
                    _fingerprint(ds.get("fingerprint")),
                ),
                data=DataShape(
                    int(data["in_channels"]),
                    int(data["num_classes"]),
                    _hw(data["input_size"]),
                    tuple(float(v) for v in data["mean"]),
                    tuple(float(v) for v in data["std"]),
                    tuple(str(c) for c in data["class_names"]),
                    data.get("face"),
                ),
                origin={k: d[k] for k in ORIGIN if k in d} or None,
                threads=_threads(d.get("threads")),
            )
        except (KeyError, TypeError, ValueError, AttributeError, ProfileError) as e:
            what = f"missing {e}" if isinstance(e, KeyError) else " ".join(str(e).split())[:200]
            raise RunDirError(f"{source} is damaged ({what}); it cannot be read as an edgenas run") from None


def _hw(value) -> tuple[int, int]:
    """An (H, W) pair; any other length is a ``ValueError``."""
    h, w = (int(v) for v in value)
    return h, w


def _threads(value) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"threads {str(value)[:40]!r} is not a count of CPU threads (an integer >= 1)")
    return value


def _sizes(value) -> dict | None:
    return None if value is None else {str(k): int(v) for k, v in value.items()}


def _fingerprint(value) -> str | None:
    if value is not None and not (isinstance(value, str) and value.startswith("sha256:")):
        raise ValueError(f"dataset.fingerprint {str(value)[:40]!r} is not a 'sha256:…' string")
    return value


def data_fingerprint(data) -> str:
    """``sha256:…`` of a loaded dataset: class names, and each split's images and labels (dtype,
    shape and bytes). Any change to the files that changes what the search sees changes it."""
    h = hashlib.sha256(json.dumps([list(data.class_names), data.in_channels, list(data.input_size)]).encode())
    for split in (data.train, data.val, data.test):
        for t in (split.x, split.y):
            t = t.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.numpy().view("uint8").reshape(-1).data if t.numel() else b"")
    return "sha256:" + h.hexdigest()


def _data_identity(data) -> tuple[dict | None, str | None]:
    """(split sizes, fingerprint) of a loaded dataset; (None, None) for a bare shape (as in tests)."""
    if not all(hasattr(data, s) for s in ("train", "val", "test")):
        return None, None
    return {"train": len(data.train), "val": len(data.val), "test": len(data.test)}, data_fingerprint(data)


def data_shape(data, extra: dict) -> DataShape:
    """The ``DataShape`` of a loaded dataset (``extra``: the task's facts, e.g. the face split)."""
    return DataShape(
        data.in_channels,
        data.num_classes,
        tuple(data.input_size),
        tuple(data.mean),
        tuple(data.std),
        tuple(data.class_names),
        extra.get("face"),
    )


def run_meta(
    profile: Profile,
    *,
    task: str,
    dataset: str,
    data_dir,
    data,
    extra: dict,
    seed: int,
    device,
    threads: int | None = None,
) -> RunMeta:
    """What run.json records for a new run of ``profile`` on ``data`` (``threads``: its CPU threads)."""
    d = profile.data
    sizes, fingerprint = _data_identity(data)
    return RunMeta(
        edgenas_version=__version__,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        task=task,
        seed=seed,
        device=str(device),
        profile=profile,
        dataset=DatasetRecord(
            dataset,
            str(Path(data_dir).expanduser().resolve()) if data_dir else None,
            d.val_fraction,
            seed,
            list(d.input_size) if d.input_size else None,
            d.channels,
            sizes,
            fingerprint,
        ),
        data=data_shape(data, extra),
        threads=threads,
    )


def versions() -> dict:
    """The versions a result was made with (summary.json)."""
    import torch

    return {"edgenas": __version__, "torch": torch.__version__, "python": platform.python_version()}
