"""``edgenas memory-check``: random networks of a space converted and run by TFLM, their arena measured
and set beside the footprint model's estimate (``search/footprint.py``), as ``latency-check`` does for latency."""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgenas.config.memory_targets import MEMORY_TARGETS
from edgenas.errors import ParamError
from edgenas.runtime.latency import random_network
from edgenas.runtime.target import Target
from edgenas.runtime.tflm import measure_arena, tflm_version
from edgenas.search.footprint import footprint
from edgenas.search.space import random_arch

# (model, out, input_chw) -> the written full-integer .tflite (the litert-int8 backend's convert)
Convert = Callable[..., Path]


def _pct(estimate: int, measured: int) -> float:
    return 100.0 * (estimate - measured) / measured


def check_memory(
    config,
    *,
    input_chw: tuple[int, int, int],
    outputs: int,
    convert: Convert,
    samples: int = 100,
    seed: int = 1,
    target: str = "tflm-int8",
    log: Callable[[str], None] = lambda line: None,
) -> dict:
    """Estimate vs TFLM's measurement for ``samples`` random classifiers of ``config``'s space."""
    if samples < 1:
        raise ParamError("samples", samples, "give an integer >= 1")
    version, row = tflm_version(), MEMORY_TARGETS[target]
    rng = random.Random(seed)
    archs = [random_arch(config, rng) for _ in range(samples)]
    started = time.monotonic()
    networks: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edgenas-memory-") as tmp:
        for i, arch in enumerate(archs, start=1):
            model = random_network(arch, Target("classify", input_chw, outputs, "litert-int8"))
            path = convert(model, out=Path(tmp) / f"net{i}.tflite", input_chw=input_chw)
            measured = measure_arena(path)
            est = footprint(arch, in_channels=input_chw[0], input_size=input_chw[1:], outputs=outputs, target=row)
            networks.append(
                {
                    "arch": str(arch),
                    "estimate": est.to_dict(),
                    "measured": {**measured.to_dict(), "flash_bytes": path.stat().st_size},
                }
            )
            for written in Path(tmp).iterdir():
                written.unlink()
            log(
                f"[{i}/{samples}] {arch}: activations {est.activations:,} B estimated, {measured.head:,} B measured; "
                f"persistent {est.persistent:,} / {measured.tail:,} B; flash {est.flash:,} / {path.name} "
                f"{networks[-1]['measured']['flash_bytes']:,} B"
            )
    return summarize(
        networks,
        samples=samples,
        seed=seed,
        target=target,
        input_chw=input_chw,
        outputs=outputs,
        tflm=version,
        seconds=time.monotonic() - started,
    )


def summarize(
    networks: list[dict], *, samples: int, seed: int, target: str, input_chw, outputs: int, tflm: str, seconds: float
) -> dict:
    def field(side: str, key: str) -> list[int]:
        return [n[side][key] for n in networks]

    act_est, act = field("estimate", "peak_memory_bytes"), field("measured", "peak_memory_bytes")
    pers = [
        abs(_pct(e, m)) for e, m in zip(field("estimate", "persistent_bytes"), field("measured", "persistent_bytes"))
    ]
    flash = [abs(_pct(e, m)) for e, m in zip(field("estimate", "flash_bytes"), field("measured", "flash_bytes"))]
    arena = [_pct(e, m) for e, m in zip(field("estimate", "arena_bytes"), field("measured", "arena_bytes"))]
    return {
        "schema": "edgenas.memory-check/1",
        "memory_target": target,
        "tflite_micro": tflm,
        "samples": samples,
        "seed": seed,
        "input_chw": list(input_chw),
        "outputs": outputs,
        "activations_exact": sum(e == m for e, m in zip(act_est, act)) / len(act),
        "activations_below": sum(e < m for e, m in zip(act_est, act)),
        "activations_max_over_bytes": max(e - m for e, m in zip(act_est, act)),
        "persistent_median_abs_error_pct": statistics.median(pers),
        "persistent_max_abs_error_pct": max(pers),
        "persistent_within_10pct": sum(p <= 10.0 for p in pers) / len(pers),
        "flash_median_abs_error_pct": statistics.median(flash),
        "flash_max_abs_error_pct": max(flash),
        "arena_min_error_pct": min(arena),
        "arena_max_error_pct": max(arena),
        "measure_seconds": round(seconds, 2),
        "networks": networks,
    }


def format_check(report: dict) -> str:
    c, h, w = report["input_chw"]
    return (
        f"memory model for {report['memory_target']} (tflite-micro {report['tflite_micro']}), input {c}x{h}x{w}, "
        f"{report['outputs']} outputs\n"
        f"{report['samples']} random networks: activations exact for {100 * report['activations_exact']:.0f} %, "
        f"below the measurement for {report['activations_below']} (largest over-estimate "
        f"{report['activations_max_over_bytes']:,} B); persistent |error| median "
        f"{report['persistent_median_abs_error_pct']:.1f} %, max {report['persistent_max_abs_error_pct']:.1f} % "
        f"({100 * report['persistent_within_10pct']:.0f} % within ±10 %); flash |error| median "
        f"{report['flash_median_abs_error_pct']:.1f} %, max {report['flash_max_abs_error_pct']:.1f} %; "
        f"whole arena {report['arena_min_error_pct']:+.1f} % to {report['arena_max_error_pct']:+.1f} %"
    )
