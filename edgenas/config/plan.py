"""The training protocol of a candidate (``[train]`` of a profile): plain data, no torch."""

from __future__ import annotations

from dataclasses import dataclass

from edgenas.config.schema import check_fields, setting

PROTOCOLS = ("reference", "fast")


@dataclass(frozen=True)
class TrainPlan:
    """How a candidate is trained. Defaults are the reference protocol (README, "Speed").

    ``fast`` protocol: batches of ``fast_batch_size`` (the last incomplete batch of an epoch is
    dropped; every epoch draws a new order), learning rate ``lr * fast_batch_size / batch_size``
    (linear scaling), warmed up linearly over the first ``warmup_fraction`` of the steps, then
    cosine-annealed to 0 per step; BatchNorm momentum ``m`` becomes ``1 - (1 - m) ** (fast_batch_size
    / batch_size)`` while training, so running statistics average over as many images as in the
    reference (with 8x fewer steps they would otherwise lag the weights). Everything else (SGD,
    momentum, weight decay, clipping, augmentation, epochs) is the reference protocol's.
    """

    protocol: str = setting("reference", choices=PROTOCOLS)  # "reference" (faithful) or "fast"
    batch_size: int = setting(64, ge=1, le=65_536)
    lr: float = setting(0.025, gt=0, le=100)  # at batch_size; cosine-annealed to 0 over the candidate's epochs
    momentum: float = setting(0.9, ge=0, lt=1)
    weight_decay: float = setting(3e-4, ge=0, le=1)
    grad_clip: float = setting(5.0, ge=0, le=1e6)  # max gradient norm; 0 disables
    crop_padding: int = setting(4, ge=0, le=1024)  # random crop with this zero padding (pixels); 0 disables
    cutout: int = setting(16, ge=0, le=4096)  # cutout square side (pixels), where the image is larger; 0 disables
    final_epochs: int = setting(600, ge=1, le=100_000)  # epochs of `edgenas train` (the final training)
    fast_batch_size: int = setting(512, ge=1, le=65_536)  # fast protocol: images per step (capped at the set)
    warmup_fraction: float = setting(0.05, ge=0, lt=1)  # fast protocol: share of all steps with a linear warm-up
    cuda_graphs: bool = True  # on CUDA: replay each training step as a captured CUDA graph (same math)
    threads: int = setting(
        0, ge=0, le=1024
    )  # CPU intra-op threads while training; 0: edgenas's policy (training/threads.py)
    checkpoint_every: int = setting(
        10, ge=0, le=100_000
    )  # `edgenas train`: a checkpoint every N epochs; 0: only when stopped
    # After training, BatchNorm running statistics are recomputed on training images (as
    # torch.optim.swa_utils.update_bn does): after a few optimizer steps the running averages still
    # hold their initial values, and a short proxy's accuracy would be measured with them.
    # false: keep them.
    recompute_bn: bool = True

    def __post_init__(self) -> None:
        check_fields(self, "train")
