"""Memory estimates checked before allocating: a dataset's images, a candidate's training state."""

from __future__ import annotations

import os

from edgenas.errors import DataError, ProfileError, UserInputError
from edgenas.search.space import Arch, activation_count, count_params

FLOAT_BYTES = 4  # float32 weights, gradients and activations (bf16 autocast on CUDA needs less: an upper figure there)
STATE_COPIES = 3  # weights, gradients, SGD momentum
SAVED_PER_LAYER = 3  # a layer's ReLU output, convolution output and BatchNorm output are kept for backward


def available_memory() -> int | None:
    """Bytes of host memory available to a new allocation (``MemAvailable``), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GiB"


def check_memory(
    nbytes: int, *, what: str, hint: str, available: int | None = None, error: type[UserInputError] = DataError
) -> None:
    """Refuse (a one-line ``error``, exit 2) when ``nbytes`` exceed ``available`` (default: the host's now)."""
    available = available_memory() if available is None else available
    if available is not None and nbytes > available:
        raise error(f"{what} needs about {_gib(nbytes)} of memory, {_gib(available)} is available; {hint}")


def training_bytes(arch: Arch, *, in_channels: int, outputs: int, input_size: tuple[int, int], batch: int) -> int:
    """An estimate (from below, for plain convolutions) of the memory training ``arch`` takes: its
    parameters' state plus one batch's saved activations."""
    params = count_params(arch, in_channels, outputs)
    h, w = input_size
    activations = activation_count(arch, in_channels, (h, w))
    return FLOAT_BYTES * (STATE_COPIES * params + SAVED_PER_LAYER * batch * activations)


def device_memory(device) -> int | None:
    """Free bytes on ``device``: the CUDA device's free memory, or the host's available memory."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return available_memory()


def check_training_memory(
    arch: Arch,
    *,
    in_channels: int,
    outputs: int,
    input_size: tuple[int, int],
    batch: int,
    device,
    what: str = "the network",
) -> None:
    """Refuse (``ProfileError``, exit 2) to train ``arch`` where its estimate exceeds the device's free memory."""
    nbytes = training_bytes(arch, in_channels=in_channels, outputs=outputs, input_size=input_size, batch=batch)
    params = count_params(arch, in_channels, outputs)
    check_memory(
        nbytes,
        what=f"{what} {arch} ({params:,} parameters, batch {batch} of {in_channels}x{input_size[0]}x"
        f"{input_size[1]}) to train",
        hint="lower search.max_width, data.input_size or the batch size",
        available=device_memory(device),
        error=ProfileError,
    )
