"""The PyTorch modules of the search space (kept apart so ``space`` imports without torch)."""

from __future__ import annotations

import torch
from torch import nn

from edgenas.space import SEPARABLE, Arch, final_width, layer_plan


class Layer(nn.Sequential):
    """ReLU -> (depthwise kxk -> pointwise 1x1 | kxk conv) -> BatchNorm."""

    def __init__(self, c_in: int, c_out: int, stride: int, op: int, kernel: int):
        pad = kernel // 2
        if op == SEPARABLE:
            convs = [
                nn.Conv2d(c_in, c_in, kernel, stride, pad, groups=c_in, bias=False),
                nn.Conv2d(c_in, c_out, 1, bias=False),
            ]
        else:
            convs = [nn.Conv2d(c_in, c_out, kernel, stride, pad, bias=False)]
        super().__init__(nn.ReLU(inplace=False), *convs, nn.BatchNorm2d(c_out))


class Network(nn.Module):
    """stem -> layers -> global average pool -> linear head."""

    def __init__(self, arch: Arch, in_channels: int, num_classes: int):
        super().__init__()
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}")
        self.arch = arch
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 2 * arch.width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * arch.width),
        )
        self.layers = nn.Sequential(
            *(Layer(c_in, c_out, s, op, k) for (c_in, c_out, s), op, k in zip(layer_plan(arch), arch.ops, arch.kernels))
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(final_width(arch), num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features of the last layer, shape (N, final width)."""
        return torch.flatten(self.pool(self.layers(self.stem(x))), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def model_for_run(arch: Arch, meta: dict) -> nn.Module:
    """The network a run trains, from its ``run.json``: a classifier, or an embedding net for faces."""
    shape = meta["data"]
    if meta.get("task", "classify") == "face":
        from edgenas.face import EmbeddingNet

        return EmbeddingNet(arch, shape["in_channels"], meta["profile"]["face"]["embedding_dim"])
    return Network(arch, shape["in_channels"], shape["num_classes"])
