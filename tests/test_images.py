"""Image files are read as they are — every bit depth, mode and format PIL opens — or refused with
one line; class folders are listed without following link loops or giving a file two labels."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgenas.errors import DataError
from edgenas.training import images as eimages
from edgenas.training import memory as ememory
from edgenas.training.data import load_dataset, read_images
from edgenas.training.images import list_image_folder


def _raises(fn, *words) -> DataError:
    with pytest.raises(DataError) as info:
        fn()
    message = str(info.value)
    assert info.value.exit_code == 2 and "\n" not in message, message
    for word in words:
        assert word in message, message
    return info.value


def _read(path, channels=1, size=(4, 4)) -> np.ndarray:
    return read_images([path], size, channels)[0].numpy()


# -- bit depths -------------------------------------------------------------------------------------
def test_16_bit_png_is_scaled_from_its_full_range(tmp_path):
    values = np.array([[0, 257, 32768, 65535]] * 4, dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "a.png")
    assert Image.open(tmp_path / "a.png").mode.startswith("I;16")
    got = _read(tmp_path / "a.png")
    assert got[0].tolist() == [[0, 1, 128, 255]] * 4  # round(v * 255 / 65535)
    assert _read(tmp_path / "a.png", channels=3).tolist() == [got[0].tolist()] * 3


def test_16_bit_classes_differing_in_high_bits_stay_different(tmp_path):
    """Read as 8-bit "L" before, every value above 255 became white and both classes identical."""
    for name, level in (("dark", 10000), ("bright", 50000)):
        (tmp_path / name).mkdir()
        rng = np.random.default_rng(level)
        for i in range(6):
            a = (level + rng.integers(-500, 500, (8, 8))).astype(np.uint16)
            Image.fromarray(a).save(tmp_path / name / f"{i}.png")
    d = load_dataset("imagefolder", data_dir=tmp_path, input_size=(8, 8), channels=1, val_fraction=0.2)
    x = torch.cat([d.train.x, d.val.x, d.test.x]).float().mean((1, 2, 3))
    y = torch.cat([d.train.y, d.val.y, d.test.y])
    bright, dark = d.class_names.index("bright"), d.class_names.index("dark")
    assert x[y == dark].max() < 45 < 190 < x[y == bright].min()  # 10000 -> 39, 50000 -> 195


def test_float_images_in_0_1_and_out_of_range(tmp_path):
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(tmp_path / "half.tif")
    assert (_read(tmp_path / "half.tif") == 128).all()
    Image.fromarray(np.full((4, 4), 7.0, np.float32)).save(tmp_path / "seven.tif")
    _raises(lambda: _read(tmp_path / "seven.tif"), "seven.tif", "[0, 1]", "out of range")
    Image.fromarray(np.full((4, 4), np.nan, np.float32)).save(tmp_path / "nan.tif")
    _raises(lambda: _read(tmp_path / "nan.tif"), "nan.tif", "NaN")


# -- modes and formats --------------------------------------------------------------------------
def test_palette_png_reads_its_colours(tmp_path):
    img = Image.new("P", (4, 4))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.putdata([0] * 8 + [1] * 8)
    img.save(tmp_path / "p.png")
    rgb = _read(tmp_path / "p.png", channels=3)
    assert rgb[:, 0].T.tolist() == [[255, 0, 0]] * 4 and rgb[:, 3].T.tolist() == [[0, 0, 255]] * 4


def test_transparency_is_composited_onto_black(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[..., 3] = [[0], [255], [128], [51]]
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    rgb = _read(tmp_path / "a.png", channels=3)
    assert rgb[:, :, 0].T.tolist() == [[0, 0, 0], [200, 100, 50], [100, 50, 25], [40, 20, 10]]
    la = np.stack([np.full((4, 4), 200, np.uint8), np.full((4, 4), 128, np.uint8)], -1)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    assert (_read(tmp_path / "la.png") == 100).all()
    pal = Image.new("P", (4, 4))
    pal.putpalette([255, 255, 255, 10, 20, 30] + [0] * 762)
    pal.putdata([0] * 8 + [1] * 8)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pt.png", transparency=0)
    rgb = _read(tmp_path / "pt.png", channels=3)
    assert rgb[:, 0].T.tolist() == [[0, 0, 0]] * 4 and rgb[:, 3].T.tolist() == [[10, 20, 30]] * 4


def test_cmyk_and_one_bit_images(tmp_path):
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=100)
    rgb = _read(tmp_path / "c.jpg", channels=3)
    assert rgb[0].min() > 240 and rgb[1].max() < 15 and rgb[2].max() < 15  # red
    Image.new("1", (4, 4), 1).save(tmp_path / "b.bmp")
    assert (_read(tmp_path / "b.bmp") == 255).all()


def test_gif_and_animated_gif_give_the_first_frame(tmp_path):
    frames = [Image.new("L", (4, 4), v) for v in (40, 200, 120)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert Image.open(tmp_path / "anim.gif").n_frames == 3
    assert (_read(tmp_path / "anim.gif") == 40).all()
    Image.new("RGB", (4, 4), (0, 0, 255)).save(tmp_path / "still.gif")
    assert _read(tmp_path / "still.gif", channels=3)[2].min() > 240


def test_every_format_pil_opens_is_listed(tmp_path):
    exts = eimages.image_extensions()
    assert {
        ".png",
        ".jpg",
        ".gif",
        ".tif",
        ".bmp",
        ".webp",
        ".ppm",
    } <= exts and ".pdf" not in exts  # PIL writes PDF only
    for cls, fmt in (("a", "gif"), ("a", "tiff"), ("b", "bmp"), ("b", "PNG")):
        (tmp_path / cls).mkdir(exist_ok=True)
        Image.new("RGB", (4, 4)).save(tmp_path / cls / f"x.{fmt}")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "a" / "._x.gif").write_bytes(b"AppleDouble metadata, not an image")
    paths, targets, classes = list_image_folder(tmp_path)
    assert classes == ("a", "b") and [p.name for p in paths] == ["x.gif", "x.tiff", "x.PNG", "x.bmp"]
    assert targets == [0, 0, 1, 1]


def test_huge_image_is_one_line_naming_the_file_and_the_limit(tmp_path, monkeypatch):
    Image.new("L", (100, 100)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)  # 10,000 pixels: over the limit, under twice it
    _raises(lambda: _read(tmp_path / "big.png"), "big.png", "5,000 pixels", "decompression")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # over twice the limit: PIL's own error
    _raises(lambda: _read(tmp_path / "big.png"), "big.png", "1,000 pixels")


def test_broken_and_foreign_files_are_one_line(tmp_path):
    (tmp_path / "fake.png").write_bytes(b"not a png at all")
    _raises(lambda: _read(tmp_path / "fake.png"), "cannot read the image", "fake.png")
    Image.new("RGB", (64, 64)).save(tmp_path / "cut.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "cut.jpg").read_bytes()[:200])
    _raises(lambda: _read(tmp_path / "cut.jpg"), "cannot read the image", "cut.jpg")


def test_memory_is_checked_before_decoding(tmp_path, monkeypatch):
    Image.new("L", (4, 4)).save(tmp_path / "a.png")
    monkeypatch.setattr(ememory, "available_memory", lambda: 10**6)
    _raises(
        lambda: read_images([tmp_path / "a.png"] * 1000, (64, 64), 3),
        "1000 images of 3x64x64",
        "needs about",
        "is available",
        "smaller data.input_size",
    )
    monkeypatch.undo()
    assert ememory.available_memory() is None or ememory.available_memory() > 0


# -- symbolic links -----------------------------------------------------------------------------
def _classes(root: Path, per_class: int = 4) -> Path:
    for c, level in (("cat", 30), ("dog", 220)):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.new("L", (4, 4), level + i).save(root / c / f"{c}{i}.png")
    return root


def test_a_link_loop_adds_no_images(tmp_path):
    root = _classes(tmp_path / "data")
    os.symlink(root, root / "cat" / "loop")  # cat/loop/cat/loop/... : torchvision made 8 images 300+
    os.symlink("..", root / "dog" / "up")
    paths, targets, classes = list_image_folder(root)
    assert len(paths) == 8 and targets == [0] * 4 + [1] * 4


def test_a_link_into_another_class_is_refused_and_a_duplicate_counted_once(tmp_path):
    root = _classes(tmp_path / "data")
    os.symlink(root / "cat" / "cat0.png", root / "cat" / "again.png")  # the same file twice, same class
    paths, _, _ = list_image_folder(root)
    assert len(paths) == 8
    os.symlink(root / "cat" / "cat1.png", root / "dog" / "stray.png")  # one file, two labels
    _raises(lambda: list_image_folder(root), "stray.png", "cat1.png", "same file", "one class")


def test_links_to_files_and_class_folders_elsewhere_are_read(tmp_path):
    pool = _classes(tmp_path / "pool")
    root = tmp_path / "data"
    root.mkdir()
    os.symlink(pool / "cat", root / "cat")  # a linked class folder
    (root / "dog").mkdir()
    for i in range(4):
        os.symlink(pool / "dog" / f"dog{i}.png", root / "dog" / f"d{i}.png")  # linked files
    paths, targets, classes = list_image_folder(root)
    assert classes == ("cat", "dog") and len(paths) == 8 and targets == [0] * 4 + [1] * 4
    x = read_images(paths, (4, 4), 1)
    assert x[:4].float().mean() < 40 and x[4:].float().mean() > 200  # read through the links, right labels
    os.symlink(tmp_path / "nowhere.png", root / "dog" / "gone.png")
    _raises(lambda: list_image_folder(root), "gone.png", "broken symbolic link")


def test_a_class_folder_linking_to_the_root_is_refused(tmp_path):
    root = _classes(tmp_path / "data")
    os.symlink(root, root / "zebra")  # zebra/ holds cat/ and dog/: their images would get two labels
    _raises(lambda: list_image_folder(root), "same file", "one class")
