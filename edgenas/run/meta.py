"""``run.json`` as a typed record: how a run was made, enough to reload its data and check a resume."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from edgenas.config.profile import Profile, stored_profile
from edgenas.errors import ProfileError, RunDirError
from edgenas.version import __version__

ORIGIN = ("from_run", "candidate", "candidate_key")  # run.json keys of a run made by `train --candidate`


@dataclass(frozen=True)
class DatasetRecord:
    """Which data a run used and how it was split (``--dataset``, ``--data-dir``, the split seed)."""

    name: str
    data_dir: Optional[str]  # absolute; None for built-in data
    val_fraction: float
    split_seed: int
    input_size: Optional[list[int]]  # the profile's data.input_size
    channels: Optional[int]  # the profile's data.channels


@dataclass(frozen=True)
class DataShape:
    """What the networks of a run see: input shape, normalisation, classes (and face-split facts)."""

    in_channels: int
    num_classes: int
    input_size: tuple[int, int]  # (H, W)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    face: Optional[dict] = None  # face runs: identities, images and pairs per split, image root

    @property
    def input_chw(self) -> tuple[int, int, int]:
        return (self.in_channels, *self.input_size)

    def to_dict(self) -> dict:
        d = {"in_channels": self.in_channels, "num_classes": self.num_classes, "input_size": list(self.input_size),
             "mean": list(self.mean), "std": list(self.std), "class_names": list(self.class_names)}
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
    origin: Optional[dict] = None  # a run made by `train --candidate`: from_run, candidate, candidate_key

    @property
    def outputs(self) -> int:
        """Outputs of the deployed network: classes, or the embedding size of a face run."""
        return self.profile.face.embedding_dim if self.task == "face" else self.data.num_classes

    def same_run(self, other: "RunMeta") -> Optional[str]:
        """The first setting that differs from ``other`` for a resume (None when they agree).

        The profile is compared by content: the same file under another path is the same profile."""
        mine, theirs = self.to_dict(), other.to_dict()
        for d in (mine, theirs):
            d["profile"].pop("source", None)
        return next((key for key in ("profile", "dataset", "seed", "task") if mine[key] != theirs[key]), None)

    def to_dict(self) -> dict:
        ds = self.dataset
        return {
            "edgenas_version": self.edgenas_version, "created": self.created, "task": self.task, "seed": self.seed,
            "device": self.device, "profile": self.profile.to_dict(),
            "dataset": {"name": ds.name, "data_dir": ds.data_dir, "val_fraction": ds.val_fraction,
                        "split_seed": ds.split_seed, "input_size": ds.input_size, "channels": ds.channels},
            "data": self.data.to_dict(), **(self.origin or {}),
        }

    @classmethod
    def from_dict(cls, d, source: str = "run.json") -> "RunMeta":
        """Read run.json's content; anything missing or of the wrong kind is a one-line ``RunDirError``."""
        try:
            ds, data = d["dataset"], d["data"]
            return cls(
                edgenas_version=str(d["edgenas_version"]), created=str(d["created"]), task=str(d["task"]),
                seed=int(d["seed"]), device=str(d["device"]), profile=stored_profile(d["profile"]),
                dataset=DatasetRecord(str(ds["name"]), ds["data_dir"], float(ds["val_fraction"]), int(ds["split_seed"]),
                                      ds.get("input_size"), ds.get("channels")),
                data=DataShape(int(data["in_channels"]), int(data["num_classes"]),
                               tuple(int(v) for v in data["input_size"]), tuple(float(v) for v in data["mean"]),
                               tuple(float(v) for v in data["std"]), tuple(str(c) for c in data["class_names"]),
                               data.get("face")),
                origin={k: d[k] for k in ORIGIN if k in d} or None,
            )
        except (KeyError, TypeError, ValueError, AttributeError, ProfileError) as e:
            what = f"missing {e}" if isinstance(e, KeyError) else " ".join(str(e).split())[:200]
            raise RunDirError(f"{source} is damaged ({what}); it cannot be read as an edgenas run") from None


def data_shape(data, extra: dict) -> DataShape:
    """The ``DataShape`` of a loaded dataset (``extra``: the task's facts, e.g. the face split)."""
    return DataShape(data.in_channels, data.num_classes, tuple(data.input_size), tuple(data.mean), tuple(data.std),
                     tuple(data.class_names), extra.get("face"))


def run_meta(profile: Profile, *, task: str, dataset: str, data_dir, data, extra: dict, seed: int, device) -> RunMeta:
    """What run.json records for a new run of ``profile`` on ``data``."""
    d = profile.data
    return RunMeta(
        edgenas_version=__version__, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        task=task, seed=seed, device=str(device), profile=profile,
        dataset=DatasetRecord(dataset, str(Path(data_dir).expanduser().resolve()) if data_dir else None,
                              d.val_fraction, seed, list(d.input_size) if d.input_size else None, d.channels),
        data=data_shape(data, extra),
    )


def versions() -> dict:
    """The versions a result was made with (summary.json)."""
    import torch

    return {"edgenas": __version__, "torch": torch.__version__, "python": platform.python_version()}
