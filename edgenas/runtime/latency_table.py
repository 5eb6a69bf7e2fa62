"""A latency table: a candidate's latency predicted from its parts, with no device time (``edgenas latency-table``).

A network of the space is a plain chain, so its latency is close to stem + Σ layers + head + a fixed
overhead, each layer set by (op, kernel, in and out width, stride, input H×W). Three models:

- ``pairs`` (the default): each distinct part of the space timed alone, and each pair of parts that can
  follow one another timed together; what running side by side changes (a *junction*: one call and one
  copy fewer, and whatever the runtime does at the seam, such as ONNX Runtime reordering a tensor between
  its blocked NCHWc layout and plain NCHW) is added to the parts. A layer's cost then depends on its
  neighbours, as it does in the runtime; then a scale and the fixed overhead fitted on measured random networks.
- ``lookup``: each part timed in a chain before one fixed layer; a fifth of the build (no pairs), right where a
  layer's cost does not depend on its neighbours (with ONNX Runtime on an AMD EPYC core: 87 % of networks within
  ±10 %, against the pairs model's 97 %).
- ``regression``: least squares on per-op-kind MACs, activations and layer count of measured random networks.

``edgenas latency-check`` says how good any of them is on the machine.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from edgenas.errors import UserInputError
from edgenas.search.space import (
    OPS,
    SEPARABLE,
    Arch,
    final_width,
    layer_plan,
    narrowest_width,
    out_size,
    space_kernels,
)

SCHEMA = "edgenas.latency-table/2"  # /2: parts timed in a chain (/1 timed them alone: rebuild)
MODELS = ("pairs", "lookup", "regression")
# What a table must have been built for to predict a run's candidates (its ``built_for`` keys).
MATCHED = ("runtime", "runtime_version", "device", "threads", "batch", "input_shape", "task", "outputs")
FEATURES = (
    "one",
    "stem_mmacs",
    "dw3_mmacs",
    "dw5_mmacs",
    "dw7_mmacs",
    "pw_mmacs",
    "conv3_mmacs",
    "conv5_mmacs",
    "conv7_mmacs",
    "activations_m",
    "sep_layers",
    "conv_layers",
)


class Part(NamedTuple):
    """One timed piece of a network: ``kind`` "stem", "layer" or "head"; ``h``, ``w``: its input resolution."""

    kind: str
    c_in: int
    c_out: int  # head: the outputs (classes or embedding size)
    h: int
    w: int
    op: int = -1  # layers: SEPARABLE or CONV
    kernel: int = 0
    stride: int = 1

    @property
    def key(self) -> str:
        where = f"{self.c_in}>{self.c_out}@{self.h}x{self.w}"
        if self.kind != "layer":
            return f"{self.kind}:{where}"
        return f"{'sep' if self.op == SEPARABLE else 'conv'}{self.kernel}/s{self.stride}:{where}"


def junction_key(first: Part, second: Part) -> str:
    """A ``pairs`` table's key for ``second`` running right after ``first``."""
    return f"{first.key}+{second.key}"


def arch_parts(arch: Arch, input_chw: tuple[int, int, int], outputs: int) -> list[Part]:
    """The parts ``arch``'s deployed network is made of, in order."""
    c, h, w = input_chw
    parts = [Part("stem", c, 2 * arch.width, h, w)]
    for (c_in, c_out, stride), op, k in zip(layer_plan(arch), arch.ops, arch.kernels):
        parts.append(Part("layer", c_in, c_out, h, w, op, k, stride))
        h, w = out_size(h, stride), out_size(w, stride)
    return parts + [Part("head", final_width(arch), outputs, h, w)]


def space_parts(config, input_chw: tuple[int, int, int], outputs: int) -> list[Part]:
    """Every distinct part a search config's networks can contain (each op and kernel of each layer shape).

    Every width from ``narrowest_width`` (1, or ``min_width`` with ``micro_width_floor``) to
    ``max_width``, not only the width stage's grid: the micro stages narrow a network one channel at a
    time to keep its parameters within budget.
    """
    shapes: set[Part] = set()
    ends: set[Part] = set()
    for width in range(narrowest_width(config), config.max_width + 1):
        for depth in range(config.min_depth, config.max_depth + 1):
            parts = arch_parts(Arch.plain(depth, width), input_chw, outputs)
            shapes.update(p._replace(op=-1, kernel=0) for p in parts[1:-1])
            ends.update((parts[0], parts[-1]))
    layers = {s._replace(op=op, kernel=k) for s in shapes for op in OPS for k in space_kernels(config)}
    return sorted(ends | layers)


def space_junctions(config, input_chw: tuple[int, int, int], outputs: int) -> list[tuple[Part, Part]]:
    """Every pair of parts that can follow one another in a network of ``config``'s space (each op and kernel on
    either side of every seam), as ``space_parts`` lists the parts."""
    kernels = space_kernels(config)
    seams: set[tuple[Part, Part]] = set()
    for width in range(narrowest_width(config), config.max_width + 1):
        for depth in range(config.min_depth, config.max_depth + 1):
            parts = arch_parts(Arch.plain(depth, width), input_chw, outputs)
            seams.update(zip(parts, parts[1:]))

    def variants(p: Part) -> list[Part]:
        return [p._replace(op=op, kernel=k) for op in OPS for k in kernels] if p.kind == "layer" else [p]

    return sorted({(a, b) for first, second in seams for a in variants(first) for b in variants(second)})


def arch_features(arch: Arch, input_chw: tuple[int, int, int], outputs: int) -> list[float]:
    """The regression model's features (``FEATURES``): MACs by op kind in millions, activations, layers."""
    f = dict.fromkeys(FEATURES, 0.0)
    f["one"] = 1.0
    for p in arch_parts(arch, input_chw, outputs):
        ho, wo = out_size(p.h, p.stride), out_size(p.w, p.stride)
        if p.kind == "stem":
            f["stem_mmacs"] += p.h * p.w * 9 * p.c_in * p.c_out / 1e6
        elif p.kind == "layer" and p.op == SEPARABLE:
            f["sep_layers"] += 1
            f[f"dw{p.kernel}_mmacs"] += ho * wo * p.kernel**2 * p.c_in / 1e6
            f["pw_mmacs"] += ho * wo * p.c_in * p.c_out / 1e6
        elif p.kind == "layer":
            f["conv_layers"] += 1
            f[f"conv{p.kernel}_mmacs"] += ho * wo * p.kernel**2 * p.c_in * p.c_out / 1e6
        if p.kind != "head":
            f["activations_m"] += ho * wo * p.c_out / 1e6
    return [f[name] for name in FEATURES]


@dataclass(frozen=True)
class LatencyTable:
    """A table as read from its JSON (``to_dict`` gives the JSON back)."""

    built_for: dict  # runtime, runtime_version, device, host, threads, batch, input_shape [C, H, W], task, outputs
    model: str  # one of MODELS
    space: dict  # the search config it covers (and the profile it came from)
    entries: dict  # part key -> ms (pairs: timed alone, less the empty graph; lookup: timed in a chain, less the chain's rest)
    scale: float = 1.0  # pairs, lookup: predicted = scale * (sum(entries) + sum(junctions)) + overhead_ms
    overhead_ms: float = 0.0  # the call and the copies in and out, which a network pays once
    coef: tuple = ()  # regression: ms per unit of each of FEATURES
    build_seconds: float = 0.0
    extra: dict | None = None  # calibration and build records (versions, created, counts)
    junctions: dict | None = None  # pairs: junction_key -> ms that running the two parts together adds (mostly < 0)

    @property
    def input_chw(self) -> tuple[int, int, int]:
        c, h, w = (int(v) for v in self.built_for["input_shape"])
        return c, h, w

    def predict_ms(self, arch: Arch) -> float:
        """Predicted median latency (ms) of ``arch``, no less than the table's floor (``_floor_ms``); a part the
        table lacks is a ``UserInputError``."""
        ms = max(self.model_ms(arch), self._floor_ms())
        # A NaN would pass every budget (NaN > budget is false): never hand one to the search.
        if not math.isfinite(ms) or ms < 0:
            raise UserInputError(
                f"the latency table predicts {ms} ms for {arch}: a latency must be a finite number "
                ">= 0; rebuild the table with `edgenas latency-table`"
            )
        return ms

    def model_ms(self, arch: Arch) -> float:
        """What the table's model gives for ``arch`` (ms), unchecked: a sum of noisy parts and junctions, or a
        linear fit's extrapolation, can fall below zero (the build fits scale and overhead on these)."""
        outputs = int(self.built_for["outputs"])
        if self.model == "regression":
            return float(sum(c * x for c, x in zip(self.coef, arch_features(arch, self.input_chw, outputs))))
        parts = arch_parts(arch, self.input_chw, outputs)
        total = sum(self._entry(self.entries, p.key, arch) for p in parts)
        if self.model == "pairs":
            total += sum(self._entry(self.junctions or {}, junction_key(a, b), arch) for a, b in zip(parts, parts[1:]))
        return self.scale * total + self.overhead_ms

    @staticmethod
    def _entry(entries: dict, key: str, arch: Arch) -> float:
        ms = entries.get(key)
        if ms is None:
            raise UserInputError(
                f"the latency table has no entry for {key} (of {arch}): it was built for another search "
                "space; rebuild it with `edgenas latency-table` for this profile"
            )
        return float(ms)

    def _floor_ms(self) -> float:
        """No network runs faster than the empty graph (one call, the copies in and out), yet a model can predict
        less: a linear fit extrapolated to networks narrower than those it was fitted on (the micro stages narrow
        below min_width), a quick pairs table's sum of noisy junctions. Predictions are floored at the empty
        graph's time where the table timed it; else a regression's at the fastest network it was fitted on (an
        over-estimate: a budget errs on the safe side). -inf otherwise (a negative prediction is then refused)."""
        fit = (self.extra or {}).get("fit") or {}
        empty, measured = fit.get("empty_graph_ms"), fit.get("measured_ms") or []
        if isinstance(empty, (int, float)) and math.isfinite(empty) and empty >= 0:
            return float(empty)
        finite = [float(v) for v in measured if isinstance(v, (int, float)) and math.isfinite(v) and v >= 0]
        return min(finite) if finite and self.model == "regression" else -math.inf

    def mismatch(self, expected: dict) -> str | None:
        """The first of ``expected``'s settings this table was built for otherwise, said in words (None: all agree)."""
        for key in MATCHED:
            if key in expected and _plain(expected[key]) != _plain(self.built_for.get(key)):
                return f"{key} {self.built_for.get(key)!r}, not {expected[key]!r}"
        return None

    def missing_parts(self, config) -> list[str]:
        """Parts of ``config``'s space this table cannot predict (always none for the regression model)."""
        if self.model == "regression":
            return []
        outputs = int(self.built_for["outputs"])
        missing = [p.key for p in space_parts(config, self.input_chw, outputs) if p.key not in self.entries]
        if self.model == "pairs":
            keys = (junction_key(a, b) for a, b in space_junctions(config, self.input_chw, outputs))
            missing += [k for k in keys if k not in (self.junctions or {})]
        return missing

    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA,
            "model": self.model,
            "built_for": self.built_for,
            "space": self.space,
            "build_seconds": self.build_seconds,
            "scale": self.scale,
            "overhead_ms": self.overhead_ms,
            "features": list(FEATURES) if self.model == "regression" else [],
            "coef": list(self.coef),
            **(self.extra or {}),
            "entries": self.entries,
            **({"junctions": self.junctions} if self.model == "pairs" else {}),
        }


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def table_from_dict(d, source: str) -> LatencyTable:
    """Validate a table's JSON; anything wrong is a one-line ``UserInputError`` naming ``source``."""
    if not isinstance(d, dict) or d.get("schema") != SCHEMA:
        got = d.get("schema") if isinstance(d, dict) else type(d).__name__
        raise UserInputError(f"{source}: schema is {got!r}, expected {SCHEMA!r} (written by `edgenas latency-table`)")
    try:
        built_for, model = dict(d["built_for"]), str(d["model"])
        missing = [k for k in MATCHED if k not in built_for]
        if missing or model not in MODELS:
            raise ValueError(f"built_for lacks {missing[0]}" if missing else f"model {model!r} is not one of {MODELS}")
        entries = {str(k): _number(v, f"entry {k!r}", least=0.0) for k, v in d["entries"].items()}
        junctions = {str(k): _number(v, f"junction {k!r}") for k, v in d.get("junctions", {}).items()}
        coef = tuple(_number(c, f"coef[{i}]") for i, c in enumerate(d.get("coef", ())))
        if model == "regression" and len(coef) != len(FEATURES):
            raise ValueError(f"a regression table needs {len(FEATURES)} coefficients, it has {len(coef)}")
        scale = _number(d.get("scale", 1.0), "scale", least=0.0)
        overhead = _number(d.get("overhead_ms", 0.0), "overhead_ms")
        known = {
            "schema",
            "model",
            "built_for",
            "space",
            "build_seconds",
            "scale",
            "overhead_ms",
            "features",
            "coef",
            "entries",
            "junctions",
        }
        return LatencyTable(
            built_for,
            model,
            dict(d.get("space", {})),
            entries,
            scale,
            overhead,
            coef,
            float(d.get("build_seconds", 0.0)),
            {k: v for k, v in d.items() if k not in known},
            junctions,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        what = f"missing {e}" if isinstance(e, KeyError) else " ".join(str(e).split())[:200]
        raise UserInputError(f"{source}: not a usable latency table ({what})") from None


def _number(value, what: str, *, least: float | None = None) -> float:
    """``value`` as a finite float (at least ``least``); else a ``ValueError`` naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} is {value!r}, not a number")
    number = float(value)
    if not math.isfinite(number) or (least is not None and number < least):
        allowed = "a finite number" + (f" >= {least:g}" if least is not None else "")
        raise ValueError(f"{what} is {value!r}: it must be {allowed} (rebuild the table with `edgenas latency-table`)")
    return number


def read_table(path: str | Path) -> LatencyTable:
    """A latency table file; a missing, unreadable or malformed one is a one-line ``UserInputError``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserInputError(f"{path}: no such latency table; build one with `edgenas latency-table`") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserInputError(
            f"{path}: cannot be read as a latency table JSON ({' '.join(str(e).split())[:200]})"
        ) from None
    return table_from_dict(data, str(path))
