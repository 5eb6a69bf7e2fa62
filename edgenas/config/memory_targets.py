"""The runtimes whose memory a budget can bound (``[budget] memory_target``): plain data, one row each.

A row says how the runtime lays a network of the space out in memory, as its converter writes the
file and its planner places the tensors; ``search/footprint.py`` turns it into bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

KB = 1024  # bytes in the budgets' kilobyte (`max_peak_memory_kb`, `max_flash_kb`): MCU SRAM and flash sizes are in KiB


@dataclass(frozen=True)
class MemoryTarget:
    name: str
    runtime: str  # what runs the file: "tflite-micro"
    precision: str  # "int8": weights and activations one byte each
    element_bytes: int  # bytes of one activation element
    weight_bytes: int  # bytes of one weight
    nchw_input: bool  # the file takes NCHW images and transposes them first (a TRANSPOSE op and its output)
    explicit_pad: bool  # a PAD op (and its padded tensor) before each convolution whose padding is not TF's SAME
    install: str


MEMORY_TARGETS = {
    t.name: t
    for t in (
        # TensorFlow Lite Micro on a full-integer INT8 .tflite (litert-int8: PT2E, NHWC int8 input): the greedy planner's arena
        MemoryTarget("tflm-int8", "tflite-micro", "int8", 1, 1, False, True, "pip install edgenas[tflm]"),
    )
}
