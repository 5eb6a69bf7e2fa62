"""Run in a subprocess by ``runtime/tflm.py``: does a ``.tflite`` run on TFLM with an arena of N bytes?

``python -m edgenas.runtime.tflm_probe MODEL N`` exits 0 after one inference and TFLM's own allocation
report (``print_allocations``: head, tail, total) on stderr; 1 where the arena is too small. TFLM can
crash on a failed allocation (a segfault while freeing temporary buffers), so each size is tried in a
process of its own. Needs only numpy and tflite-micro.
"""

from __future__ import annotations

import sys

import numpy as np


def main(path: str, arena: int) -> int:
    from tflite_micro.python.tflite_micro import runtime

    try:
        interpreter = runtime.Interpreter.from_file(path, arena_size=arena)
        details = interpreter.get_input_details(0)
        interpreter.set_input(np.zeros(details["shape"], details["dtype"]), 0)
        interpreter.invoke()
    except RuntimeError:
        return 1
    interpreter.print_allocations()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
