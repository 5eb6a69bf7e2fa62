"""Run in a subprocess by ``runtime/tflm.py``: the smallest tensor arena TFLM accepts for a ``.tflite``.

``python -m edgenas.runtime.tflm_probe MODEL`` prints ``{"arena": N}`` on stdout, after TFLM's own
allocation report (``print_allocations``: head, tail, total) on stderr. Needs only numpy and tflite-micro,
so a crash of the interpreter takes only this process down.
"""

from __future__ import annotations

import json
import sys

import numpy as np

LARGEST = 1 << 28  # bytes: a first arena that holds any network of the space


def _runs(runtime, model: bytes, arena: int):
    """The interpreter after one inference with an ``arena``-byte arena, or None where it does not fit."""
    try:
        interpreter = runtime.Interpreter.from_bytes(model, arena_size=arena)
        details = interpreter.get_input_details(0)
        interpreter.set_input(np.zeros(details["shape"], details["dtype"]), 0)
        interpreter.invoke()
        return interpreter
    except RuntimeError:
        return None


def smallest_arena(runtime, model: bytes) -> int:
    """Bisection on ``arena_size`` between 1 byte and an arena that runs."""
    high = min(LARGEST, 10 * len(model) + (1 << 20))
    while _runs(runtime, model, high) is None:
        if high >= LARGEST:
            raise SystemExit(f"TFLM cannot run the model even with a {LARGEST:,}-byte arena")
        high = min(LARGEST, 4 * high)
    low = 1
    while low < high:
        mid = (low + high) // 2
        if _runs(runtime, model, mid) is None:
            low = mid + 1
        else:
            high = mid
    return low


def main(path: str) -> None:
    from tflite_micro.python.tflite_micro import runtime

    with open(path, "rb") as f:
        model = f.read()
    arena = smallest_arena(runtime, model)
    _runs(runtime, model, arena).print_allocations()
    print(json.dumps({"arena": arena}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
