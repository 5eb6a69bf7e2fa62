"""TensorFlow Lite Micro as a runtime plug-in (tflm-int8): the interpreter a firmware runs (its reference
kernels) on litert-int8's full-integer ``.tflite``, and a ``.tflite``'s tensor arena measured.

What it cannot do is declared in its row of ``config.runtimes.RUNTIMES``: INT8 only, one thread, no
converter of its own (litert-int8's writes its file), and no latency: TFLM on x86 runs the same
arithmetic as a microcontroller, not at its speed. ``pip install edgenas[tflm]`` brings ``tflite-micro``.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgenas.config.runtimes import RUNTIMES, Runtime
from edgenas.device_kit import edgenas_kit as kit
from edgenas.errors import EdgenasError, MissingDependency, ParamError, UserInputError
from edgenas.runtime.litert import BACKENDS as LITERT_BACKENDS

RUNTIME = "tflm-int8"
INSTALL = RUNTIMES[RUNTIME].install
PROBE_TIMEOUT_S = 120  # one interpreter set-up and inference (well under a second on an idle machine)
LARGEST_ARENA = 1 << 30  # bytes: beyond any network of the space
ALIGNMENT_SLACK = 64  # bytes: the smallest arena lies this close below head + tail (the arena's start is aligned)


def require_tflm() -> None:
    if importlib.util.find_spec("tflite_micro") is None:
        raise MissingDependency(f"TensorFlow Lite Micro's interpreter (tflite-micro) is not installed; {INSTALL}")


def tflm_version() -> str:
    require_tflm()
    return importlib.metadata.version("tflite-micro")


@dataclass(frozen=True)
class ArenaMeasurement:
    """TFLM's tensor arena for one file, as its RecordingMicroAllocator reports it."""

    arena: int  # the smallest ``arena_size`` the interpreter runs the model with (bisection)
    head: int  # the planned activations ("head")
    tail: int  # the persistent part ("tail")

    def to_dict(self) -> dict:
        return {"arena_bytes": self.arena, "peak_memory_bytes": self.head, "persistent_bytes": self.tail}


def _try_arena(path: str | Path, arena: int) -> str | None:
    """TFLM's allocation report where ``path`` runs with an ``arena``-byte arena, None where it does not
    (too small, or TFLM crashed on the failed allocation)."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "edgenas.runtime.tflm_probe", str(path), str(arena)],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise EdgenasError(f"TFLM did not finish {path} with a {arena:,}-byte arena in {PROBE_TIMEOUT_S} s") from None
    return done.stderr if done.returncode == 0 else None


def _allocated(report: str, *, part: str, path: str | Path) -> int:
    """The bytes of ``part`` (head, tail) in TFLM's allocation report."""
    found = re.search(rf"allocation {part} (\d+) bytes", report)
    if found is None:
        raise EdgenasError(
            f"{path}: TFLM's allocation report names no {part} size (tflite-micro {tflm_version()}); "
            "report this with the file"
        )
    return int(found.group(1))


def measure_arena(path: str | Path) -> ArenaMeasurement:
    """The arena of ``path`` (a full-integer ``.tflite``): TFLM's head and tail from a generous arena, then the
    smallest arena it runs with, by bisection below their sum (each size in a subprocess of its own)."""
    require_tflm()
    arena = 10 * Path(path).stat().st_size + (1 << 20)
    report = _try_arena(path, arena)
    while report is None:
        if arena >= LARGEST_ARENA:
            raise UserInputError(f"{path}: TFLM could not run it even with a {LARGEST_ARENA:,}-byte arena")
        arena = min(LARGEST_ARENA, 4 * arena)
        report = _try_arena(path, arena)
    head, tail = (_allocated(report, part=part, path=path) for part in ("head", "tail"))
    high = head + tail  # runs: the planner's and the persistent sections, laid out without slack
    gap = ALIGNMENT_SLACK
    while high - gap > 0 and _try_arena(path, high - gap) is not None:
        high, gap = high - gap, 2 * gap
    low = max(1, high - gap)  # fails (or is 1 byte)
    while low < high:
        mid = (low + high) // 2
        if _try_arena(path, mid) is None:
            low = mid + 1
        else:
            high = mid
    return ArenaMeasurement(high, head, tail)


def input_quantization(path: str | Path) -> tuple[float, int]:
    """The (scale, zero point) with which the full-integer ``path`` takes its int8 input (a firmware quantises
    its images so)."""
    with TflmRunner(path) as runner:
        return runner._scale(runner.input)


class TflmRunner(kit.Runner):
    """A full-integer ``.tflite`` (NHWC int8 input, int8 output) on TFLM's interpreter, one image per call of
    the interpreter: the image is quantised and the output dequantised with the file's own scales, as the
    device kit's LiteRT runner does, so both compute on the same int8 values."""

    def __init__(self, path: str | Path, *, arena_size: int | None = None):
        require_tflm()
        from tflite_micro.python.tflite_micro import runtime

        self.model_path = Path(path)
        self.runtime, self.runtime_version, self.threads = RUNTIME, tflm_version(), 1
        self.device = "TFLM reference kernels on this machine's CPU"
        try:
            self.interpreter = runtime.Interpreter.from_file(str(path), arena_size=arena_size)
        except (ValueError, RuntimeError) as e:
            raise UserInputError(f"{path} is not a model TFLM can load: {str(e).strip().splitlines()[0]}") from None
        self.input, self.output = self.interpreter.get_input_details(0), self.interpreter.get_output_details(0)
        n, h, w, c = (int(d) for d in self.input["shape"])
        if n != 1 or self.input["dtype"] != np.int8:
            raise UserInputError(
                f"{path}: TFLM runs full-integer files with one int8 NHWC image input here, "
                f"this takes {self.input['dtype'].__name__} {list(self.input['shape'])}"
            )
        self.input_chw, self.max_batch = (c, h, w), None

    @staticmethod
    def _scale(details: dict) -> tuple[float, int]:
        q = details["quantization_parameters"]
        return float(q["scales"][0]), int(q["zero_points"][0])

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        x = np.asarray(inputs, np.float32)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_chw:
            raise UserInputError(
                f"{self.model_path} takes (N, {', '.join(map(str, self.input_chw))}) images, got {tuple(x.shape)}"
            )
        scale, zero = self._scale(self.input)
        out_scale, out_zero = self._scale(self.output)
        q = np.clip(np.round(x.transpose(0, 2, 3, 1) / scale) + zero, -128, 127).astype(np.int8)
        results = []
        for image in q:
            self.interpreter.set_input(np.ascontiguousarray(image[None]), 0)
            self.interpreter.invoke()
            results.append((self.interpreter.get_output(0).astype(np.float32) - out_zero) * np.float32(out_scale))
        return np.concatenate(results)


@dataclasses.dataclass(frozen=True)
class TflmBackend(Runtime):
    """tflm-int8: converts through ``converts_via`` (litert-int8's full-integer file), runs on one thread."""

    def available(self) -> None:
        require_tflm()

    def version(self) -> str:
        return tflm_version()

    def convert(
        self, model, *, out: Path, input_chw: tuple[int, int, int], calibration: np.ndarray | None = None
    ) -> Path:
        """``model`` as the full-integer ``.tflite`` TFLM runs: litert-int8's file (PT2E, NHWC int8 input and
        output, weights per channel), quantised with ``calibration`` (NCHW float32; None: random images)."""
        self.available()
        via = next(b for b in LITERT_BACKENDS if b.name == self.converts_via)
        return via.convert(model, out=out, input_chw=input_chw, calibration=calibration)

    def open(self, path: Path, *, threads: int | None = None) -> kit.Runner:
        if threads is not None and threads != self.fixed_threads:
            raise ParamError(
                "threads",
                threads,
                f"{self.name} runs on {self.fixed_threads} thread (a microcontroller's one core); leave it out",
            )
        return TflmRunner(path)


BACKENDS = [TflmBackend(**dataclasses.asdict(r)) for r in RUNTIMES.values() if r.engine == "tflm"]
