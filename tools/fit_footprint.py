"""Fit the footprint model's persistent and flash coefficients (search/footprint.py) to memory-check figures.

    edgenas memory-check --profile demo --json demo.json
    edgenas memory-check --profile mcu --json mcu.json
    python tools/fit_footprint.py demo.json mcu.json

Prints the least-squares coefficients (bytes per tensor, op, weighted op, PAD, channel, weight, and a
constant) and each fit's largest |error| %, to paste into ``PERSISTENT`` and ``FLASH``.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from edgenas.config.memory_targets import MEMORY_TARGETS
from edgenas.search.footprint import counts, graph
from edgenas.search.space import CONV, SEPARABLE, Arch

FIELDS = ("tensors", "ops", "weighted_ops", "pads", "channels", "weights")
# What each figure is fitted on: flash on fewer counts (leave-one-out error 4.0 % vs 4.6 % with all of them)
FITTED = {"persistent_bytes": (*FIELDS, "constant"), "flash_bytes": ("tensors", "channels", "weights", "constant")}


def parse_arch(text: str) -> Arch:
    """``d4-w24-scsc-5553`` (``str(Arch)``) back into an Arch."""
    depth, width, ops, kernels = text.split("-")
    return Arch(int(depth[1:]), int(width[1:]), tuple(CONV if o == "c" else SEPARABLE for o in ops),
                tuple(int(k) for k in kernels))


def rows(report: dict):
    target = MEMORY_TARGETS[report["memory_target"]]
    c, h, w = report["input_chw"]
    for n in report["networks"]:
        ops = graph(parse_arch(n["arch"]), in_channels=c, input_size=(h, w), outputs=report["outputs"], target=target)
        k = counts(ops, target)
        yield [getattr(k, f) for f in FIELDS] + [1], n["measured"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", help="memory-check --json files")
    args = parser.parse_args()
    x, measured = [], []
    for path in args.reports:
        with open(path) as f:
            for features, m in rows(json.load(f)):
                x.append(features)
                measured.append(m)
    x = np.array(x, float)
    names = (*FIELDS, "constant")
    for key, used in FITTED.items():
        y = np.array([m[key] for m in measured], float)
        columns = [names.index(n) for n in used]
        coef = np.linalg.lstsq(x[:, columns], y, rcond=None)[0]
        err = 100 * np.abs(x[:, columns] @ coef - y) / y
        print(f"{key}: " + ", ".join(f"{f}={c:.2f}" for f, c in zip(used, coef))
              + f"; {len(y)} files, max |error| {err.max():.2f} % (in sample), median {np.median(err):.2f} %")


if __name__ == "__main__":
    main()
