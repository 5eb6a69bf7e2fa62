"""Datasets load from small files in their real on-disk formats; augmentation is batched and seeded."""

from __future__ import annotations

import os
import pickle
import struct

import numpy as np
import pytest
import torch
from synthetic import synthetic_dataset

from edgenas.errors import DataError
from edgenas.training import data as edata
from edgenas.training.augment import BatchAugment, augment, normalize
from edgenas.training.data import (
    DatasetSpec,
    ImageData,
    Split,
    list_datasets,
    load_dataset,
    register,
    stratified_holdout,
)

# --- writers of the real formats ----------------------------------------------------------------


def _images(n: int, c: int, h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, c, h, w), dtype=np.uint8)


def _labels(n: int, k: int, seed: int) -> np.ndarray:
    return (np.arange(n) % k)[np.random.default_rng(seed).permutation(n)]


def _pickle(path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def write_cifar10(root, per_batch: int = 20, n_test: int = 30):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    xs, ys = [], []
    for b in range(1, 6):
        x, y = _images(per_batch, 3, 32, 32, b), _labels(per_batch, 10, b)
        _pickle(
            d / f"data_batch_{b}", {"batch_label": f"batch {b}", "data": x.reshape(per_batch, -1), "labels": y.tolist()}
        )
        xs.append(x)
        ys.append(y)
    xt, yt = _images(n_test, 3, 32, 32, 9), _labels(n_test, 10, 9)
    _pickle(d / "test_batch", {"batch_label": "test", "data": xt.reshape(n_test, -1), "labels": yt.tolist()})
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _pickle(d / "batches.meta", {"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072})
    return np.concatenate(xs), np.concatenate(ys), xt, yt


def write_cifar100(root, n_train: int = 200, n_test: int = 100):
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    x, y = _images(n_train, 3, 32, 32, 1), _labels(n_train, 100, 1)
    xt, yt = _images(n_test, 3, 32, 32, 2), _labels(n_test, 100, 2)
    for name, xi, yi in (("train", x, y), ("test", xt, yt)):
        _pickle(
            d / name, {"data": xi.reshape(len(yi), -1), "fine_labels": yi.tolist(), "coarse_labels": (yi // 5).tolist()}
        )
    _pickle(
        d / "meta",
        {"fine_label_names": [f"fine{i}" for i in range(100)], "coarse_label_names": [f"c{i}" for i in range(20)]},
    )
    return x, y, xt, yt


def _write_idx(path, array: np.ndarray) -> None:
    magic = 0x0800 | array.ndim  # unsigned byte, ndim dimensions, big endian sizes
    with open(path, "wb") as f:
        f.write(
            struct.pack(">I", magic)
            + b"".join(struct.pack(">I", s) for s in array.shape)
            + array.astype(np.uint8).tobytes()
        )


def write_mnist_like(root, folder: str, k: int, prefix: tuple[str, str] | None = None, n_train=60, n_test=20):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    x, y = _images(n_train, 1, 28, 28, 3)[:, 0], _labels(n_train, k, 3)
    xt, yt = _images(n_test, 1, 28, 28, 4)[:, 0], _labels(n_test, k, 4)
    train_stem, test_stem = prefix or ("train", "t10k")
    _write_idx(raw / f"{train_stem}-images-idx3-ubyte", x)
    _write_idx(raw / f"{train_stem}-labels-idx1-ubyte", y)
    _write_idx(raw / f"{test_stem}-images-idx3-ubyte", xt)
    _write_idx(raw / f"{test_stem}-labels-idx1-ubyte", yt)
    return x[:, None], y, xt[:, None], yt


def write_imagefolder(root, classes=("cat", "dog", "eel"), per_class=10):
    from PIL import Image

    rng = np.random.default_rng(0)
    for ci, cls in enumerate(classes):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            h, w = 20 + 7 * i, 30 + 3 * ci  # every image a different size
            pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i}.png")


@pytest.fixture
def cifar_md5_bypassed(monkeypatch):
    """The one check bypassed: torchvision's MD5 of the real CIFAR archives (file existence stays)."""
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


def _assert_round_trip(d: ImageData, x: np.ndarray, y: np.ndarray, xt: np.ndarray, yt: np.ndarray, val_fraction: float):
    n = len(y)
    assert len(d.val) == round(val_fraction * n) and len(d.train) + len(d.val) == n
    for split in (d.train, d.val, d.test):
        assert split.x.dtype == torch.uint8 and split.y.dtype == torch.int64
        assert split.x.shape[1:] == (d.in_channels, *d.input_size)
    # train + val are exactly the original training set (images paired with their labels)
    got = {(bytes(img.numpy().tobytes()), int(lab)) for s in (d.train, d.val) for img, lab in zip(s.x, s.y)}
    assert got == {(bytes(img.tobytes()), int(lab)) for img, lab in zip(x, y)}
    assert torch.equal(d.test.x, torch.from_numpy(xt)) and torch.equal(d.test.y, torch.from_numpy(yt).long())


# --- loading real formats -----------------------------------------------------------------------


def test_cifar10_real_format(tmp_path, cifar_md5_bypassed):
    x, y, xt, yt = write_cifar10(tmp_path)
    d = load_dataset("cifar10", data_dir=tmp_path, val_fraction=0.2, seed=1)
    assert (d.num_classes, d.in_channels, d.input_size, d.flip) == (10, 3, (32, 32), True)
    assert d.class_names[0] == "airplane" and len(d.mean) == len(d.std) == 3
    _assert_round_trip(d, x, y, xt, yt, 0.2)


def test_cifar100_real_format(tmp_path, cifar_md5_bypassed):
    x, y, xt, yt = write_cifar100(tmp_path)
    d = load_dataset("cifar100", data_dir=tmp_path)
    assert (d.num_classes, d.in_channels, d.flip) == (100, 3, True)
    assert d.class_names[7] == "fine7"
    _assert_round_trip(d, x, y, xt, yt, 0.1)


@pytest.mark.parametrize(
    "name, folder, k, prefix, flip",
    [
        ("fashionmnist", "FashionMNIST", 10, None, True),
        ("kmnist", "KMNIST", 10, None, False),
        ("emnist", "EMNIST", 47, ("emnist-balanced-train", "emnist-balanced-test"), False),
    ],
)
def test_mnist_family_real_format(tmp_path, name, folder, k, prefix, flip):
    x, y, xt, yt = write_mnist_like(tmp_path, folder, k, prefix, n_train=100 if k > 10 else 60)
    d = load_dataset(name, data_dir=tmp_path, val_fraction=0.1)
    assert (d.num_classes, d.in_channels, d.input_size, d.flip) == (k, 1, (28, 28), flip)
    assert len(d.class_names) == k
    _assert_round_trip(d, x, y, xt, yt, 0.1)


def test_input_size_resizes_a_fixed_dataset(tmp_path):
    write_mnist_like(tmp_path, "KMNIST", 10)
    d = load_dataset("kmnist", data_dir=tmp_path, input_size=(16, 20))
    assert d.input_size == (16, 20) and d.train.x.shape[1:] == (1, 16, 20) and d.test.x.shape[1:] == (1, 16, 20)
    assert d.train.x.dtype == torch.uint8


def test_digits_needs_no_dir_and_splits_stratified():
    d = load_dataset("digits", seed=3)
    assert (d.num_classes, d.in_channels, d.input_size, d.synthetic, d.flip) == (10, 1, (8, 8), False, False)
    assert len(d.train) + len(d.val) + len(d.test) == 1797 and len(d.test) == round(0.2 * 1797)
    assert int(d.train.x.max()) == 255 and d.train.x.dtype == torch.uint8
    assert torch.bincount(d.test.y).min() >= 34 and torch.bincount(d.val.y).min() >= 13  # stratified
    other = load_dataset("digits", seed=4)
    assert torch.equal(d.test.x, other.test.x)  # the test split is fixed ...
    assert not torch.equal(d.val.x, other.val.x)  # ... the validation split follows the seed


def test_val_split_seeded_disjoint_and_sized():
    y = torch.arange(103) % 7
    a, b, c = stratified_holdout(y, 0.3, 0), stratified_holdout(y, 0.3, 0), stratified_holdout(y, 0.3, 1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(a) == round(0.3 * 103) and len(set(a.tolist())) == len(a)
    counts = torch.bincount(y[a], minlength=7)
    assert counts.max() - counts.min() <= 1
    d = load_dataset("digits", val_fraction=0.25, seed=7)
    assert len(d.val) == round(0.25 * (len(d.train) + len(d.val)))
    train_rows = {r.numpy().tobytes() for r in d.train.x}
    assert sum(r.numpy().tobytes() in train_rows for r in d.val.x) < 5  # only duplicate digits may coincide
    assert len(load_dataset("digits", val_fraction=0.0).val) == 0


def test_imagefolder_resizes_and_splits(tmp_path):
    write_imagefolder(tmp_path / "pets")
    d = load_dataset("imagefolder", data_dir=tmp_path / "pets", input_size=(12, 16))
    assert d.class_names == ("cat", "dog", "eel") and d.num_classes == 3
    assert d.train.x.shape[1:] == (3, 12, 16) and len(d.test) == 6 and len(d.train) + len(d.val) == 24
    assert torch.bincount(d.test.y).tolist() == [2, 2, 2]
    assert all(0.0 < s < 1.0 for s in d.std) and len(d.mean) == 3
    gray = load_dataset("imagefolder", data_dir=tmp_path / "pets", channels=1)
    assert gray.in_channels == 1 and gray.input_size == (32, 32) and gray.train.x.shape[1] == 1


def test_imagefolder_train_test_dirs(tmp_path):
    write_imagefolder(tmp_path / "train", per_class=5)
    write_imagefolder(tmp_path / "test", classes=("dog", "eel"), per_class=2)  # a subset of the classes
    d = load_dataset("imagefolder", data_dir=tmp_path, val_fraction=0.0)
    assert len(d.train) == 15 and len(d.test) == 4
    assert sorted(d.test.y.tolist()) == [1, 1, 2, 2]  # test labels follow the train class indices


# --- errors -------------------------------------------------------------------------------------


def _raises(fn, *words) -> DataError:
    with pytest.raises(DataError) as info:
        fn()
    message = str(info.value)
    assert info.value.exit_code == 2 and "\n" not in message
    for word in words:
        assert word in message, message
    return info.value


def test_unknown_dataset_lists_names():
    _raises(lambda: load_dataset("mnist"), "'mnist'", "cifar10", "digits", "imagefolder")


def test_missing_dir_and_not_a_dir(tmp_path):
    _raises(lambda: load_dataset("cifar10", data_dir=tmp_path / "nope"), "nope", "does not exist")
    (tmp_path / "file").write_text("x")
    _raises(lambda: load_dataset("kmnist", data_dir=tmp_path / "file"), "not a directory")
    _raises(lambda: load_dataset("kmnist"), "--data-dir")


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "fashionmnist", "kmnist", "emnist"])
def test_missing_files_suggest_download(tmp_path, name, cifar_md5_bypassed):
    _raises(lambda: load_dataset(name, data_dir=tmp_path), name, str(tmp_path), "--download")


def test_malformed_files(tmp_path):
    write_mnist_like(tmp_path, "KMNIST", 10)
    images = tmp_path / "KMNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:1000])  # truncated
    _raises(lambda: load_dataset("kmnist", data_dir=tmp_path), "kmnist", "malformed")


def test_bad_imagefolder(tmp_path):
    _raises(
        lambda: load_dataset("imagefolder", data_dir=tmp_path), "imagefolder", str(tmp_path), "one folder per class"
    )
    write_imagefolder(tmp_path / "one", classes=("only",))
    _raises(lambda: load_dataset("imagefolder", data_dir=tmp_path / "one"), "at least 2")


def test_splits_too_small_to_rank_are_one_line(tmp_path):
    write_imagefolder(tmp_path / "one", classes=("a", "b", "c"), per_class=1)  # val was empty: NaN ranks
    _raises(
        lambda: load_dataset("imagefolder", data_dir=tmp_path / "one"),
        "too small to rank",
        "validation split (val_fraction 0.1) is empty",
        "at least 6 training images",
        "add images",
    )
    write_imagefolder(tmp_path / "split" / "train", classes=("a", "b"), per_class=1)
    write_imagefolder(tmp_path / "split" / "test", classes=("a", "b"), per_class=1)
    _raises(
        lambda: load_dataset("imagefolder", data_dir=tmp_path / "split", val_fraction=0.5),
        "too small to rank",
        "1 class(es) have no training image",
    )
    d = load_dataset("imagefolder", data_dir=tmp_path / "split", val_fraction=0.0)  # no validation asked for: fine
    assert len(d.train) == 2 and len(d.val) == 0


def test_bad_arguments():
    _raises(lambda: load_dataset("digits", val_fraction=0.6), "val_fraction", "[0, 0.5]")
    _raises(lambda: load_dataset("digits", val_fraction=-0.1), "val_fraction")
    _raises(lambda: load_dataset("digits", channels=3), "channels")
    _raises(lambda: load_dataset("digits", input_size=(0, 8)), "input_size")


def test_registry_rejects_duplicates():
    spec = edata.get_spec("digits")
    with pytest.raises(ValueError, match="already registered"):
        register(spec)
    assert set(list_datasets()) >= {"cifar10", "cifar100", "fashionmnist", "kmnist", "emnist", "imagefolder", "digits"}
    assert isinstance(spec, DatasetSpec) and not spec.needs_dir


# --- synthetic data -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in list_datasets() if n != "imagefolder"])
def test_synthetic_has_the_registered_shape(name):
    spec = edata.get_spec(name)
    d = synthetic_dataset(name, n_train=200, n_test=50, seed=0)
    assert d.synthetic and d.num_classes == spec.num_classes and d.in_channels == spec.in_channels
    assert d.train.x.shape[1:] == (spec.in_channels, *spec.input_size) and d.train.x.dtype == torch.uint8
    assert len(d.train) + len(d.val) == 200 and len(d.test) == 50
    assert torch.equal(d.train.x, synthetic_dataset(name, n_train=200, n_test=50, seed=0).train.x)


def test_synthetic_classes_are_separable():
    d = synthetic_dataset("fashionmnist", n_train=500, n_test=200, seed=0)
    # nearest class mean on raw pixels already beats chance by far: the classes carry structure
    x, xt = d.train.x.flatten(1).float(), d.test.x.flatten(1).float()
    means = torch.stack([x[d.train.y == k].mean(0) for k in range(10)])
    acc = (torch.cdist(xt, means).argmin(1) == d.test.y).float().mean().item()
    assert acc > 0.5


# --- augmentation -------------------------------------------------------------------------------


def _toy(flip: bool, size=(32, 32), channels=3) -> ImageData:
    x = torch.randint(1, 256, (16, channels, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    s = Split(x, torch.zeros(16, dtype=torch.int64))
    return ImageData("toy", s, s, s, 2, channels, size, (0.5,) * channels, (0.25,) * channels, ("a", "b"), flip)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_normalize_matches_formula():
    d = _toy(False)
    out = normalize(d.train.x, d.mean, d.std)
    assert out.dtype == torch.float32
    assert torch.allclose(out, (d.train.x.float() / 255 - 0.5) / 0.25, atol=1e-6)
    plain = augment(d.train.x, data=d, crop_padding=0, cutout=0, generator=_gen())
    assert torch.allclose(plain, out, atol=1e-5)  # with crop, flip and cutout off, only normalisation


def test_crop_shifts_content_with_zero_padding():
    d = _toy(False)
    out = augment(d.train.x, data=d, crop_padding=4, cutout=0, generator=_gen())
    assert out.shape == d.train.x.shape and out.dtype == torch.float32
    ref = normalize(d.train.x, d.mean, d.std)
    zero = (0.0 - 0.5) / 0.25  # a padded (black) pixel after normalisation
    shifted = 0
    for i in range(len(out)):  # each output is some window of the padded image
        padded = torch.nn.functional.pad(ref[i], (4, 4, 4, 4), value=zero)
        windows = [
            (dy, dx)
            for dy in range(9)
            for dx in range(9)
            if torch.allclose(padded[:, dy : dy + 32, dx : dx + 32], out[i])
        ]
        assert len(windows) == 1
        shifted += windows[0] != (4, 4)
    assert shifted >= 12  # nearly all of them moved


def test_flip_only_where_declared():
    for flip in (False, True):
        d = _toy(flip)
        out = augment(d.train.x, data=d, crop_padding=0, cutout=0, generator=_gen())
        ref = normalize(d.train.x, d.mean, d.std)
        flipped = [not torch.allclose(out[i], ref[i]) for i in range(16)]
        for i in range(16):
            assert torch.allclose(out[i], ref[i]) or torch.allclose(out[i], ref[i].flip(2))
        assert any(flipped) == flip and (all(flipped) is False)


def test_cutout_zeroes_a_clipped_square():
    d = _toy(False)
    out = augment(d.train.x, data=d, crop_padding=0, cutout=16, generator=_gen())
    ref = normalize(d.train.x, d.mean, d.std)
    assert (ref != 0).all()
    for i in range(16):
        zero = (out[i] == 0).all(0)  # (H, W) zeroed in every channel
        assert torch.equal(out[i][:, ~zero], ref[i][:, ~zero])
        rows, cols = zero.any(1).nonzero().squeeze(1), zero.any(0).nonzero().squeeze(1)
        assert 8 <= len(rows) <= 16 and 8 <= len(cols) <= 16  # side 16, clipped to at least half
        assert zero.sum() == len(rows) * len(cols)  # a full rectangle
        assert torch.equal(rows, torch.arange(rows[0], rows[-1] + 1))


def test_cutout_skipped_on_small_images():
    d = _toy(False, size=(8, 8), channels=1)
    assert BatchAugment(d, crop_padding=0, cutout=16).cutout == 0
    out = augment(d.train.x, data=d, crop_padding=0, cutout=8, generator=_gen())  # min(H, W) must exceed it
    assert torch.allclose(out, normalize(d.train.x, d.mean, d.std), atol=1e-5)


def test_augmentation_is_seeded():
    d = _toy(True)
    a = augment(d.train.x, data=d, generator=_gen(5))
    b = augment(d.train.x, data=d, generator=_gen(5))
    c = augment(d.train.x, data=d, generator=_gen(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_to_device_copies_every_split():
    d = load_dataset("digits").to("cpu")
    assert d.train.x.device.type == d.val.y.device.type == d.test.x.device.type == "cpu"
