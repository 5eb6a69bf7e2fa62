"""Embeddings of a face network and the verification figures of pairs scored with them."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgenas.training.augment import normalize
from edgenas.training.verification import Pairs, Verification, verify


@torch.inference_mode()
def embed(model: nn.Module, x: torch.Tensor, mean, std, device, batch_size: int = 256) -> np.ndarray:
    """Embeddings (N, D) float32 of uint8 images ``x``, normalised with ``mean``/``std``."""
    was_training = model.training
    model.eval()
    try:
        out = [model(normalize(x[i:i + batch_size].to(device), tuple(mean), tuple(std))).float().cpu()
               for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out).numpy()


def pair_scores(model: nn.Module, x: torch.Tensor, pairs: Pairs, mean, std, device) -> np.ndarray:
    """Cosine similarity of each pair's embeddings (images ``x``)."""
    e = embed(model, x, mean, std, device)
    return np.sum(e[pairs.a] * e[pairs.b], axis=1)


def evaluate_pairs(model: nn.Module, x: torch.Tensor, pairs: Pairs, mean, std, device) -> Verification:
    """The verification figures of ``model`` on ``pairs`` over the images ``x``."""
    return verify(pair_scores(model, x, pairs, mean, std, device), pairs.same, pairs.folds)
