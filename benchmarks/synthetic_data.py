#!/usr/bin/env python3
"""Write synthetic data of a standard dataset's shape in that dataset's real on-disk format.

For machines that cannot download the real set (benchmarks, dry runs): the files load through the
normal loader (``edgenas discover --dataset fashionmnist --data-dir DIR``), so everything but the
pictures is real. Images come from ``benchmarks/synthetic.py``; ``--label-noise`` replaces a
share of the labels at random so accuracy saturates below 100 % like on real data and the search
runs its normal course instead of stopping at a perfect score.

    python benchmarks/synthetic_data.py fashionmnist /tmp/synth --train 60000 --test 10000 --label-noise 0.08

``--imagefolder H W`` writes the same images as an imagefolder instead (``train/`` and ``test/``, one
folder per class, RGB PNGs: the grey image in all three channels, resized to H x W), for networks
of another input shape (``--dataset imagefolder``, whose default input is 32x32x3).
"""

from __future__ import annotations

import argparse
import struct
import sys
from pathlib import Path

import numpy as np
import torch
from synthetic import synthetic_dataset

IDX_FOLDERS = {"fashionmnist": ("FashionMNIST", "train", "t10k"), "kmnist": ("KMNIST", "train", "t10k")}


def write_idx(path: Path, array: np.ndarray) -> None:
    """The MNIST idx format: big-endian magic (0, 0, 0x08 = uint8, ndim), dims, then the bytes."""
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 8, array.ndim))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def noisy(y: torch.Tensor, share: float, classes: int, seed: int) -> np.ndarray:
    gen = torch.Generator().manual_seed(seed)
    flip = torch.rand(len(y), generator=gen) < share
    return torch.where(flip, torch.randint(0, classes, y.shape, generator=gen), y).numpy()


def write_imagefolder(root: Path, x: np.ndarray, y: np.ndarray, size: tuple[int, int]) -> None:
    from PIL import Image

    for i, (image, label) in enumerate(zip(x, y)):
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        grey = Image.fromarray(image[0]).resize(size[::-1], Image.BILINEAR)
        Image.merge("RGB", (grey, grey, grey)).save(folder / f"{i:06d}.png")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset", choices=sorted(IDX_FOLDERS))
    p.add_argument("out", type=Path)
    p.add_argument("--train", type=int, default=60000, help="training images")
    p.add_argument("--test", type=int, default=10000, help="test images")
    p.add_argument("--label-noise", type=float, default=0.0, help="share of labels replaced at random")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--imagefolder", type=int, nargs=2, metavar=("H", "W"), help="write an RGB imagefolder of this size")
    a = p.parse_args(argv)
    data = synthetic_dataset(a.dataset, n_train=a.train, n_test=a.test, seed=a.seed, val_fraction=0.0)
    x, y = data.train.x.numpy(), noisy(data.train.y, a.label_noise, data.num_classes, a.seed + 1)
    xt, yt = data.test.x.numpy(), noisy(data.test.y, a.label_noise, data.num_classes, a.seed + 2)
    if a.imagefolder:
        write_imagefolder(a.out / "train", x, y, tuple(a.imagefolder))
        write_imagefolder(a.out / "test", xt, yt, tuple(a.imagefolder))
        print(
            f"wrote SYNTHETIC {a.dataset}-shaped data as a {a.imagefolder[0]}x{a.imagefolder[1]} RGB imagefolder "
            f"({len(x)} train, {len(xt)} test, label noise {a.label_noise}) to {a.out}"
        )
        return 0
    folder, train_stem, test_stem = IDX_FOLDERS[a.dataset]
    raw = a.out / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    write_idx(raw / f"{train_stem}-images-idx3-ubyte", x[:, 0])
    write_idx(raw / f"{train_stem}-labels-idx1-ubyte", y)
    write_idx(raw / f"{test_stem}-images-idx3-ubyte", xt[:, 0])
    write_idx(raw / f"{test_stem}-labels-idx1-ubyte", yt)
    print(
        f"wrote SYNTHETIC {a.dataset}-shaped data ({len(x)} train, {len(xt)} test, label noise {a.label_noise}) to {a.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
