"""The ``face`` task: an embedding network trained with an ArcFace margin over training identities,
ranked and reported by the standard verification protocol on pairs of held-out identities.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgenas.data import ImageData, Split, channel_stats, normalize, read_images
from edgenas.errors import DataError, UserInputError
from edgenas.network import Network
from edgenas.space import Arch
from edgenas.space import count_macs as _space_macs
from edgenas.space import count_params as _space_params
from edgenas.verification import Pairs, Verification, make_pairs, read_pairs_file, resolve_pairs, roc_points, verify

DATASETS = ("imagefolder", "lfw")
INPUT_SIZE = (112, 112)  # (H, W) when the profile sets no data.input_size: the usual aligned crop
LFW_IMAGE_SETS = {"funneled": "lfw_funneled", "deepfunneled": "lfw-deepfunneled", "original": "lfw"}


# -- the network -----------------------------------------------------------------------------------
class EmbeddingNet(nn.Module):
    """The searched backbone (``Network``'s stem, layers, pool) -> Linear -> BatchNorm1d -> L2 norm.

    ``forward`` gives unit-length embeddings (what is exported); ``features`` the embedding before
    normalisation (what the margin head trains on, as ``train.fit`` calls it).
    """

    def __init__(self, arch: Arch, in_channels: int, embedding_dim: int):
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        backbone = Network(arch, in_channels, embedding_dim)
        self.arch, self.in_channels, self.embedding_dim = arch, in_channels, embedding_dim
        self.stem, self.layers, self.pool = backbone.stem, backbone.layers, backbone.pool
        self.embedding = backbone.classifier  # Linear(final width -> embedding_dim)
        self.bn = nn.BatchNorm1d(embedding_dim)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return Network.features(self, x)  # the backbone's pooled features, (N, final width)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.embedding(self.pooled(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.features(x), dim=1)


def count_params(arch: Arch, in_channels: int, embedding_dim: int) -> int:
    """Trainable parameters of ``EmbeddingNet`` (the deployed network; the margin head is not in it)."""
    return _space_params(arch, in_channels, embedding_dim) + 2 * embedding_dim  # + BatchNorm1d affine


def count_macs(arch: Arch, in_channels: int, embedding_dim: int, input_size: tuple[int, int]) -> int:
    """MACs of one image through ``EmbeddingNet``: convolutions and the embedding layer (BN folds away)."""
    return _space_macs(arch, in_channels, embedding_dim, input_size)


class ArcFace(nn.Module):
    """Additive angular margin head (training only): logits ``s * cos(theta + m)`` for the true
    identity, ``s * cos(theta)`` for the others, theta the angle between embedding and class centre.

    Where ``theta + m`` would pass pi the target logit becomes ``s * (cos theta - m sin m)``, which
    keeps falling with theta (insightface). Cosines are clamped to ``[-1 + EPS, 1 - EPS]`` before the
    sine is taken, so gradients stay finite at cos = +-1. Computed in float32 even under autocast.
    """

    EPS = 1e-6

    def __init__(self, embedding_dim: int, num_classes: int, scale: float = 64.0, margin: float = 0.5):
        super().__init__()
        if embedding_dim < 1 or num_classes < 2:
            raise ValueError(f"ArcFace needs embedding_dim >= 1 and >= 2 classes, got {embedding_dim}, {num_classes}")
        if scale <= 0 or not 0 <= margin < math.pi / 2:
            raise ValueError(f"ArcFace needs scale > 0 and margin in [0, pi/2), got {scale}, {margin}")
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.xavier_uniform_(self.weight)
        self.scale, self.margin = float(scale), float(margin)
        self.cos_m, self.sin_m = math.cos(margin), math.sin(margin)
        self.threshold = math.cos(math.pi - margin)  # cos theta below this: theta + m > pi
        self.fallback = math.sin(math.pi - margin) * margin

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(embeddings.float(), dim=1), F.normalize(self.weight.float(), dim=1))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.autocast(embeddings.device.type, enabled=False):
            cos = self.cosine(embeddings).clamp(-1.0 + self.EPS, 1.0 - self.EPS)
            target = cos.gather(1, labels.view(-1, 1))
            sin = torch.sqrt(1.0 - target * target)
            phi = target * self.cos_m - sin * self.sin_m  # cos(theta + m)
            phi = torch.where(target > self.threshold, phi, target - self.fallback)
            return cos.scatter(1, labels.view(-1, 1), phi) * self.scale


# -- data ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FaceData(ImageData):
    """Identities split three ways: ``train`` (labels 0..K-1, the margin head's classes), ``val``
    and ``test`` (held-out identities; labels local to the split) with their verification pairs."""

    val_pairs: Optional[Pairs] = None
    test_pairs: Optional[Pairs] = None
    identities: tuple[tuple[str, ...], ...] = ((), (), ())  # train, val, test names
    image_root: str = ""  # the folder with one sub-folder per identity (where pairs files point)


def image_root(name: str, data_dir: str | Path) -> Path:
    """The folder holding one sub-folder per identity: ``data_dir``, or LFW's images in it."""
    data_dir = Path(data_dir).expanduser()
    if name == "lfw":
        for folder in LFW_IMAGE_SETS.values():
            if (data_dir / "lfw-py" / folder).is_dir():
                return data_dir / "lfw-py" / folder
    return data_dir


def _list_lfw(data_dir: Path, download: bool) -> tuple[list[str], list[int], list[str], Path]:
    from torchvision.datasets import LFWPeople

    expected = f"{data_dir}/lfw-py/ with lfw-funneled.tgz, lfw_funneled/, people.txt, lfw-names.txt (torchvision's LFWPeople layout)"
    if download:
        raise DataError(f"lfw: torchvision can no longer download LFW; place the files yourself: {expected}")
    for image_set, folder in LFW_IMAGE_SETS.items():
        try:
            ds = LFWPeople(str(data_dir), split="10fold", image_set=image_set)
        except RuntimeError:  # "Dataset not found or corrupted"
            continue
        names = {i: n for n, i in ds.class_to_idx.items()}
        return list(ds.data), list(ds.targets), [names[i] for i in range(len(names))], Path(ds.images_dir)
    raise DataError(f"lfw: LFW files not found (or corrupt) in {data_dir}; expected {expected}")


def list_identities(name: str, data_dir, download: bool = False) -> tuple[list[str], np.ndarray, tuple[str, ...], Path]:
    """(image paths, identity per image, identity names, image root) of an identity dataset."""
    from torchvision.datasets import ImageFolder

    if name not in DATASETS:
        raise DataError(f"the face task reads identity images: --dataset imagefolder (one folder per person) or lfw, not {name!r}")
    if data_dir is None:
        raise DataError(f"dataset {name} needs a data directory: pass --data-dir DIR (one folder of face crops per person)")
    path = Path(data_dir).expanduser().resolve()
    if not path.is_dir():
        raise DataError(f"data directory {path} {'is not a directory' if path.exists() else 'does not exist'}; pass --data-dir with an existing directory")
    if name == "lfw":
        paths, targets, names, root = _list_lfw(path, download)
    else:
        try:
            folder = ImageFolder(str(path), allow_empty=True)
        except (FileNotFoundError, OSError) as e:
            raise DataError(f"imagefolder: {path} holds no identity folders ({' '.join(str(e).split())}); "
                            f"expected {path}/PERSON_NAME/IMAGE.png, one folder per person") from None
        paths, targets, names, root = [p for p, _ in folder.samples], [t for _, t in folder.samples], folder.classes, path
    used = np.unique(np.asarray(targets, dtype=np.int64))  # drop identities without images
    remap = np.full(len(names), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return paths, remap[np.asarray(targets, dtype=np.int64)], tuple(names[i] for i in used), root


def split_identities(counts, fraction: float, seed) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded (train, val, test) identity indices. ``fraction`` of the identities with 2+ images (at
    least 2) goes to each of val and test, and ``fraction`` of those with one image; the rest train."""
    counts = np.asarray(counts)
    rng = np.random.default_rng(seed)
    multi, single = np.flatnonzero(counts >= 2), np.flatnonzero(counts == 1)
    k_multi, k_single = max(2, int(round(fraction * len(multi)))), int(round(fraction * len(single)))
    if 2 * k_multi + 2 > len(multi) + len(single) - 2 * k_single or 2 * k_multi > len(multi):
        raise DataError(f"the face task needs more identities: {len(multi)} have 2+ images, {len(single)} one; "
                        f"{k_multi} with 2+ images go to each of validation and test (face.val_identities = {fraction}) "
                        f"and at least 2 must be left to train; add identities or lower face.val_identities")
    multi, single = rng.permutation(multi), rng.permutation(single)
    val = np.concatenate([multi[:k_multi], single[:k_single]])
    test = np.concatenate([multi[k_multi:2 * k_multi], single[k_single:2 * k_single]])
    train = np.concatenate([multi[2 * k_multi:], single[2 * k_single:]])
    return np.sort(train), np.sort(val), np.sort(test)


def load_faces(name: str, data_dir, *, input_size=None, channels=None, val_identities: float = 0.2,
               val_pairs: int = 600, seed: int = 0, download: bool = False) -> FaceData:
    """Load an identity dataset whole and split it by identity (seeded): training identities, and two
    held-out groups (each ``val_identities`` of them) with ``val_pairs`` balanced pairs each."""
    size = tuple(int(v) for v in (input_size or INPUT_SIZE))
    channels = channels or 3
    paths, labels, names, root = list_identities(name, data_dir, download)
    groups = split_identities(np.bincount(labels, minlength=len(names)), val_identities, [seed, 0])
    x = read_images(paths, size, channels)
    splits = []
    for ids in groups:
        local = np.full(len(names), -1, dtype=np.int64)
        local[ids] = np.arange(len(ids))
        take = np.flatnonzero(local[labels] >= 0)
        splits.append(Split(x[torch.from_numpy(take)].contiguous(), torch.from_numpy(local[labels[take]])))
    mean, std = channel_stats(splits[0].x)
    return FaceData(
        name=name, train=splits[0], val=splits[1], test=splits[2], num_classes=len(groups[0]), in_channels=channels,
        input_size=size, mean=mean, std=std,
        class_names=tuple(names[i] for i in groups[0]), flip=True,
        val_pairs=make_pairs(splits[1].y.numpy(), val_pairs, [seed, 1]),
        test_pairs=make_pairs(splits[2].y.numpy(), val_pairs, [seed, 2]),
        identities=tuple(tuple(names[i] for i in g) for g in groups), image_root=str(root),
    )


# -- evaluation and the task ------------------------------------------------------------------------
@torch.inference_mode()
def embed(model: nn.Module, x: torch.Tensor, mean, std, device, batch_size: int = 256) -> np.ndarray:
    """Embeddings (N, D) float32 of uint8 images ``x``, normalised with ``mean``/``std``."""
    was_training = model.training
    model.eval()
    try:
        out = [model(normalize(x[i:i + batch_size].to(device), tuple(mean), tuple(std))).float().cpu()
               for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out).numpy()


def pair_scores(model: nn.Module, x: torch.Tensor, pairs: Pairs, mean, std, device) -> np.ndarray:
    """Cosine similarity of each pair's embeddings (images ``x``)."""
    e = embed(model, x, mean, std, device)
    return np.sum(e[pairs.a] * e[pairs.b], axis=1)


def evaluate_pairs(model: nn.Module, x: torch.Tensor, pairs: Pairs, mean, std, device) -> Verification:
    """The verification figures of ``model`` on ``pairs`` over the images ``x``."""
    return verify(pair_scores(model, x, pairs, mean, std, device), pairs.same, pairs.folds)


class FaceTask:
    """The task protocol of ``edgenas.tasks`` for face verification."""

    name = "face"
    metric = "verify acc"

    def load_data(self, name, data_dir, profile, seed, download) -> FaceData:
        f, d = profile.face, profile.data
        return load_faces(name, data_dir, input_size=d.input_size, channels=d.channels, val_identities=f.val_identities,
                          val_pairs=f.val_pairs, seed=seed, download=download)

    def extra_meta(self, data: FaceData) -> dict:
        pairs = {k: {"same": int(p.same.sum()), "different": int((~p.same).sum())}
                 for k, p in (("val", data.val_pairs), ("test", data.test_pairs))}
        return {"face": {"identities": dict(zip(("train", "val", "test"), map(len, data.identities))),
                         "images": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
                         "pairs": pairs, "image_root": data.image_root}}

    def outputs(self, data, profile) -> int:
        return profile.face.embedding_dim

    def model_size(self, arch: Arch, shape: dict, profile) -> tuple[int, int]:
        c, d = shape["in_channels"], profile.face.embedding_dim
        return count_params(arch, c, d), count_macs(arch, c, d, tuple(shape["input_size"]))

    def train(self, arch, data: FaceData, epochs, profile, device, seed, on_epoch=None):
        from edgenas.train import TrainResult, fit

        t0 = time.perf_counter()
        data, f = data.to(device), profile.face
        torch.manual_seed(seed)
        model = EmbeddingNet(arch, data.in_channels, f.embedding_dim)
        head = ArcFace(f.embedding_dim, data.num_classes, f.scale, f.margin)
        fitted = fit(model, data, epochs, profile.train, device, seed, on_epoch, head=head)
        status, acc = fitted.status, 0.0
        if status == "trained":
            scores = pair_scores(model, data.val.x, data.val_pairs, data.mean, data.std, device)
            if np.isfinite(scores).all():
                acc = verify(scores, data.val_pairs.same, data.val_pairs.folds).accuracy
            else:
                status = "failed"  # a finite loss can still leave non-finite embeddings
        return model, TrainResult(val_acc=acc, train_acc=fitted.train_acc, status=status, epochs=fitted.epochs,
                                  seconds=time.perf_counter() - t0, images_per_s=fitted.images_per_s, loss=fitted.loss)

    def test_metrics(self, model, data: FaceData, device) -> dict:
        v = evaluate_pairs(model, data.test.x, data.test_pairs, data.mean, data.std, device)
        out = {"test_verify_acc": v.accuracy, "test_verify_std": v.accuracy_std, "test_roc_auc": v.roc_auc}
        out["test_tar_at_far_1e-3"] = v.tar_at_far
        return {k: val for k, val in out.items() if val is not None}  # all in percent


# -- edgenas verify --------------------------------------------------------------------------------
def verify_run(run_dir, data_dir=None, pairs_file=None, device=None) -> dict:
    """Verification figures of a face run's network: on a pairs file (LFW format) of images under
    ``data_dir``, or on the run's held-out test identities. Returns what ``verify.json`` holds."""
    from edgenas import __version__
    from edgenas.profiles import stored_profile
    from edgenas.runs import RunDir
    from edgenas.train import select_device

    run = RunDir.open(run_dir)
    meta = run.meta
    if meta.get("task", "classify") != "face":
        raise UserInputError(f"{run.path} is a {meta.get('task', 'classify')} run; edgenas verify needs a face run "
                             f"(edgenas discover --task face)")
    dev = select_device(device)
    ds, shape = meta["dataset"], run.data_shape
    data_dir = data_dir or ds.get("data_dir")
    if not data_dir:
        raise UserInputError(f"--data-dir: {run.path} has no data directory on record; give the folder of identity images")
    if pairs_file:
        if not Path(data_dir).expanduser().is_dir():
            raise DataError(f"--data-dir {data_dir} is not a directory")
        root = image_root(ds["name"], data_dir)
        lines = read_pairs_file(pairs_file)
        paths, pairs = resolve_pairs(lines, root, pairs_file)
        x = read_images(paths, tuple(shape["input_size"]), shape["in_channels"])
        trained = set(shape["class_names"])
        seen = {p.name_a for p in lines} | {p.name_b for p in lines}
        source, overlap = str(pairs_file), len(seen & trained)
    else:
        task = FaceTask()
        data = task.load_data(ds["name"], data_dir, stored_profile(meta["profile"]), ds["split_seed"], False)
        x, pairs, root = data.test.x, data.test_pairs, Path(data.image_root)
        source, overlap = "held-out test identities", 0
    scores = pair_scores(run.load_model(str(dev)), x, pairs, shape["mean"], shape["std"], dev)
    v = verify(scores, pairs.same, pairs.folds)
    return {"run_dir": str(run.path), "arch": str(run.arch()), "pairs_source": source,
            "data_dir": str(Path(data_dir).expanduser().resolve()), "image_root": str(root),
            "training_identities_in_pairs": overlap, **v.to_dict(), "roc": roc_points(scores, pairs.same),
            "edgenas_version": __version__}


def format_verification(r: dict) -> str:
    lines = [f"{r['arch']}: {r['pairs']} pairs ({r['same']} same, {r['different']} different) from {r['pairs_source']}",
             f"  accuracy      {r['accuracy']:.2f}% ± {r['accuracy_std']:.2f} ({r['folds']}-fold: threshold chosen on the other folds)",
             f"  threshold     {r['threshold']:.4f} cosine (best on all pairs: {r['best_accuracy']:.2f}%)"]
    if r["roc_auc"] is not None:
        lines.append(f"  ROC AUC       {r['roc_auc']:.2f}%")
    if r["tar_at_far"] is not None:
        note = (f" (only {r['different']} different pairs: this is TAR at 0 false accepts)"
                if r["far_floor"] > r["far"] else "")
        lines.append(f"  TAR@FAR={r['far']:.0e} {r['tar_at_far']:.2f}%{note}")
    if r["training_identities_in_pairs"]:
        lines.append(f"  warning: {r['training_identities_in_pairs']} identities of the pairs were used in training")
    return "\n".join(lines)
