"""Synthetic images of a registered dataset's shape with learnable class structure, for benchmarks and tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgenas.errors import DataError
from edgenas.training.augment import random_crop
from edgenas.training.data import ImageData, Split, get_spec, list_datasets


def synthetic_dataset(name: str, *, n_train: int, n_test: int, seed: int = 0, val_fraction: float = 0.1) -> ImageData:
    """Random images of a registered dataset's shape with learnable class structure (for benchmarks).

    Each class has a smooth random prototype; a sample is its prototype at a random contrast, plus
    Gaussian noise, shifted by up to two pixels. ``val_fraction`` of ``n_train`` is held out as ``val``.
    """
    spec = get_spec(name)
    if spec.num_classes is None or spec.mean is None or spec.std is None:
        fixed = [n for n in list_datasets() if get_spec(n).num_classes is not None]
        raise DataError(f"{name} has no fixed shape; synthesise one of: {', '.join(fixed)}")
    c, k, (h, w) = spec.in_channels, spec.num_classes, spec.input_size
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand((k, c, max(2, h // 4), max(2, w // 4)), generator=gen)
    prototypes = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)  # (k, C, H, W) in [0, 1]

    def draw(n: int) -> Split:
        y = torch.arange(n) % k
        y = y[torch.randperm(n, generator=gen)]
        contrast = 0.6 + 0.6 * torch.rand((n, 1, 1, 1), generator=gen)
        x = prototypes[y] * contrast + 0.25 * torch.randn((n, c, h, w), generator=gen)
        x = random_crop(x.clamp_(0, 1), 2, gen)  # per-sample shifts of up to two pixels
        return Split(x.mul_(255).round_().to(torch.uint8), y)

    n_val = int(round(val_fraction * n_train))
    return ImageData(
        name=name,
        train=draw(n_train - n_val),
        val=draw(n_val),
        test=draw(n_test),
        num_classes=k,
        in_channels=c,
        input_size=(h, w),
        mean=spec.mean,
        std=spec.std,
        class_names=tuple(f"class{i}" for i in range(k)),
        flip=spec.flip,
        synthetic=True,
    )
