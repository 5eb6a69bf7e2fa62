"""Image files -> uint8 arrays: every format and bit depth PIL opens, read one documented way;
class folders listed without following link loops or giving a file two labels."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from edgenas.errors import DataError
from edgenas.training.memory import check_memory

# Modes with more than 8 bits per sample. PIL opens 16-bit grayscale PNG/TIFF as "I;16*" (or "I"
# in older versions), 32-bit float TIFF as "F". They are scaled from their full range to 0..255.
_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_UINT16_MAX = 65535.0


def image_extensions() -> frozenset[str]:
    """Lower-case suffixes of every format this PIL can open (``.png``, ``.gif``, ``.tif`` ...)."""
    from PIL import Image

    Image.init()
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


# --- decoding -----------------------------------------------------------------------------------


def _widen_to_8_bits(img, path):
    """A >8-bit grayscale image as mode "L": 16-bit values (and "I" within 0..65535) x 255/65535,
    floats within [0, 1] x 255, rounded. Anything else has no known range and is refused."""
    from PIL import Image

    a = np.asarray(img, dtype=np.float64)
    if not np.isfinite(a).all():
        raise DataError(f"the image {path} ({img.mode}) holds NaN or infinite pixels; remove or replace it")
    if img.mode == "F":
        top, allowed = 1.0, "32-bit float images must hold values in [0, 1]"
    else:
        top, allowed = _UINT16_MAX, "integer images must hold values in 0..65535 (8 or 16 bits)"
    if a.size and (a.min() < 0 or a.max() > top):
        raise DataError(
            f"the image {path} ({img.mode}, values {a.min():g}..{a.max():g}) is out of range: "
            f"{allowed}; convert it to 8 or 16 bits"
        )
    return Image.fromarray(np.round(a * (255.0 / top)).astype(np.uint8), mode="L")


def _as_mode(img, mode: str, path):
    """``img`` (its first frame, as opened) as "L" or "RGB": >8-bit gray scaled down, transparency
    composited onto black (colour x alpha / 255), palette, CMYK, YCbCr ... through PIL's conversions."""
    from PIL import Image

    if img.mode in _WIDE_MODES:
        img = _widen_to_8_bits(img, path)
    if img.mode == "P" and "transparency" in img.info or img.mode in ("PA", "LA", "La", "RGBa"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        rgba = np.asarray(img, dtype=np.uint16)
        rgb = (rgba[..., :3] * rgba[..., 3:] + 127) // 255
        img = Image.fromarray(rgb.astype(np.uint8), mode="RGB")
    if img.mode != mode and mode == "L" and img.mode not in ("1", "P", "RGB"):
        img = img.convert("RGB")  # e.g. CMYK -> RGB -> L (PIL has no direct path for every mode)
    return img.convert(mode)


def _decode(path, mode: str, size: tuple[int, int]):
    """One file as an (H, W, C) uint8 array of ``size`` (H, W), bilinear."""
    from PIL import Image

    h, w = size
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # over the limit at all: refused
            with Image.open(path) as img:
                img = _as_mode(img, mode, path).resize((w, h), Image.Resampling.BILINEAR, reducing_gap=None)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(
            f"the image {path} has more than {limit:,} pixels, PIL's limit against decompression "
            f"bombs; shrink it (edgenas resizes to {h}x{w} anyway) or remove it"
        ) from None
    except DataError:
        raise
    except Exception as e:  # PIL raises OSError, ValueError, SyntaxError, struct.error ... for broken files
        reason = " ".join(str(e).split()) or type(e).__name__
        raise DataError(f"cannot read the image {path} ({reason}); remove or replace it") from None
    return np.asarray(img).reshape(h, w, -1)


def decode_images(paths, input_size: tuple[int, int], channels: int) -> np.ndarray:
    """Decode image files, resized (bilinear) to uint8 (N, H, W, C); 1 channel = grayscale.
    The memory the array needs is checked first."""
    mode, (h, w) = ("L" if channels == 1 else "RGB"), input_size
    nbytes = len(paths) * h * w * channels
    check_memory(
        nbytes,
        what=f"{len(paths)} images of {channels}x{h}x{w} (uint8)",
        hint="use fewer images or a smaller data.input_size",
    )
    images = np.empty((len(paths), h, w, channels), dtype=np.uint8)
    for i, path in enumerate(paths):  # decoding files is per image by nature; done once
        images[i] = _decode(path, mode, (h, w))
    return images


# --- class folders ------------------------------------------------------------------------------


def _class_images(folder: Path, extensions: frozenset[str]) -> list[Path]:
    """Image files under ``folder`` (recursively; links to folders are not followed, so a link loop
    adds nothing; hidden files are skipped). A broken link is refused."""
    found = []
    for top, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(top) / name
            if name.startswith(".") or path.suffix.lower() not in extensions:
                continue
            if not path.exists():
                raise DataError(f"{path} is a broken symbolic link; remove it or point it at an image")
            if path.is_file():
                found.append(path)
    return found


def list_image_folder(root: Path, *, allow_empty: bool = False) -> tuple[list[Path], list[int], tuple[str, ...]]:
    """(image paths, class index per image, class names) of ``root/CLASS/…/IMAGE``.

    Class folders are ``root``'s sub-folders (links to folders included), in sorted order; any image
    PIL opens counts. One file reached twice (through links) is one image; one file reached from
    two class folders has two labels and is refused. ``allow_empty``: class folders without images
    are kept (with no images) instead of refused."""
    extensions = image_extensions()
    try:
        classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    except OSError as e:
        raise DataError(f"imagefolder: cannot list {root} ({' '.join(str(e).split())})") from None
    owner: dict[str, tuple[int, Path]] = {}
    paths, targets = [], []
    for label, name in enumerate(classes):
        images = _class_images(root / name, extensions)
        if not images and not allow_empty:
            raise DataError(
                f"imagefolder: {root / name} holds no images; each class folder needs images "
                f"({', '.join(sorted(extensions)[:8])}, ... any format PIL opens)"
            )
        for path in images:
            real = os.path.realpath(path)
            if real in owner:
                first_label, first = owner[real]
                if first_label != label:
                    raise DataError(
                        f"{path} and {first} are the same file ({real}, through a symbolic link) in "
                        f"the class folders {name} and {classes[first_label]}; an image can have one class"
                    )
                continue
            owner[real] = (label, path)
            paths.append(path)
            targets.append(label)
    if not paths:
        raise DataError(
            f"imagefolder: {root} holds no images in class folders; expected {root}/CLASS_NAME/IMAGE.png "
            f"with one folder per class"
        )
    return paths, targets, tuple(classes)
