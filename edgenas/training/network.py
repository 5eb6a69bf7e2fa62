"""The PyTorch networks of the search space: the classifier and the face-embedding network."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgenas.search.space import SEPARABLE, Arch, final_width, layer_plan


class Layer(nn.Sequential):
    """ReLU -> (depthwise kxk -> pointwise 1x1 | kxk conv) -> BatchNorm."""

    def __init__(self, c_in: int, *, c_out: int, stride: int, op: int, kernel: int):
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
            *(
                Layer(c_in, c_out=c_out, stride=s, op=op, kernel=k)
                for (c_in, c_out, s), op, k in zip(layer_plan(arch), arch.ops, arch.kernels)
            )
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(final_width(arch), num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features of the last layer, shape (N, final width)."""
        return torch.flatten(self.pool(self.layers(self.stem(x))), 1)

    def head(self, fmap: torch.Tensor) -> torch.Tensor:
        """The last layer's feature map -> logits (pool and linear head)."""
        return self.classifier(torch.flatten(self.pool(fmap), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.stem(x)))


class EmbeddingNet(nn.Module):
    """The searched backbone (``Network``'s stem, layers, pool) -> Linear -> BatchNorm1d -> L2 norm.

    ``forward`` gives unit-length embeddings (what is exported); ``features`` the embedding before
    normalisation (what the margin head trains on, as ``trainer.fit`` calls it).
    """

    def __init__(self, arch: Arch, in_channels: int, embedding_dim: int):
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        backbone = Network(arch, in_channels, embedding_dim)
        self.arch, self.in_channels, self.embedding_dim = arch, in_channels, embedding_dim
        self.stem, self.layers, self.pool = backbone.stem, backbone.layers, backbone.pool
        self.embedding = backbone.classifier  # Linear(final width -> embedding_dim)
        self.bn = nn.BatchNorm1d(embedding_dim)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's pooled features, (N, final width)."""
        return torch.flatten(self.pool(self.layers(self.stem(x))), 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.embedding(self.pooled(x)))

    def head(self, fmap: torch.Tensor) -> torch.Tensor:
        """The last layer's feature map -> unit-length embeddings (pool, linear, BatchNorm, L2 norm)."""
        return F.normalize(self.bn(self.embedding(torch.flatten(self.pool(fmap), 1))), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.stem(x)))


def build_model(arch: Arch, in_channels: int, num_classes: int) -> Network:
    """The classifier for ``arch``: ``model(x)`` gives logits, ``model.features(x)`` pooled features."""
    return Network(arch, in_channels, num_classes)


def build_network(arch: Arch, *, task: str, in_channels: int, outputs: int) -> nn.Module:
    """The network a task deploys: a classifier with ``outputs`` classes, or (``face``) an embedding
    net with ``outputs`` dimensions. ``task`` is validated by the profile (``config.profile.TASKS``)."""
    if task == "face":
        return EmbeddingNet(arch, in_channels, outputs)
    return Network(arch, in_channels, outputs)
