"""Datasets by name -> uint8 tensors in memory; batched augmentation as tensor ops on the device.

Every dataset is loaded whole (train / held-out validation / test) into an ``ImageData`` whose
tensors can live on the training device, so training never touches PIL or a DataLoader.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from edgenas.errors import DataError
from edgenas.training.images import decode_images, list_image_folder
from edgenas.training.memory import check_memory

TEST_SPLIT_SEED = 0  # the 20 % test split of digits / imagefolder is fixed, whatever the run's seed
TEST_FRACTION = 0.2
IMAGEFOLDER_SIZE = (32, 32)  # default input size (H, W) of an imagefolder dataset
_RESIZE_CHUNK = 4096  # images resized per interpolate call at most (bounds the float32 working memory)
_RESIZE_WORK_BYTES = 2**28  # float32 working memory of one interpolate call (fewer images per call when large)


@dataclass(frozen=True)
class Split:
    """Images ``x`` (N, C, H, W) uint8 and labels ``y`` (N,) int64."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))


_Data = TypeVar("_Data", bound="ImageData")  # ImageData or a subclass (FaceData): ``to`` keeps the kind


@dataclass(frozen=True)
class ImageData:
    """A whole dataset in memory. ``mean``/``std`` are per channel, in [0, 1] pixel units."""

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    in_channels: int
    input_size: tuple[int, int]  # (H, W)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    flip: bool  # horizontal-flip augmentation
    synthetic: bool = False

    def to(self: _Data, device: torch.device | str) -> _Data:
        """A copy with every tensor on ``device`` (a no-op copy when they are there already)."""
        return dataclasses.replace(
            self, train=self.train.to(device), val=self.val.to(device), test=self.test.to(device)
        )


# --- the registry -------------------------------------------------------------------------------

# A loader returns (train x, train y, test x, test y, class names), x uint8 (N, C, H, W).
RawData = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, tuple[str, ...]]
Loader = Callable[["DatasetSpec", "Path | None", "_LoadOptions"], RawData]


@dataclass(frozen=True)
class DatasetSpec:
    """What a registered dataset is. ``num_classes``/``mean``/``std`` are None where the files decide."""

    name: str
    in_channels: int
    num_classes: int | None
    input_size: tuple[int, int]
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    flip: bool
    loader: Loader
    needs_dir: bool = True
    description: str = ""


@dataclass(frozen=True)
class _LoadOptions:
    download: bool
    input_size: tuple[int, int]
    channels: int


_REGISTRY: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"dataset {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def list_datasets() -> list[str]:
    return sorted(_REGISTRY)


def get_spec(name: str) -> DatasetSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(list_datasets())}") from None


# --- loaders ------------------------------------------------------------------------------------


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _torchvision(class_name: str, layout: str, **kwargs) -> Loader:
    """A loader through ``torchvision.datasets.<class_name>``; ``layout`` is what the files look like."""

    def load(spec: DatasetSpec, data_dir: Path | None, opts: _LoadOptions) -> RawData:
        from torchvision import datasets

        cls = getattr(datasets, class_name)
        splits = []
        for train in (True, False):
            try:
                ds = cls(str(data_dir), train=train, download=opts.download, **kwargs)
            except RuntimeError as e:  # torchvision: "Dataset not found or corrupted. You can use download=True"
                if opts.download:
                    raise DataError(f"{spec.name}: download into {data_dir} failed ({_one_line(e)})") from None
                raise DataError(
                    f"{spec.name}: dataset files not found (or corrupt) in {data_dir} "
                    f"(expected {data_dir}/{layout}); add --download to fetch them"
                ) from None
            except OSError as e:  # network or disk trouble while downloading or reading
                raise DataError(
                    f"{spec.name}: cannot read or download the files in {data_dir} ({_one_line(e)})"
                ) from None
            except (AssertionError, ValueError, TypeError, EOFError, pickle.UnpicklingError) as e:
                raise DataError(
                    f"{spec.name}: the files in {data_dir} are malformed ({_one_line(e)}); "
                    f"delete them and fetch them again with --download"
                ) from None
            x = torch.as_tensor(np.asarray(ds.data))
            x = x.permute(0, 3, 1, 2) if x.ndim == 4 else x.unsqueeze(1)  # CIFAR is NHWC, the MNIST family NHW
            splits += [x.contiguous(), torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)]
        x_train, y_train, x_test, y_test = splits
        return x_train, y_train, x_test, y_test, tuple(str(c) for c in ds.classes)

    return load


def _load_digits(spec: DatasetSpec, data_dir: Path | None, opts: _LoadOptions) -> RawData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)  # 0..16 -> 0..255
    y = torch.from_numpy(bunch.target.astype(np.int64))
    test = stratified_holdout(y, TEST_FRACTION, TEST_SPLIT_SEED)
    train = _complement(test, len(y))
    return x[train], y[train], x[test], y[test], tuple(str(c) for c in bunch.target_names)


def read_images(paths, input_size: tuple[int, int], channels: int) -> torch.Tensor:
    """Decode image files and resize them (bilinear) to uint8 (N, C, H, W); 1 channel = grayscale.
    How each kind of file is read (bit depths, transparency, frames, size limit): ``images``."""
    return torch.from_numpy(decode_images(list(paths), input_size, channels)).permute(0, 3, 1, 2).contiguous()


def _read_image_folder(root: Path, opts: _LoadOptions):
    paths, targets, classes = list_image_folder(root)
    x = read_images(paths, opts.input_size, opts.channels)
    return x, torch.tensor(targets, dtype=torch.int64), classes


def _load_imagefolder(spec: DatasetSpec, data_dir: Path | None, opts: _LoadOptions) -> RawData:
    if data_dir is None:  # the spec needs a folder: load_dataset has refused None already
        raise DataError(f"dataset {spec.name} needs a data directory: pass --data-dir DIR")
    train_dir, test_dir = data_dir / "train", data_dir / "test"
    if train_dir.is_dir() != test_dir.is_dir():  # read as class folders, "train" would be a class of its own
        there, missing = (train_dir, test_dir) if train_dir.is_dir() else (test_dir, train_dir)
        raise DataError(
            f"imagefolder: {data_dir} has {there.name}/ but no {missing.name}/; give both {train_dir.name}/ "
            f"and {test_dir.name}/ (each with one folder per class), or the class folders directly in "
            f"{data_dir} (a 20 % test split is then held out)"
        )
    if train_dir.is_dir() and test_dir.is_dir():
        x_train, y_train, names = _read_image_folder(train_dir, opts)
        x_test, y_test, test_names = _read_image_folder(test_dir, opts)
        unknown = sorted(set(test_names) - set(names))
        if unknown:
            raise DataError(f"imagefolder: {test_dir} has classes that {train_dir} lacks: {', '.join(unknown)}")
        remap = torch.tensor([names.index(n) for n in test_names], dtype=torch.int64)
        y_test = remap[y_test]
    else:
        x, y, names = _read_image_folder(data_dir, opts)
        test = stratified_holdout(y, TEST_FRACTION, TEST_SPLIT_SEED)
        train = _complement(test, len(y))
        x_train, y_train, x_test, y_test = x[train], y[train], x[test], y[test]
    if len(names) < 2:
        raise DataError(
            f"imagefolder: {data_dir} has {len(names)} class folder(s); a classifier needs at least 2 "
            f"(one sub-folder of images per class)"
        )
    return x_train, y_train, x_test, y_test, names


_MNIST_SIZE = (28, 28)
register(
    DatasetSpec(
        "cifar10",
        3,
        10,
        (32, 32),
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        True,
        _torchvision("CIFAR10", "cifar-10-batches-py/"),
        description="CIFAR-10 (torchvision)",
    )
)
register(
    DatasetSpec(
        "cifar100",
        3,
        100,
        (32, 32),
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
        True,
        _torchvision("CIFAR100", "cifar-100-python/"),
        description="CIFAR-100 (torchvision)",
    )
)
register(
    DatasetSpec(
        "fashionmnist",
        1,
        10,
        _MNIST_SIZE,
        (0.2860,),
        (0.3530,),
        True,
        _torchvision("FashionMNIST", "FashionMNIST/raw/*-idx?-ubyte"),
        description="Fashion-MNIST (torchvision)",
    )
)
register(
    DatasetSpec(
        "kmnist",
        1,
        10,
        _MNIST_SIZE,
        (0.1918,),
        (0.3483,),
        False,
        _torchvision("KMNIST", "KMNIST/raw/*-idx?-ubyte"),
        description="Kuzushiji-MNIST (torchvision)",
    )
)
register(
    DatasetSpec(
        "emnist",
        1,
        47,
        _MNIST_SIZE,
        (0.1751,),
        (0.3332,),
        False,
        _torchvision("EMNIST", "EMNIST/raw/emnist-balanced-*-idx?-ubyte", split="balanced"),
        description="EMNIST balanced split, 47 classes (torchvision; images transposed, as stored)",
    )
)
register(
    DatasetSpec(
        "imagefolder",
        3,
        None,
        IMAGEFOLDER_SIZE,
        None,
        None,
        False,
        _load_imagefolder,
        description="a directory with one folder of images per class",
    )
)
register(
    DatasetSpec(
        "digits",
        1,
        10,
        (8, 8),
        (0.3053,),
        (0.3759,),
        False,
        _load_digits,
        needs_dir=False,
        description="scikit-learn's bundled 8x8 digits (no download)",
    )
)


# --- splitting, resizing, loading ---------------------------------------------------------------


def stratified_holdout(y: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Sorted indices of a seeded, class-stratified holdout of ``round(fraction * len(y))`` samples.

    Samples are shuffled, ranked within their class, and ordered by (rank + 0.5) / class size,
    so any prefix of that order takes each class in proportion; the prefix is the holdout.
    """
    n = int(y.shape[0])
    k = int(round(fraction * n))
    if k == 0:
        return torch.empty(0, dtype=torch.int64)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen)
    labels = y[perm]
    order = torch.sort(labels, stable=True).indices  # classes grouped, random order inside each
    counts = torch.bincount(labels)
    starts = torch.cumsum(counts, 0) - counts
    sorted_labels = labels[order]
    rank = torch.arange(n) - starts[sorted_labels]
    key = (rank.double() + 0.5) / counts[sorted_labels].double()
    ties = torch.randperm(n, generator=gen)  # equal keys (same rank share) are taken in random class order
    pick = ties[torch.sort(key[ties], stable=True).indices[:k]]
    return torch.sort(perm[order[pick]]).values


def _complement(indices: torch.Tensor, n: int) -> torch.Tensor:
    keep = torch.ones(n, dtype=torch.bool)
    keep[indices] = False
    return keep.nonzero().squeeze(1)


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Batched antialiased bilinear resize of uint8 (N, C, H, W) images to ``size`` (H, W)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    out = torch.empty((x.shape[0], x.shape[1], *size), dtype=torch.uint8, device=x.device)
    c, h, w = x.shape[1:]
    step = _resize_chunk((c, h, w), size)
    for i in range(0, x.shape[0], step):
        chunk = x[i : i + step].float()
        chunk = F.interpolate(chunk, size=size, mode="bilinear", antialias=True, align_corners=False)
        out[i : i + step] = chunk.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _resize_chunk(chw: tuple[int, int, int], size: tuple[int, int]) -> int:
    """Images per interpolate call: their float32 input and output within ``_RESIZE_WORK_BYTES``."""
    c, h, w = chw
    per_image = 4 * c * (h * w + size[0] * size[1])
    return max(1, min(_RESIZE_CHUNK, _RESIZE_WORK_BYTES // per_image))


def resize_bytes(n: int, chw: tuple[int, int, int], size: tuple[int, int]) -> int:
    """Peak memory of resizing ``n`` images for ``load_dataset``: the uint8 result, the splits copied out
    of it, and one interpolate call's float32 working memory."""
    c, h, w = chw
    step = min(n, _resize_chunk(chw, size))
    return 2 * n * c * size[0] * size[1] + 4 * step * c * (h * w + size[0] * size[1])


def _check_size(input_size) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in input_size)
    except (TypeError, ValueError):
        raise DataError(f"input_size must be two positive integers (H, W), got {input_size!r}") from None
    if h < 1 or w < 1:
        raise DataError(f"input_size must be two positive integers (H, W), got {input_size!r}")
    return h, w


def channel_stats(x: torch.Tensor, chunk: int = 256) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images in [0, 1] units (std 1 where a channel is constant),
    summed in float64 chunk by chunk so large datasets need little extra memory."""
    total, squares = torch.zeros(x.shape[1], dtype=torch.float64), torch.zeros(x.shape[1], dtype=torch.float64)
    for i in range(0, len(x), chunk):
        v = x[i : i + chunk].transpose(0, 1).reshape(x.shape[1], -1).double() / 255.0
        total += v.sum(1)
        squares += (v * v).sum(1)
    n = max(1, x[:, 0].numel())
    mean = total / n
    std = (squares / n - mean * mean).clamp_min(0).sqrt()
    return tuple(float(m) for m in mean), tuple(float(s) if s > 1e-6 else 1.0 for s in std)


def _check_rankable(
    source: str, *, y_train: torch.Tensor, n_val: int, n_test: int, class_names, val_fraction: float
) -> None:
    """Refuse splits that cannot rank candidates: an empty validation (when asked for) or test split,
    or a class without training images (accuracies would be NaN, or of a class never seen)."""
    problems = []
    if val_fraction > 0 and n_val == 0:
        need = next(m for m in range(1, 10**6) if round(val_fraction * m) >= 1)
        problems.append(
            f"the validation split (val_fraction {val_fraction}) is empty: it needs at least {need} "
            f"training images, there are {len(y_train) + n_val}"
        )
    if n_test == 0:
        problems.append("the test split is empty")
    counts = torch.bincount(y_train, minlength=len(class_names))
    missing = [class_names[i] for i in range(len(class_names)) if counts[i] == 0]
    if missing:
        problems.append(
            f"{len(missing)} class(es) have no training image ({', '.join(missing[:5])}"
            f"{', ...' if len(missing) > 5 else ''})"
        )
    if problems:
        raise DataError(f"{source} is too small to rank candidates: {'; '.join(problems)}; add images")


def _data_path(spec: DatasetSpec, data_dir, *, download: bool) -> Path | None:
    """The dataset's folder (made when downloading into a new one); None for built-in data."""
    if not spec.needs_dir:
        return None
    if data_dir is None:
        raise DataError(f"dataset {spec.name} needs a data directory: pass --data-dir DIR")
    path = Path(data_dir).expanduser()
    if download and not path.exists():
        path.mkdir(parents=True)
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is not a directory"
        raise DataError(f"data directory {path} {what}; pass --data-dir with an existing directory")
    return path


def load_dataset(
    name: str,
    *,
    data_dir: str | Path | None = None,
    download: bool = False,
    val_fraction: float = 0.1,
    seed: int = 0,
    input_size: tuple[int, int] | None = None,
    channels: int | None = None,
) -> ImageData:
    """Load a registered dataset whole: a seeded validation split is held out of its training set.

    ``val_fraction`` of the training set (stratified by class, seeded by ``seed``) becomes
    ``val``; the dataset's own test split (or, for digits/imagefolder without one, a fixed
    stratified 20 %) stays apart as ``test``. ``input_size`` resizes; ``channels`` (1 or 3)
    applies to imagefolder. Every problem is a one-line ``DataError``.
    """
    spec = get_spec(name)
    if not 0.0 <= val_fraction <= 0.5:
        raise DataError(
            f"val_fraction {val_fraction} is outside [0, 0.5]; use e.g. 0.1 to hold out 10 % for validation"
        )
    size = _check_size(input_size) if input_size is not None else spec.input_size
    if channels is not None and channels not in (1, 3):
        raise DataError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    if channels is not None and spec.num_classes is not None and channels != spec.in_channels:
        raise DataError(f"{name} has {spec.in_channels} channel(s); channels={channels} applies to imagefolder only")
    path = _data_path(spec, data_dir, download=download)
    opts = _LoadOptions(download=download, input_size=size, channels=channels or spec.in_channels)
    x_train, y_train, x_test, y_test, class_names = spec.loader(spec, path, opts)
    if tuple(x_train.shape[-2:]) != size:  # resized copies are allocated below: check before
        n, (c, h, w) = len(x_train) + len(x_test), x_train.shape[1:]
        check_memory(
            resize_bytes(n, (c, h, w), size),
            what=f"{name}: {n} images resized to {c}x{size[0]}x{size[1]}",
            hint="use a smaller data.input_size",
        )
    x_train, x_test = resize(x_train, size), resize(x_test, size)
    val = stratified_holdout(y_train, val_fraction, seed)
    train = _complement(val, len(y_train))
    _check_rankable(
        f"{name}: {path}" if path else name,
        y_train=y_train[train],
        n_val=len(val),
        n_test=len(y_test),
        class_names=class_names,
        val_fraction=val_fraction,
    )
    train_split = Split(x_train[train].contiguous(), y_train[train].contiguous())
    if spec.mean is None or spec.std is None:  # both or neither
        mean, std = channel_stats(train_split.x)
    else:
        mean, std = spec.mean, spec.std
    return ImageData(
        name=name,
        train=train_split,
        val=Split(x_train[val].contiguous(), y_train[val].contiguous()),
        test=Split(x_test.contiguous(), y_test.contiguous()),
        num_classes=len(class_names),
        in_channels=int(x_train.shape[1]),
        input_size=size,
        mean=tuple(mean),
        std=tuple(std),
        class_names=tuple(class_names),
        flip=spec.flip,
    )
