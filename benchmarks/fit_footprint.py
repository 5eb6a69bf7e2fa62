"""Fit the footprint model's persistent and flash coefficients (search/footprint.py) to memory-check figures.

    edgenas memory-check --profile demo --json demo.json
    edgenas memory-check --profile mcu --json mcu.json
    python benchmarks/fit_footprint.py demo.json mcu.json [--check other.json ...]

Prints the least-squares coefficients of each figure (bytes per count of ``footprint.Counts``) to paste
into ``PERSISTENT`` and ``FLASH``, their error on the files fitted and, with ``--check``, on other files.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from edgenas.config.memory_targets import MEMORY_TARGETS
from edgenas.search.footprint import counts, graph
from edgenas.search.space import CONV, SEPARABLE, Arch

# The counts each figure is fitted on (flash: tensor names grow with the op kinds and the layer index)
FITTED = {
    "persistent_bytes": ("tensors", "ops", "weighted_ops", "pads", "channels", "constant"),
    "flash_bytes": ("weights", "channels", "depthwise", "convs", "pads", "layers", "constant"),
}


def parse_arch(text: str) -> Arch:
    """``d4-w24-scsc-5553`` (``str(Arch)``) back into an Arch."""
    depth, width, ops, kernels = text.split("-")
    return Arch(
        int(depth[1:]),
        int(width[1:]),
        tuple(CONV if o == "c" else SEPARABLE for o in ops),
        tuple(int(k) for k in kernels),
    )


def load(paths: list[str]) -> list[tuple[object, dict]]:
    """(Counts, measured figures) of every network in memory-check reports."""
    out = []
    for path in paths:
        with open(path) as f:
            report = json.load(f)
        target = MEMORY_TARGETS[report["memory_target"]]
        c, h, w = report["input_chw"]
        for n in report["networks"]:
            arch = parse_arch(n["arch"])
            ops = graph(arch, in_channels=c, input_size=(h, w), outputs=report["outputs"], target=target)
            out.append((counts(arch, ops), n["measured"]))
    return out


def _matrix(rows, used) -> np.ndarray:
    return np.array([[getattr(c, name) for name in used] for c, _ in rows], float)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", help="memory-check --json files to fit on")
    parser.add_argument("--check", nargs="*", default=[], help="memory-check --json files to check the fit on")
    args = parser.parse_args()
    fit, check = load(args.reports), load(args.check)
    for key, used in FITTED.items():
        y = np.array([m[key] for _, m in fit], float)
        coef = np.linalg.lstsq(_matrix(fit, used), y, rcond=None)[0]
        err = 100 * (_matrix(fit, used) @ coef - y) / y
        line = (
            f"{key}: "
            + ", ".join(f"{n}={c:.2f}" for n, c in zip(used, coef))
            + f"\n  {len(y)} files fitted: error {err.min():+.2f} % to {err.max():+.2f} %"
        )
        if check:
            yc = np.array([m[key] for _, m in check], float)
            errc = 100 * (_matrix(check, used) @ coef - yc) / yc
            line += f"; {len(yc)} files checked: error {errc.min():+.2f} % to {errc.max():+.2f} %"
        print(line)


if __name__ == "__main__":
    main()
