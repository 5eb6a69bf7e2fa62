"""Latency-regression verdicts for CI: two bench JSONs (``compare``), or two models measured in
alternation on one machine with a bootstrap interval of their latency ratio (``paired_compare``).
"""

from __future__ import annotations

import shlex
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgenas.deploy import bench as bench_mod
from edgenas.device_kit import edgenas_kit as kit
from edgenas.errors import UserInputError
from edgenas.runtime.runners import kit_errors

METRICS = ("p50", "p90", "p99")
ENV_FIELDS = ("runtime", "device", "threads", "batch", "input_shape")  # must match to compare
DEFAULT_MAX_REGRESSION = 0.05
# Paired mode: rounds of A then B; each round warms up and times both models.
DEFAULT_ROUNDS = 15
DEFAULT_ROUND_WARMUP = 5
DEFAULT_ROUND_RUNS = 20
CONFIDENCE = 0.95
RESAMPLES = 2000


def parse_max_regression(text) -> float:
    """``"5%"`` or ``"0.05"`` -> 0.05. A bare number above 1 is refused (``5`` is not 5 %)."""
    try:
        value = kit.parse_fraction(text)
    except ValueError as e:
        raise UserInputError(f"--max-regression {e}") from None
    if not str(text).strip().endswith("%") and value >= 1:
        raise UserInputError(f"--max-regression {text!r} is ambiguous: write {text}% or {value / 100:g}")
    return value


def _pct(x: float) -> str:
    return f"{x * 100:+.1f}%"


@dataclass(frozen=True)
class Row:
    metric: str  # "p50", ..., "throughput"
    unit: str  # "ms" or "images/s"
    baseline: float
    current: float
    verdict: str

    @property
    def change(self) -> float:
        """current / baseline - 1 (positive: more milliseconds, or more images/s)."""
        return self.current / self.baseline - 1 if self.baseline else float("inf")


@dataclass
class Comparison:
    rows: list[Row]
    metric: str  # the gated metric
    max_regression: float
    mismatches: list[str] = field(default_factory=list)  # allowed environment differences
    names: tuple[str, str] = ("baseline", "current")

    @property
    def gate(self) -> Row:
        return next(r for r in self.rows if r.metric == self.metric)

    @property
    def regressed(self) -> bool:
        return self.gate.change > self.max_regression

    @property
    def exit_code(self) -> int:
        return 1 if self.regressed else 0

    @property
    def verdict(self) -> str:
        g, limit = self.gate, f"{self.max_regression:.1%}"
        if self.regressed:
            text = (f"FAIL: {g.metric} regressed by {_pct(g.change)} ({g.baseline:.3f} -> {g.current:.3f} ms), "
                    f"over the {limit} threshold")
        else:
            text = f"PASS: {g.metric} changed by {_pct(g.change)}, within the {limit} threshold"
        if self.mismatches:
            text += f" (environment mismatch allowed: {'; '.join(self.mismatches)})"
        return text

    def accept_command(self, allow_env_mismatch: bool = False) -> str:
        """The command that makes the current result the new baseline."""
        base, cur = (shlex.quote(n) for n in self.names)
        return f"edgenas compare {base} {cur} --update-baseline" + (" --allow-env-mismatch" if allow_env_mismatch else "")

    def table(self, markdown: bool = False) -> str:
        base, cur = (Path(n).name for n in self.names)
        head = ("metric", f"baseline ({base})", f"current ({cur})", "change", "verdict")
        body = [(r.metric + (" (gate)" if r.metric == self.metric else ""), f"{r.baseline:.3f} {r.unit}",
                 f"{r.current:.3f} {r.unit}", _pct(r.change), r.verdict) for r in self.rows]
        return _render(head, body, markdown) + (f"\n\n**{self.verdict}**" if markdown else "\n" + self.verdict)


def _render(head: tuple, body: list[tuple], markdown: bool) -> str:
    """A table: Markdown (for CI comments) or aligned plain text."""
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body])
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [head, *body])


def env_mismatches(baseline: dict, current: dict) -> list[str]:
    return [f"{f} {baseline[f]!r} vs {current[f]!r}" for f in ENV_FIELDS if baseline[f] != current[f]]


def compare(baseline: dict, current: dict, metric: str = "p50", max_regression: float = DEFAULT_MAX_REGRESSION,
            allow_env_mismatch: bool = False, names: tuple[str, str] = ("baseline", "current")) -> Comparison:
    """Compare two bench JSON records; ``metric`` decides the verdict, the others are shown."""
    if metric not in METRICS:
        raise UserInputError(f"unknown metric {metric!r}: choose one of {', '.join(METRICS)}")
    if max_regression < 0:
        raise UserInputError(f"max_regression must be >= 0, got {max_regression}")
    with kit_errors():
        kit.validate_bench(baseline, names[0])
        kit.validate_bench(current, names[1])
    mismatches = env_mismatches(baseline, current)
    if mismatches and not allow_env_mismatch:
        raise UserInputError(
            f"{names[0]} and {names[1]} were measured in different environments: {'; '.join(mismatches)} "
            "(pass --allow-env-mismatch to compare anyway)")
    rows = []
    for m in ("p50", "p90", "p99", "mean"):
        b, c = float(baseline[f"{m}_ms"]), float(current[f"{m}_ms"])
        change = c / b - 1 if b > 0 else float("inf")
        verdict = "regression" if change > max_regression else "faster" if change < -max_regression else "ok"
        if m == metric:
            verdict = verdict.upper()
        rows.append(Row(m, "ms", b, c, verdict))
    rows.append(Row("throughput", "images/s", float(baseline["throughput"]), float(current["throughput"]), "info"))
    return Comparison(rows, metric, max_regression, mismatches if allow_env_mismatch else [], names)


def compare_files(baseline_path: str | Path, current_path: str | Path, **options) -> Comparison:
    """``compare`` on two bench JSON files (from ``edgenas bench`` or the device kit)."""
    names = (str(baseline_path), str(current_path))
    return compare(bench_mod.read_bench(baseline_path), bench_mod.read_bench(current_path), names=names, **options)


def update_baseline(baseline_path: str | Path, current: dict) -> None:
    """Accept ``current`` as the new baseline: written over ``baseline_path`` atomically."""
    bench_mod.write_bench(baseline_path, current)


# -- paired mode -----------------------------------------------------------------------------------
def bootstrap_ci(values, confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = 0,
                 stat=np.median) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat(values)``, seeded and so reproducible."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size < 2:
        raise ValueError("a bootstrap interval needs at least 2 values")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    idx = np.random.default_rng(seed).integers(0, v.size, size=(resamples, v.size))
    stats = stat(v[idx], axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    return float(low), float(high)


@dataclass
class PairedResult:
    ratios: list[float]  # per round: median latency of B / median latency of A
    ci: tuple[float, float]  # bootstrap interval of the median ratio
    confidence: float
    max_regression: float
    bench_a: dict  # bench JSON records over all rounds (each can become a baseline)
    bench_b: dict

    @property
    def median_ratio(self) -> float:
        return float(np.median(self.ratios))

    @property
    def regressed(self) -> bool:
        """B is slower only when the whole interval lies above 1 + threshold."""
        return self.ci[0] > 1 + self.max_regression

    @property
    def exit_code(self) -> int:
        return 1 if self.regressed else 0

    @property
    def verdict(self) -> str:
        lo, hi = self.ci
        interval = f"{self.confidence:.0%} interval [{lo:.3f}, {hi:.3f}] of the median ratio B/A {self.median_ratio:.3f}"
        if self.regressed:
            return f"FAIL: B is slower than A: the whole {interval} lies above {1 + self.max_regression:.3f}"
        return f"PASS: no regression over {self.max_regression:.1%}: {interval}"

    def table(self, markdown: bool = False) -> str:
        a, b = self.bench_a, self.bench_b
        head = ("model", "p50 ms", "p90 ms", "p99 ms", "runs")
        body = [(f"{tag} {r['model']}", f"{r['p50_ms']:.3f}", f"{r['p90_ms']:.3f}", f"{r['p99_ms']:.3f}", str(r["runs"]))
                for tag, r in (("A", a), ("B", b))]
        setup = (f"{len(self.ratios)} rounds of A and B in alternation on {a['runtime']} "
                 f"({a['device']}, threads {a['threads']}, batch {a['batch']})")
        tail = f"\n\n{setup}\n\n**{self.verdict}**" if markdown else f"\n{setup}\n{self.verdict}"
        return _render(head, body, markdown) + tail


def paired_compare(model_a: str | Path, model_b: str | Path, *, runtime: str | None = None, rounds: int = DEFAULT_ROUNDS,
                   batch: int = 1, threads: int | None = None, warmup: int = DEFAULT_ROUND_WARMUP,
                   runs_per_round: int = DEFAULT_ROUND_RUNS, max_regression: float = DEFAULT_MAX_REGRESSION,
                   seed: int = 0, confidence: float = CONFIDENCE, resamples: int = RESAMPLES) -> PairedResult:
    """Measure A and B in alternation (A B, B A, A B, ...) on this machine; B regressed when the
    bootstrap interval of the median per-round ratio lies wholly above ``1 + max_regression``."""
    if rounds < 2:
        raise UserInputError(f"paired mode needs at least 2 rounds, got {rounds}")
    if max_regression < 0:
        raise UserInputError(f"max_regression must be >= 0, got {max_regression}")
    with ExitStack() as stack:
        ra = stack.enter_context(bench_mod.open_runner(model_a, runtime, threads))
        rb = stack.enter_context(bench_mod.open_runner(model_b, runtime, threads))
        if ra.runtime != rb.runtime:
            raise UserInputError(f"A runs on {ra.runtime} and B on {rb.runtime}: name one runtime to measure both on")
        stack.enter_context(kit_errors())
        xa, xb = kit.bench_input(ra.input_chw, batch, seed), kit.bench_input(rb.input_chw, batch, seed)
        samples_a, samples_b, ratios = [], [], []
        for k in range(rounds):
            # A B, then B A: swapping who goes first each round cancels the order effect (the
            # second model of a pair runs on caches and clocks the first one warmed up).
            if k % 2 == 0:
                a = kit.measure(lambda: ra(xa), warmup, runs_per_round)
                b = kit.measure(lambda: rb(xb), warmup, runs_per_round)
            else:
                b = kit.measure(lambda: rb(xb), warmup, runs_per_round)
                a = kit.measure(lambda: ra(xa), warmup, runs_per_round)
            ratios.append(float(np.median(b) / np.median(a)))
            samples_a += a
            samples_b += b
        bench_a = kit.bench_result(ra, batch, warmup, samples_a, tool=bench_mod.TOOL) | {"rounds": rounds}
        bench_b = kit.bench_result(rb, batch, warmup, samples_b, tool=bench_mod.TOOL) | {"rounds": rounds}
    ci = bootstrap_ci(ratios, confidence, resamples, seed)
    return PairedResult(ratios, ci, confidence, max_regression, bench_a, bench_b)
