"""The reference training augmentation of uint8 image batches, as tensor ops on their device."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _stats(values: tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=like.device).view(1, -1, 1, 1)


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 ``(x / 255 - mean) / std``."""
    return (x.float().div_(255.0) - _stats(mean, x)).div_(_stats(std, x))


class BatchAugment:
    """The reference training augmentation of uint8 batches, all as tensor ops on their device.

    Order: uint8 -> /255 -> random crop with ``crop_padding`` zero padding -> horizontal flip
    (if ``flip``) -> normalise -> cutout (side ``cutout``, DARTS style: centre uniform over the
    image, square clipped at the borders, set to 0 after normalisation; only where
    min(H, W) > cutout). Crop and flip move whole pixels, so they run on the uint8 batch
    (zero padding is black either way) before the float conversion.
    """

    def __init__(self, data, *, crop_padding: int = 4, cutout: int = 16, device: torch.device | str = "cpu"):
        if crop_padding < 0 or cutout < 0:
            raise ValueError(f"crop_padding and cutout must be >= 0, got {crop_padding}, {cutout}")
        self.crop_padding = int(crop_padding)
        self.flip = bool(data.flip)
        h, w = data.input_size
        self.cutout = int(cutout) if 0 < cutout < min(h, w) else 0
        self.mean = torch.tensor(data.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.inv_std = 1.0 / torch.tensor(data.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        n, _, h, w = x.shape
        dev = x.device
        if self.crop_padding:
            x = random_crop(x, self.crop_padding, generator)
        if self.flip:
            flip = torch.rand(n, device=dev, generator=generator) < 0.5
            x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
        out = (x.float().div_(255.0) - self.mean).mul_(self.inv_std)
        if self.cutout:
            out.masked_fill_(
                _cutout_mask(n, h=h, w=w, side=self.cutout, device=dev, generator=generator).unsqueeze(1), 0.0
            )
        return out


def random_crop(x: torch.Tensor, pad: int, generator: torch.Generator | None) -> torch.Tensor:
    """Per-sample random (H, W) window of the zero-padded batch, by two gathers (no loop over samples)."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    offsets = torch.randint(0, 2 * pad + 1, (2, n), device=x.device, generator=generator)
    rows = (offsets[0].view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    out = padded.gather(2, rows.expand(n, c, h, w + 2 * pad))
    cols = (offsets[1].view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w)
    return out.gather(3, cols.expand(n, c, h, w))


def _cutout_mask(n: int, *, h: int, w: int, side: int, device, generator: torch.Generator | None) -> torch.Tensor:
    """(N, H, W) bool: a side x side square per sample, centre uniform over the image, clipped."""
    cy = torch.randint(0, h, (n, 1), device=device, generator=generator)
    cx = torch.randint(0, w, (n, 1), device=device, generator=generator)
    rows, cols = torch.arange(h, device=device), torch.arange(w, device=device)
    in_rows = (rows >= cy - side // 2) & (rows < cy + side // 2)  # DARTS: clip(c - L//2), clip(c + L//2)
    in_cols = (cols >= cx - side // 2) & (cols < cx + side // 2)
    return in_rows.unsqueeze(2) & in_cols.unsqueeze(1)


def augment(
    x: torch.Tensor,
    *,
    data,
    crop_padding: int = 4,
    cutout: int = 16,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One-off form of ``BatchAugment`` (build a ``BatchAugment`` once for a training loop)."""
    return BatchAugment(data, crop_padding=crop_padding, cutout=cutout, device=x.device)(x, generator)
