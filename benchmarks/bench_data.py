"""Data and provenance for the training benchmarks (``benchmarks/bench_train.py``, ``benchmarks/rank_check.py``, ``tools/gpu_check.py``).

Real data when a data directory is given (or the dataset needs none), else synthetic data of the
dataset's shape and size, labelled as such in every report.
"""

from __future__ import annotations

import dataclasses
import os
import platform

import torch
from synthetic import synthetic_dataset

from edgenas.training.data import (
    ImageData,
    Split,
    get_spec,
    load_dataset,
)

# Real sizes (train, test) of each dataset, used for synthetic data of the same shape and size.
SIZES = {
    "cifar10": (50000, 10000),
    "cifar100": (50000, 10000),
    "fashionmnist": (60000, 10000),
    "kmnist": (60000, 10000),
    "emnist": (112800, 18800),
}


def trim(split: Split, n: int | None) -> Split:
    return split if not n or n >= len(split) else Split(split.x[:n], split.y[:n])


def benchmark_data(
    name: str, *, data_dir: str | None, train_images: int | None, val_images: int | None, seed: int
) -> ImageData:
    """Real data when ``data_dir`` is given (or the dataset needs none), else synthetic of its shape and size."""
    if data_dir or not get_spec(name).needs_dir:
        data = load_dataset(name, data_dir=data_dir, seed=seed)
    else:
        n_train, n_test = SIZES.get(name, (50000, 10000))
        n_val = val_images or round(0.1 * (train_images / 0.9 if train_images else n_train))
        if train_images:  # generate only what is used
            n_train = min(n_train, train_images + n_val)
        data = synthetic_dataset(
            name, n_train=n_train, n_test=min(n_test, 1000), seed=seed, val_fraction=n_val / n_train
        )
    return dataclasses.replace(data, train=trim(data.train, train_images), val=trim(data.val, val_images))


def data_label(data: ImageData, note: str = "") -> str:
    kind = "SYNTHETIC (random images of this shape; no real data given)" if data.synthetic else "loaded from files"
    shape = f"{data.in_channels}x{data.input_size[0]}x{data.input_size[1]}"
    return f"{data.name} {kind}{f' ({note})' if note else ''}: {len(data.train)} train / {len(data.val)} val images {shape}"


def benchmark_environment(device: torch.device) -> dict:
    env = {
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
        "host_cpus": os.cpu_count(),
    }
    if device.type == "cuda":
        env.update(
            device_name=torch.cuda.get_device_name(device),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    else:
        env.update(device_name=platform.processor() or platform.machine())
    return env
