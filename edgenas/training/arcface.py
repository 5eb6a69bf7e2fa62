"""The ArcFace additive angular margin head that face candidates train with (never exported)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ArcFace(nn.Module):
    """Additive angular margin head (training only): logits ``s * cos(theta + m)`` for the true
    identity, ``s * cos(theta)`` for the others, theta the angle between embedding and class centre.

    Where ``theta + m`` would pass pi the target logit becomes ``s * (cos theta - m sin m)``, which
    keeps falling with theta (insightface). Cosines are clamped to ``[-1 + EPS, 1 - EPS]`` before the
    sine is taken, so gradients stay finite at cos = +-1. Computed in float32 even under autocast.
    """

    EPS = 1e-6

    def __init__(self, embedding_dim: int, *, num_classes: int, scale: float = 64.0, margin: float = 0.5):
        super().__init__()
        if embedding_dim < 1 or num_classes < 2:
            raise ValueError(f"ArcFace needs embedding_dim >= 1 and >= 2 classes, got {embedding_dim}, {num_classes}")
        if scale <= 0 or not 0 <= margin < math.pi / 2:
            raise ValueError(f"ArcFace needs scale > 0 and margin in [0, pi/2), got {scale}, {margin}")
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.xavier_uniform_(self.weight)
        self.scale, self.margin = float(scale), float(margin)
        self.cos_m, self.sin_m = math.cos(margin), math.sin(margin)
        self.threshold = math.cos(math.pi - margin)  # cos theta below this: theta + m > pi
        self.fallback = math.sin(math.pi - margin) * margin

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(embeddings.float(), dim=1), F.normalize(self.weight.float(), dim=1))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.autocast(embeddings.device.type, enabled=False):
            cos = self.cosine(embeddings).clamp(-1.0 + self.EPS, 1.0 - self.EPS)
            target = cos.gather(1, labels.view(-1, 1))
            sin = torch.sqrt(1.0 - target * target)
            phi = target * self.cos_m - sin * self.sin_m  # cos(theta + m)
            phi = torch.where(target > self.threshold, phi, target - self.fallback)
            return cos.scatter(1, labels.view(-1, 1), phi) * self.scale
