"""An Arch's memory on a microcontroller runtime, before it is trained: activation arena, persistent part, flash.

The activation arena is exact: the file's tensors in the order the converter writes them (a chain:
each lives from the op that writes it to the op that reads it), sizes rounded up to TFLM's 16-byte
alignment, placed by TFLM's greedy planner (largest first, each at the lowest offset that no tensor
alive at the same time occupies; of equal sizes, the later tensor first). On the chains of the space that
comes to the largest (input + output) of one fused op: stem;
per layer depthwise then pointwise, or the conv (BatchNorm and ReLU fused); plus the PAD tensor
the converter inserts before a convolution whose PyTorch padding is not TF's "SAME" (stride 2 on
an even side). The persistent part and the flash are fitted to files measured by
``edgenas memory-check`` (constants below).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgenas.config.memory_targets import MemoryTarget
from edgenas.search.space import SEPARABLE, Arch, final_width, layer_plan, out_size

ALIGNMENT = 16  # bytes: TFLM aligns every planned buffer's size (and the arena) to this


@dataclass(frozen=True)
class Buffer:
    """A tensor the planner places: ``size`` bytes (aligned), alive from op ``first`` to op ``last``."""

    name: str
    size: int
    first: int
    last: int


@dataclass(frozen=True)
class Op:
    """One operator of the converted file: its kind, activation input/output elements, channels."""

    kind: str  # "transpose", "pad", "conv", "depthwise", "mean", "fully_connected"
    out_elements: int
    channels: int  # output channels (per-channel quantisation parameters)
    weights: int  # weight elements (0 for ops without weights)
    pad: int = 0  # a PAD op's padding per side (PADs with the same padding share one constant tensor)


@dataclass(frozen=True)
class Footprint:
    """Bytes an Arch needs on a memory target."""

    activations: int  # the planner's arena (TFLM's "head"): exact
    persistent: int  # TFLM's "tail": tensors' and ops' structs, per-channel quantisation data (fitted)
    flash: int  # the .tflite file (fitted)
    target: str

    @property
    def arena(self) -> int:
        """The tensor arena to declare (16-byte aligned)."""
        return _align(self.activations + self.persistent)

    def to_dict(self) -> dict:
        return {
            "peak_memory_bytes": self.activations,
            "persistent_bytes": self.persistent,
            "arena_bytes": self.arena,
            "flash_bytes": self.flash,
            "memory_target": self.target,
        }


def _align(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF's "SAME" padding (before, after) of one side."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def needs_pad(size: tuple[int, int], kernel: int, stride: int) -> bool:
    """Whether PyTorch's symmetric ``kernel // 2`` padding differs from SAME on either side (then a PAD op)."""
    p = kernel // 2
    return any(same_padding(s, kernel, stride) != (p, p) for s in size)


def graph(arch: Arch, *, in_channels: int, input_size: tuple[int, int], outputs: int, target: MemoryTarget) -> list[Op]:
    """The operators of the converted classifier, in the file's order."""
    h, w = input_size
    ops = []
    if target.nchw_input:
        ops.append(Op("transpose", in_channels * h * w, in_channels, 0))
    stem = 2 * arch.width
    ops.append(Op("conv", stem * h * w, stem, 9 * in_channels * stem))
    for (c_in, c_out, stride), op, k in zip(layer_plan(arch), arch.ops, arch.kernels):
        if target.explicit_pad and needs_pad((h, w), k, stride):
            p = k // 2
            ops.append(Op("pad", c_in * (h + 2 * p) * (w + 2 * p), c_in, 0, p))
        h, w = out_size(h, stride), out_size(w, stride)
        if op == SEPARABLE:
            ops.append(Op("depthwise", c_in * h * w, c_in, k * k * c_in))
            ops.append(Op("conv", c_out * h * w, c_out, c_in * c_out))
        else:
            ops.append(Op("conv", c_out * h * w, c_out, k * k * c_in * c_out))
    ops.append(Op("mean", final_width(arch), final_width(arch), 0))
    ops.append(Op("fully_connected", outputs, outputs, final_width(arch) * outputs))
    return ops


def buffers(ops: list[Op], *, input_elements: int, target: MemoryTarget) -> list[Buffer]:
    """The planned tensors of a chain: the input (alive at op 0, the subgraph's start) and each op's output.

    Scopes count as TFLM's: 0 for the inputs, op i runs at scope i + 1; the output lives to the end.
    """
    planned = [Buffer("input", _align(input_elements * target.element_bytes), 0, 1)]
    for i, op in enumerate(ops, start=1):
        last = i + 1 if i < len(ops) else len(ops)
        planned.append(Buffer(f"{i}:{op.kind}", _align(op.out_elements * target.element_bytes), i, last))
    return planned


def greedy_arena(planned: list[Buffer]) -> int:
    """Bytes TFLM's greedy planner spans: buffers by size, largest first, each at the lowest offset where it
    fits between the placed buffers alive at the same time. Of equal sizes the one added last goes first
    (TFLM lists the buffers from the tail before its stable sort): it decides which of two equal tensors
    sits at offset 0."""
    order = sorted(range(len(planned)), key=lambda i: (-planned[i].size, -i))
    placed: list[tuple[int, Buffer]] = []  # (offset, buffer), kept sorted by offset
    for i in order:
        b = planned[i]
        offset = 0
        for at, other in placed:
            if other.first > b.last or b.first > other.last:
                continue  # never alive at the same time
            if at - offset >= b.size:
                break  # the gap before this buffer holds it
            offset = max(offset, at + other.size)
        placed.append((offset, b))
        placed.sort(key=lambda entry: entry[0])
    return max((at + b.size for at, b in placed), default=0)


@dataclass(frozen=True)
class Counts:
    """What the persistent part and the file grow with."""

    tensors: int  # every tensor of the file: activations, weights, biases, the ops' constant operands
    ops: int
    weighted_ops: int  # convolutions, depthwise convolutions and the fully-connected head
    depthwise: int  # depthwise convolutions
    convs: int  # convolutions (stem, pointwise, full)
    pads: int
    layers: int  # the Arch's depth (tensor names carry the module path, ``layers.N``)
    channels: int  # output channels of the weighted ops (per-channel scales, multipliers, shifts, biases)
    weights: int  # weight elements
    constant: int = 1


def fitted(**coefficients: float):
    """Bytes = sum of coefficient x count, the counts named as ``Counts``' fields."""

    def predict(c: Counts) -> int:
        return round(sum(v * getattr(c, k) for k, v in coefficients.items()))

    return predict


# Fitted (benchmarks/fit_footprint.py) on 27 files of litert-int8's converter measured by tflite-micro: 10 random
# networks of the demo space (8x8x1) and 17 of the mcu space (32x32x1), `memory-check --seed 1`; checked on
# the networks of `--seed 2` (docs/benchmarks.md). Persistent: TFLM's 24-byte TfLiteEvalTensor per tensor,
# 8 bytes of per-channel multiplier and shift, op structs and data per op. Flash: the weights (1 byte each),
# per-channel bias, scale and zero point, and per op its tensors' tables and names (module paths).
PERSISTENT = {
    "tflm-int8": fitted(tensors=24.18, ops=222.1, weighted_ops=-50.55, pads=181.77, channels=8.0, constant=90.88)
}
FLASH = {
    "tflm-int8": fitted(
        weights=1.0, channels=27.8, depthwise=672.0, convs=1055.8, pads=530.3, layers=790.6, constant=265.2
    )
}


def counts(arch: Arch, ops: list[Op]) -> Counts:
    weighted = [o for o in ops if o.weights]
    pads = [o for o in ops if o.kind == "pad"]
    constants = 2 * len(weighted) + sum(o.kind in ("transpose", "mean") for o in ops) + len({o.pad for o in pads})
    return Counts(
        tensors=1 + len(ops) + constants,
        ops=len(ops),
        weighted_ops=len(weighted),
        depthwise=sum(o.kind == "depthwise" for o in ops),
        convs=sum(o.kind == "conv" for o in ops),
        pads=len(pads),
        layers=arch.depth,
        channels=sum(o.channels for o in weighted),
        weights=sum(o.weights for o in weighted),
    )


def footprint(
    arch: Arch, *, in_channels: int, input_size: tuple[int, int], outputs: int, target: MemoryTarget
) -> Footprint:
    """The classifier's activation arena (exact), persistent part and file size (fitted) on ``target``."""
    ops = graph(arch, in_channels=in_channels, input_size=input_size, outputs=outputs, target=target)
    planned = buffers(ops, input_elements=in_channels * input_size[0] * input_size[1], target=target)
    c = counts(arch, ops)
    return Footprint(greedy_arena(planned), PERSISTENT[target.name](c), FLASH[target.name](c), target.name)
