"""What differs between tasks: how data loads, how a candidate trains, what ranks and what is reported.

``classify`` ranks candidates by validation accuracy and reports test accuracy; ``face`` ranks by
verification accuracy on pairs of held-out identities. Both follow the ``Task`` protocol.
"""

from __future__ import annotations

import time
from typing import Protocol

import numpy as np
import torch

from edgenas.config.profile import TASKS, Profile
from edgenas.search.space import (
    Arch,
    count_embedding_macs,
    count_embedding_params,
    count_macs,
    count_params,
)
from edgenas.training.arcface import ArcFace
from edgenas.training.checkpoint import Checkpointing
from edgenas.training.data import ImageData, load_dataset
from edgenas.training.embeddings import pair_scores, verify_pairs
from edgenas.training.faces import FaceData, load_faces
from edgenas.training.network import EmbeddingNet
from edgenas.training.threads import torch_threads
from edgenas.training.trainer import (
    EpochCallback,
    TrainResult,
    accuracy,
    candidate_threads,
    fit,
    train_candidate,
)
from edgenas.training.verification import verify


class Task(Protocol):
    name: str
    metric: str  # what ranks candidates, for the log

    def load_data(self, name: str, *, data_dir, profile: Profile, seed: int, download: bool) -> ImageData: ...

    def extra_meta(self, data) -> dict:
        """Task-specific facts of the data for run.json's ``data`` section."""

    def outputs(self, data, profile: Profile) -> int:
        """Outputs of the deployed network (classes, or embedding dimensions): ``data`` is an
        ``ImageData`` or anything with ``num_classes``."""

    def model_size(self, arch: Arch, shape, profile: Profile) -> tuple[int, int]:
        """(params, MACs per image) of the network the run deploys: what budgets and summary.json count.
        ``shape``: a ``run.meta.DataShape`` (anything with in_channels, num_classes, input_size)."""

    def train(
        self,
        arch: Arch,
        *,
        data,
        epochs: int,
        profile: Profile,
        device,
        seed: int,
        on_epoch: EpochCallback | None = None,
        threads: int | None = None,
        checkpoint: Checkpointing | None = None,
    ) -> tuple[torch.nn.Module, TrainResult]:
        """``threads``: CPU threads (default: the profile's, or the policy's for this network);
        ``checkpoint``: see ``checkpoint.Checkpointing``."""

    def test_metrics(self, model: torch.nn.Module, data, device) -> dict: ...


class ClassifyTask:
    name = "classify"
    metric = "val acc"

    def load_data(self, name, *, data_dir, profile, seed, download):
        d = profile.data
        return load_dataset(
            name,
            data_dir=data_dir,
            download=download,
            val_fraction=d.val_fraction,
            seed=seed,
            input_size=d.input_size,
            channels=d.channels,
        )

    def extra_meta(self, data) -> dict:
        return {}

    def outputs(self, data, profile) -> int:
        return data.num_classes

    def model_size(self, arch, shape, profile) -> tuple[int, int]:
        c, k = shape.in_channels, shape.num_classes
        return count_params(arch, c, k), count_macs(
            arch, in_channels=c, num_classes=k, input_size=tuple(shape.input_size)
        )

    def train(self, arch, *, data, epochs, profile, device, seed, on_epoch=None, threads=None, checkpoint=None):
        return train_candidate(
            arch,
            data=data,
            epochs=epochs,
            plan=profile.train,
            device=device,
            seed=seed,
            on_epoch=on_epoch,
            threads=threads,
            checkpoint=checkpoint,
        )

    def test_metrics(self, model, data, device) -> dict:
        return {"test_acc": accuracy(model, split=data.test, data=data, device=device)}


class FaceTask:
    """Face verification: an embedding net trained with an ArcFace head, ranked by verification accuracy."""

    name = "face"
    metric = "verify acc"

    def load_data(self, name, *, data_dir, profile, seed, download) -> FaceData:
        f, d = profile.face, profile.data
        return load_faces(
            name,
            data_dir=data_dir,
            input_size=d.input_size,
            channels=d.channels,
            val_identities=f.val_identities,
            val_pairs=f.val_pairs,
            seed=seed,
            download=download,
        )

    def extra_meta(self, data: FaceData) -> dict:
        pairs = {
            k: {"same": int(p.same.sum()), "different": int((~p.same).sum())}
            for k, p in (("val", data.val_pairs), ("test", data.test_pairs))
        }
        return {
            "face": {
                "identities": dict(zip(("train", "val", "test"), map(len, data.identities))),
                "images": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
                "pairs": pairs,
                "image_root": data.image_root,
            }
        }

    def outputs(self, data, profile) -> int:
        return profile.face.embedding_dim

    def model_size(self, arch: Arch, shape, profile) -> tuple[int, int]:
        c, d = shape.in_channels, profile.face.embedding_dim
        return count_embedding_params(arch, c, d), count_embedding_macs(
            arch, in_channels=c, embedding_dim=d, input_size=tuple(shape.input_size)
        )

    def train(
        self, arch, *, data: FaceData, epochs, profile, device, seed, on_epoch=None, threads=None, checkpoint=None
    ):
        t0 = time.perf_counter()
        data, f = data.to(device), profile.face
        if threads is None:
            threads = candidate_threads(profile.train, arch=arch, data=data, outputs=f.embedding_dim)
        torch.manual_seed(seed)
        model = EmbeddingNet(arch, data.in_channels, f.embedding_dim)
        head = ArcFace(f.embedding_dim, num_classes=data.num_classes, scale=f.scale, margin=f.margin)
        fitted = fit(
            model,
            data=data,
            epochs=epochs,
            plan=profile.train,
            device=device,
            seed=seed,
            on_epoch=on_epoch,
            head=head,
            threads=threads,
            checkpoint=checkpoint,
        )
        status, acc = fitted.status, 0.0
        if status == "trained":
            with torch_threads(threads):
                scores = pair_scores(
                    model, x=data.val.x, pairs=data.val_pairs, mean=data.mean, std=data.std, device=device
                )
            if np.isfinite(scores).all():
                acc = verify(scores, same=data.val_pairs.same, folds=data.val_pairs.folds).accuracy
            else:
                status = "failed"  # a finite loss can still leave non-finite embeddings
        return model, TrainResult(
            val_acc=acc,
            train_acc=fitted.train_acc,
            status=status,
            epochs=fitted.epochs,
            seconds=time.perf_counter() - t0,
            images_per_s=fitted.images_per_s,
            loss=fitted.loss,
        )

    def test_metrics(self, model, data: FaceData, device) -> dict:
        v = verify_pairs(model, x=data.test.x, pairs=data.test_pairs, mean=data.mean, std=data.std, device=device)
        out = {"test_verify_acc": v.accuracy, "test_verify_std": v.accuracy_std, "test_roc_auc": v.roc_auc}
        out["test_tar_at_far_1e-3"] = v.tar_at_far
        return {k: val for k, val in out.items() if val is not None}  # all in percent


TASK_CLASSES: dict[str, type[Task]] = {
    "classify": ClassifyTask,
    "face": FaceTask,
}  # typed: mypy checks each against Task
if tuple(TASK_CLASSES) != TASKS:  # the profile validates task names against config.profile.TASKS
    raise ImportError(f"training.tasks implements {tuple(TASK_CLASSES)} but profiles allow {TASKS}")


def task_for(name: str) -> Task:
    """The task of a profile (its ``task`` was validated there)."""
    return TASK_CLASSES[name]()
