"""Embeddings of a face network and the verification figures of pairs scored with them."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgenas.training.augment import normalize
from edgenas.training.verification import Pairs, Verification, verify


@torch.inference_mode()
def embed(
    model: nn.Module, *, x: torch.Tensor, mean, std, device, batch_size: int = 256, flip: bool = False
) -> np.ndarray:
    """Embeddings (N, D) float32 of uint8 images ``x``, normalised with ``mean``/``std``.

    ``flip``: the embedding of each image plus that of its horizontal mirror, L2-normalised again
    (insightface's "Accuracy-Flip").
    """
    was_training = model.training
    model.eval()
    try:
        out = []
        for i in range(0, len(x), batch_size):
            batch = normalize(x[i : i + batch_size].to(device), tuple(mean), tuple(std))
            e = model(batch).float()
            if flip:
                e = torch.nn.functional.normalize(e + model(batch.flip(-1)).float(), dim=1)
            out.append(e.cpu())
    finally:
        model.train(was_training)
    return torch.cat(out).numpy()


def scores_of(embeddings: np.ndarray, pairs: Pairs) -> np.ndarray:
    """Cosine similarity of each pair of (L2-normalised) embeddings."""
    return np.sum(embeddings[pairs.a] * embeddings[pairs.b], axis=1)


def pair_scores(
    model: nn.Module, *, x: torch.Tensor, pairs: Pairs, mean, std, device, flip: bool = False
) -> np.ndarray:
    """Cosine similarity of each pair's embeddings (images ``x``)."""
    return scores_of(embed(model, x=x, mean=mean, std=std, device=device, flip=flip), pairs)


def verify_pairs(
    model: nn.Module, *, x: torch.Tensor, pairs: Pairs, mean, std, device, flip: bool = False
) -> Verification:
    """The verification figures of ``model`` on ``pairs`` over the images ``x`` (``flip``: see ``embed``)."""
    return verify(
        pair_scores(model, x=x, pairs=pairs, mean=mean, std=std, device=device, flip=flip),
        same=pairs.same,
        folds=pairs.folds,
    )
