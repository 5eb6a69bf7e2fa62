"""The search space: an ``Arch`` value (depth, width, ops, kernels), its model, params and MACs.

A plain chain with no skip connections (the EGNAS/TRG space): a 3x3 stem to
``2C`` channels, ``depth`` layers of which ``depth//3`` and ``2*depth//3`` have stride 2 and
double the running width (``C -> 2C -> 4C``), then global average pooling and a linear head.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from edgenas.config.strategies import KERNELS

SEPARABLE = 0  # ReLU -> depthwise kxk -> pointwise 1x1 -> BN
CONV = 1  # ReLU -> kxk conv -> BN
OPS = (SEPARABLE, CONV)


@dataclass(frozen=True)
class Arch:
    """One network of the space. ``ops[i]`` is 0 (separable) or 1 (conv), ``kernels[i]`` 3/5/7."""

    depth: int
    width: int
    ops: tuple[int, ...]
    kernels: tuple[int, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.depth, int) or self.depth < 1:
            raise ValueError(f"Arch.depth must be a positive int, got {self.depth!r}")
        if not isinstance(self.width, int) or self.width < 1:
            raise ValueError(f"Arch.width must be a positive int, got {self.width!r}")
        object.__setattr__(self, "ops", tuple(int(o) for o in self.ops))
        object.__setattr__(self, "kernels", tuple(int(k) for k in self.kernels))
        if len(self.ops) != self.depth or len(self.kernels) != self.depth:
            raise ValueError(
                f"Arch needs one op and one kernel per layer: depth {self.depth}, "
                f"{len(self.ops)} ops, {len(self.kernels)} kernels"
            )
        if any(o not in OPS for o in self.ops):
            raise ValueError(f"Arch.ops must each be one of {OPS}, got {list(self.ops)}")
        if any(k not in KERNELS for k in self.kernels):
            raise ValueError(f"Arch.kernels must each be one of {KERNELS}, got {list(self.kernels)}")

    @classmethod
    def plain(cls, depth: int, width: int) -> Arch:
        """All layers separable 3x3: the macro stages' candidates."""
        return cls(depth, width, (SEPARABLE,) * depth, (3,) * depth)

    def with_width(self, width: int) -> Arch:
        return Arch(self.depth, width, self.ops, self.kernels)

    def with_op(self, layer: int, op: int) -> Arch:
        ops = list(self.ops)
        ops[layer] = op
        return Arch(self.depth, self.width, tuple(ops), self.kernels)

    def with_kernel(self, layer: int, kernel: int) -> Arch:
        kernels = list(self.kernels)
        kernels[layer] = kernel
        return Arch(self.depth, self.width, self.ops, tuple(kernels))

    def to_dict(self) -> dict:
        return {"depth": self.depth, "width": self.width, "ops": list(self.ops), "kernels": list(self.kernels)}

    @classmethod
    def from_dict(cls, d: dict) -> Arch:
        try:
            return cls(int(d["depth"]), int(d["width"]), tuple(d["ops"]), tuple(d["kernels"]))
        except KeyError as e:
            raise ValueError(
                f"architecture is missing the key {e.args[0]!r} (needs depth, width, ops, kernels)"
            ) from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> Arch:
        return cls.from_dict(json.loads(text))

    def __str__(self) -> str:
        ops = "".join("c" if o == CONV else "s" for o in self.ops)
        kernels = "".join(str(k) for k in self.kernels)
        return f"d{self.depth}-w{self.width}-{ops}-{kernels}"


def layer_plan(arch: Arch) -> list[tuple[int, int, int]]:
    """(in_channels, out_channels, stride) for each layer."""
    plan = []
    c_in, c = 2 * arch.width, arch.width
    reductions = {arch.depth // 3, 2 * arch.depth // 3}
    for i in range(arch.depth):
        stride = 1
        if i in reductions:
            c, stride = 2 * c, 2
        plan.append((c_in, c, stride))
        c_in = c
    return plan


def final_width(arch: Arch) -> int:
    return layer_plan(arch)[-1][1]


def out_size(size: int, stride: int) -> int:
    # kxk conv with padding k//2 (k odd): size is kept at stride 1, halved (rounded up) at stride 2.
    return (size - 1) // stride + 1


@dataclass(frozen=True)
class LayerCost:
    """One convolution of the network: its shape at ``size`` (its output H, W), parameters (BN included) and MACs."""

    name: str  # "stem", "L1", "L2", ...
    op: str  # "stem", "sep" or "conv"
    kernel: int
    c_in: int
    c_out: int
    stride: int
    size: tuple[int, int]
    params: int
    macs: int


def layer_costs(arch: Arch, in_channels: int, input_size: tuple[int, int] = (1, 1)) -> list[LayerCost]:
    """The stem and every layer, in order (the pooling and the head are not in it)."""
    h, w = input_size
    stem = 2 * arch.width
    costs = [
        LayerCost(
            "stem",
            "stem",
            3,
            in_channels,
            stem,
            1,
            (h, w),
            9 * in_channels * stem + 2 * stem,
            h * w * 9 * in_channels * stem,
        )
    ]
    for i, ((c_in, c_out, stride), op, k) in enumerate(zip(layer_plan(arch), arch.ops, arch.kernels), start=1):
        h, w = out_size(h, stride), out_size(w, stride)
        per_pixel = k * k * c_in + c_in * c_out if op == SEPARABLE else k * k * c_in * c_out
        costs.append(
            LayerCost(
                f"L{i}",
                "sep" if op == SEPARABLE else "conv",
                k,
                c_in,
                c_out,
                stride,
                (h, w),
                per_pixel + 2 * c_out,
                h * w * per_pixel,
            )
        )  # + BN's scale and shift
    return costs


def count_params(arch: Arch, in_channels: int, num_classes: int) -> int:
    """Every trainable parameter, BatchNorm affine ones included; equals the built model's."""
    return sum(c.params for c in layer_costs(arch, in_channels)) + final_width(arch) * num_classes + num_classes


def count_macs(arch: Arch, *, in_channels: int, num_classes: int, input_size: tuple[int, int]) -> int:
    """Multiply-accumulates of one forward pass of one image (convolutions and the head)."""
    return sum(c.macs for c in layer_costs(arch, in_channels, input_size)) + final_width(arch) * num_classes


def activation_count(arch: Arch, in_channels: int, input_size: tuple[int, int]) -> int:
    """Elements of every layer output (stem, each layer, pooled) for one image: a memory-traffic figure."""
    h, w = input_size
    total = in_channels * h * w + 2 * arch.width * h * w
    for _c_in, c_out, stride in layer_plan(arch):
        h, w = out_size(h, stride), out_size(w, stride)
        total += c_out * h * w
    return total + final_width(arch)


def load_arch(path: str | Path) -> Arch:
    """Read an ``arch.json`` (a bare architecture, or a summary holding one under ``arch``)."""
    data = json.loads(Path(path).read_text())
    return Arch.from_dict(data.get("arch", data))


def count_embedding_params(arch: Arch, in_channels: int, embedding_dim: int) -> int:
    """Trainable parameters of ``EmbeddingNet`` (the deployed network; the margin head is not in it)."""
    return count_params(arch, in_channels, embedding_dim) + 2 * embedding_dim  # + BatchNorm1d affine


def count_embedding_macs(arch: Arch, *, in_channels: int, embedding_dim: int, input_size: tuple[int, int]) -> int:
    """MACs of one image through ``EmbeddingNet``: convolutions and the embedding layer (BN folds away)."""
    return count_macs(arch, in_channels=in_channels, num_classes=embedding_dim, input_size=input_size)


def narrowest_width(config) -> int:
    """The narrowest first-layer width a search config's candidates can take: 1 where the egnas micro
    stages match parameters as the published code does (``micro_width_floor = false``), else ``min_width``."""
    return 1 if getattr(config, "micro_width_floor", True) is False else config.min_width


def width_grid(config) -> list[int]:
    """Every first-layer width a search config can reach: ``min_width`` .. ``max_width`` by ``width_step``."""
    return list(range(config.min_width, config.max_width + 1, config.width_step))


def space_kernels(config) -> tuple[int, ...]:
    """Kernel sizes a search config's layers can take: 3 (the macro stages') and its ``micro_kernels``."""
    return tuple(sorted({3, *config.micro_kernels}))


def random_arch(config, rng: random.Random) -> Arch:
    """A uniformly drawn network of a search config's space: depth, width of the grid, each layer's op and kernel."""
    depth = rng.randint(config.min_depth, config.max_depth)
    kernels = space_kernels(config)
    return Arch(
        depth,
        rng.choice(width_grid(config)),
        tuple(rng.choice(OPS) for _ in range(depth)),
        tuple(rng.choice(kernels) for _ in range(depth)),
    )
