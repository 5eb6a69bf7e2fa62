"""Face data: identity folders (or LFW) read whole and split by identity, with verification pairs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgenas.errors import DataError
from edgenas.training.data import ImageData, Split, channel_stats, read_images
from edgenas.training.images import list_image_folder
from edgenas.training.verification import Pairs, make_pairs

DATASETS = ("imagefolder", "lfw")
INPUT_SIZE = (112, 112)  # (H, W) when the profile sets no data.input_size: the usual aligned crop
LFW_IMAGE_SETS = {"funneled": "lfw_funneled", "deepfunneled": "lfw-deepfunneled", "original": "lfw"}


@dataclass(frozen=True, kw_only=True)
class FaceData(ImageData):
    """Identities split three ways: ``train`` (labels 0..K-1, the margin head's classes), ``val``
    and ``test`` (held-out identities; labels local to the split) with their verification pairs."""

    val_pairs: Pairs  # keyword-only: required after ImageData's defaulted fields
    test_pairs: Pairs
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
    for image_set in LFW_IMAGE_SETS:
        try:
            ds = LFWPeople(str(data_dir), split="10fold", image_set=image_set)
        except RuntimeError:  # "Dataset not found or corrupted"
            continue
        names = {i: n for n, i in ds.class_to_idx.items()}
        return list(ds.data), list(ds.targets), [names[i] for i in range(len(names))], Path(ds.images_dir)
    raise DataError(f"lfw: LFW files not found (or corrupt) in {data_dir}; expected {expected}")


def list_identities(name: str, data_dir, download: bool = False) -> tuple[list[str], np.ndarray, tuple[str, ...], Path]:
    """(image paths, identity per image, identity names, image root) of an identity dataset."""
    if name not in DATASETS:
        raise DataError(
            f"the face task reads identity images: --dataset imagefolder (one folder per person) or lfw, not {name!r}"
        )
    if data_dir is None:
        raise DataError(
            f"dataset {name} needs a data directory: pass --data-dir DIR (one folder of face crops per person)"
        )
    path = Path(data_dir).expanduser().resolve()
    if not path.is_dir():
        raise DataError(
            f"data directory {path} {'is not a directory' if path.exists() else 'does not exist'}; pass --data-dir with an existing directory"
        )
    names: Sequence[str]  # identity names, by label
    if name == "lfw":
        paths, targets, names, root = _list_lfw(path, download)
    else:
        files, targets, names = list_image_folder(path, allow_empty=True)
        paths, root = [str(p) for p in files], path
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
        raise DataError(
            f"the face task needs more identities: {len(multi)} have 2+ images, {len(single)} one; "
            f"{k_multi} with 2+ images go to each of validation and test (face.val_identities = {fraction}) "
            f"and at least 2 must be left to train; add identities or lower face.val_identities"
        )
    multi, single = rng.permutation(multi), rng.permutation(single)
    val = np.concatenate([multi[:k_multi], single[:k_single]])
    test = np.concatenate([multi[k_multi : 2 * k_multi], single[k_single : 2 * k_single]])
    train = np.concatenate([multi[2 * k_multi :], single[2 * k_single :]])
    return np.sort(train), np.sort(val), np.sort(test)


def load_faces(
    name: str,
    *,
    data_dir,
    input_size=None,
    channels=None,
    val_identities: float = 0.2,
    val_pairs: int = 600,
    seed: int = 0,
    download: bool = False,
) -> FaceData:
    """Load an identity dataset whole and split it by identity (seeded): training identities, and two
    held-out groups (each ``val_identities`` of them) with ``val_pairs`` balanced pairs each."""
    h, w = (int(v) for v in (input_size or INPUT_SIZE))
    size = (h, w)
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
        name=name,
        train=splits[0],
        val=splits[1],
        test=splits[2],
        num_classes=len(groups[0]),
        in_channels=channels,
        input_size=size,
        mean=mean,
        std=std,
        class_names=tuple(names[i] for i in groups[0]),
        flip=True,
        val_pairs=make_pairs(splits[1].y.numpy(), val_pairs, [seed, 1]),
        test_pairs=make_pairs(splits[2].y.numpy(), val_pairs, [seed, 2]),
        identities=tuple(tuple(names[i] for i in g) for g in groups),
        image_root=str(root),
    )
