"""Latency-regression verdicts for CI: two bench JSONs (``compare``), or two models measured in
alternation on one machine with a distribution-free interval of their latency ratio (``paired_compare``).
"""

from __future__ import annotations

import shlex
from contextlib import ExitStack
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from pathlib import Path

import numpy as np

from edgenas.deploy import bench as bench_mod
from edgenas.deploy.gate import intervals
from edgenas.deploy.gate.environment import condition_warnings, record_notes
from edgenas.device_kit import edgenas_kit as kit
from edgenas.errors import ParamError, UserInputError
from edgenas.runtime.device_client import DeviceClient, upload_body
from edgenas.runtime.runners import kit_errors

METRICS = ("p50", "p90", "p99")
ENV_FIELDS = ("runtime", "device", "threads", "batch", "input_shape")  # must match to compare
DEFAULT_MAX_REGRESSION = 0.05
METHOD_NAMES = {
    "wilcoxon": "Wilcoxon signed-rank",
    "hs": "Hettmansperger-Sheather",
    "sign": "sign-test",
    "bootstrap": "bootstrap",
}
# Paired mode: rounds of A then B; each round warms up and times both models.
DEFAULT_ROUNDS = 15
DEFAULT_ROUND_WARMUP = 5
DEFAULT_ROUND_RUNS = 20
CONFIDENCE = intervals.CONFIDENCE


def parse_max_regression(text) -> float:
    """``"5%"`` or ``"0.05"`` -> 0.05. A bare number above 1 is refused (``5`` is not 5 %)."""
    try:
        value = kit.parse_fraction(text)
    except ValueError as e:
        raise ParamError("max_regression", text, str(e)) from None
    if value == float("inf"):
        raise ParamError("max_regression", text, "would pass any slow-down: give a finite threshold")
    if not str(text).strip().endswith("%") and value >= 1:
        raise ParamError("max_regression", text, f"is ambiguous: write {text}% or {value / 100:g}")
    return value


def exact(x) -> Decimal:
    """The shortest decimal that reads back as the float ``x`` (what a JSON file or a flag says):
    verdicts are decided on these, so they never depend on binary rounding."""
    return Decimal(repr(float(x)))


def exceeds(value, reference, fraction) -> bool:
    """``value > reference * (1 + fraction)`` in exact decimal arithmetic: equal is not over."""
    with localcontext() as ctx:
        ctx.prec = 80  # two 17-digit operands and a sum: every product here is exact
        return exact(value) > exact(reference) * (1 + exact(fraction))


def falls_below(value, reference, fraction) -> bool:
    """``value < reference * (1 - fraction)`` in exact decimal arithmetic."""
    with localcontext() as ctx:
        ctx.prec = 80
        return exact(value) < exact(reference) * (1 - exact(fraction))


def relative_change(current, baseline) -> Decimal:
    """current / baseline - 1, in decimals (for display; verdicts use ``exceeds``)."""
    with localcontext() as ctx:
        ctx.prec = 40
        return exact(current) / exact(baseline) - 1


def _decimals(value: Decimal) -> int:
    """The digits after the point that a finite ``value`` needs (0 for a whole or non-finite one)."""
    exponent = value.normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) else 0


def distinct_text(value: Decimal, *, limits, scale: int = 100, suffix: str = "%", sign: bool = True) -> str:
    """``value * scale`` with one decimal, or as many more as it takes to never print the same as
    one of ``limits`` (also scaled) unless it equals it: a pass and a fail never read alike."""
    if not value.is_finite():
        return f"{'+' if sign and value > 0 else ''}{'inf' if value > 0 else '-inf'}{suffix}"
    v, marks = value * scale, [Decimal(lim) * scale for lim in limits]
    digits = max([1] + [_decimals(m) for m in marks])
    for d in range(digits, 30):
        shown = v.quantize(Decimal(1).scaleb(-d), rounding=ROUND_HALF_EVEN)
        if all(shown != m or v == m for m in marks):
            break
    return f"{shown:{'+' if sign else ''}f}{suffix}"


def threshold_text(fraction) -> str:
    """A threshold as a percentage with every digit it has (at least one decimal)."""
    return distinct_text(exact(fraction), limits=[exact(fraction)], sign=False)


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

    def change_text(self, threshold: float) -> str:
        """The change in percent, with the digits that tell it apart from +-threshold."""
        t = exact(threshold)
        return distinct_text(relative_change(self.current, self.baseline), limits=[t, -t])


@dataclass
class Comparison:
    rows: list[Row]
    metric: str  # the gated metric
    max_regression: float
    mismatches: list[str] = field(default_factory=list)  # allowed environment differences
    names: tuple[str, str] = ("baseline", "current")
    warnings: list[str] = field(default_factory=list)  # about the bench conditions (edgenas.environment)

    @property
    def gate(self) -> Row:
        return next(r for r in self.rows if r.metric == self.metric)

    @property
    def regressed(self) -> bool:
        """Slower by more than the threshold; a change exactly equal to it passes."""
        return exceeds(self.gate.current, self.gate.baseline, self.max_regression)

    @property
    def exit_code(self) -> int:
        return 1 if self.regressed else 0

    @property
    def verdict(self) -> str:
        g, limit = self.gate, threshold_text(self.max_regression)
        change = g.change_text(self.max_regression)
        if self.regressed:
            text = (
                f"FAIL: {g.metric} regressed by {change} ({g.baseline:.6g} -> {g.current:.6g} ms), "
                f"over the {limit} threshold"
            )
        else:
            text = f"PASS: {g.metric} changed by {change}, within the {limit} threshold"
        if self.mismatches:
            text += f" (environment mismatch allowed: {'; '.join(self.mismatches)})"
        return text + "".join(f"\nwarning: {w}" for w in self.warnings)

    def accept_command(self, allow_env_mismatch: bool = False) -> str:
        """The command that makes the current result the new baseline."""
        base, cur = (shlex.quote(n) for n in self.names)
        return f"edgenas compare files {base} {cur} --update-baseline" + (
            " --allow-env-mismatch" if allow_env_mismatch else ""
        )

    def table(self, markdown: bool = False) -> str:
        base, cur = (Path(n).name for n in self.names)
        head = ("metric", f"baseline ({base})", f"current ({cur})", "change", "verdict")
        body = [
            (
                r.metric + (" (gate)" if r.metric == self.metric else ""),
                f"{r.baseline:.3f} {r.unit}",
                f"{r.current:.3f} {r.unit}",
                r.change_text(self.max_regression),
                r.verdict,
            )
            for r in self.rows
        ]
        return render_table(head, body, markdown) + verdict_block(self.verdict, markdown)


def verdict_block(verdict: str, markdown: bool) -> str:
    """The verdict under a table: in Markdown, the verdict line bold and each warning quoted."""
    if not markdown:
        return "\n" + verdict
    first, *warnings = verdict.split("\n")
    return f"\n\n**{first}**" + "".join(f"\n\n> {w}" for w in warnings)


def render_table(head: tuple, body: list[tuple], markdown: bool) -> str:
    """A table: Markdown (for CI comments) or aligned plain text."""
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body])
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [head, *body])


def env_mismatches(baseline: dict, current: dict) -> list[str]:
    return [f"{f} {baseline[f]!r} vs {current[f]!r}" for f in ENV_FIELDS if baseline[f] != current[f]]


def compare(
    baseline: dict,
    *,
    current: dict,
    metric: str = "p50",
    max_regression: float = DEFAULT_MAX_REGRESSION,
    allow_env_mismatch: bool = False,
    names: tuple[str, str] = ("baseline", "current"),
) -> Comparison:
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
            "(pass --allow-env-mismatch to compare anyway)"
        )
    rows = []
    for m in ("p50", "p90", "p99", "mean"):
        b, c = float(baseline[f"{m}_ms"]), float(current[f"{m}_ms"])
        verdict = (
            "regression" if exceeds(c, b, max_regression) else "faster" if falls_below(c, b, max_regression) else "ok"
        )
        if m == metric:
            verdict = verdict.upper()
        rows.append(Row(m, "ms", b, c, verdict))
    rows.append(Row("throughput", "images/s", float(baseline["throughput"]), float(current["throughput"]), "info"))
    return Comparison(
        rows,
        metric,
        max_regression,
        mismatches if allow_env_mismatch else [],
        names,
        version_note(baseline, current) + condition_warnings(baseline, current, names),
    )


def version_note(baseline: dict, current: dict) -> list[str]:
    """A new runtime version changes latency by itself: the verdict says it is not the model's alone."""
    before, now = baseline.get("runtime_version"), current.get("runtime_version")
    if before == now:
        return []
    return [
        f"different {baseline['runtime']} versions: {before} vs {now}; the change is the runtime's as well "
        "as the model's"
    ]


def compare_files(baseline_path: str | Path, current_path: str | Path, **options) -> Comparison:
    """``compare`` on two bench JSON files (from ``edgenas bench`` or the device kit)."""
    names = (str(baseline_path), str(current_path))
    return compare(
        bench_mod.read_bench(baseline_path), current=bench_mod.read_bench(current_path), names=names, **options
    )


def update_baseline(baseline_path: str | Path, current: dict) -> None:
    """Accept ``current`` as the new baseline: written over ``baseline_path`` atomically."""
    bench_mod.write_bench(baseline_path, current)


# -- paired mode -----------------------------------------------------------------------------------
@dataclass
class PairedResult:
    ratios: list[float]  # per round: median latency of B / median latency of A
    ci: tuple[float, float]  # interval of the ratios' centre (intervals.METHODS[method])
    confidence: float
    max_regression: float
    bench_a: dict  # bench JSON records over all rounds (each can become a baseline)
    bench_b: dict
    method: str = intervals.DEFAULT_METHOD

    @property
    def median_ratio(self) -> float:
        return float(np.median(self.ratios))

    @property
    def regressed(self) -> bool:
        """B is slower only when the whole interval lies above 1 + threshold (exactly: a lower
        bound equal to it passes)."""
        return exceeds(self.ci[0], 1, self.max_regression)

    @property
    def exit_code(self) -> int:
        return 1 if self.regressed else 0

    @property
    def verdict(self) -> str:
        limit = 1 + exact(self.max_regression)
        lo, hi = (distinct_text(exact(x), limits=[limit], scale=1, suffix="", sign=False) for x in self.ci)
        interval = (
            f"{self.confidence:.0%} {METHOD_NAMES[self.method]} interval [{lo}, {hi}] of the ratio B/A "
            f"(median {self.median_ratio:.3f})"
        )
        notes = "".join(f"\nwarning: {w}" for w in record_notes(self.bench_a, "the paired run"))
        if self.regressed:
            return f"FAIL: B is slower than A: the whole {interval} lies above {limit}" + notes
        return f"PASS: no regression over {threshold_text(self.max_regression)}: {interval}" + notes

    def table(self, markdown: bool = False) -> str:
        a, b = self.bench_a, self.bench_b
        head = ("model", "p50 ms", "p90 ms", "p99 ms", "runs")
        body = [
            (f"{tag} {r['model']}", f"{r['p50_ms']:.3f}", f"{r['p90_ms']:.3f}", f"{r['p99_ms']:.3f}", str(r["runs"]))
            for tag, r in (("A", a), ("B", b))
        ]
        setup = (
            f"{len(self.ratios)} rounds of A and B in alternation on {a['runtime']} "
            f"({a['device']}, threads {a['threads']}, batch {a['batch']})"
        )
        tail = f"\n\n{setup}" if markdown else f"\n{setup}"
        return render_table(head, body, markdown) + tail + verdict_block(self.verdict, markdown)


def _alternate(run_a, *, run_b, rounds: int, warmup: int, runs: int) -> tuple[list, list, list]:
    """Samples of A, samples of B, and per round median(B) / median(A)."""
    samples_a, samples_b, ratios = [], [], []
    for k in range(rounds):
        # A B, then B A: swapping who goes first each round cancels the order effect (the
        # second model of a pair runs on caches and clocks the first one warmed up).
        if k % 2 == 0:
            a, b = kit.measure(run_a, warmup=warmup, runs=runs), kit.measure(run_b, warmup=warmup, runs=runs)
        else:
            b, a = kit.measure(run_b, warmup=warmup, runs=runs), kit.measure(run_a, warmup=warmup, runs=runs)
        ratios.append(float(np.median(b) / np.median(a)))
        samples_a += a
        samples_b += b
    return samples_a, samples_b, ratios


def _check_paired(*, rounds: int, method: str, confidence: float) -> None:
    if method not in intervals.METHODS:
        raise ParamError("method", method, f"unknown interval method; choose one of {', '.join(intervals.METHODS)}")
    need = intervals.min_rounds(method, confidence)
    if rounds < need:
        raise ParamError(
            "rounds",
            rounds,
            f"a {confidence:.0%} {method} interval of the per-round ratios needs at least {need} rounds",
        )


def paired_compare(  # noqa: PLR0917 (A and B, a pair)
    model_a: str | Path,
    model_b: str | Path,
    *,
    runtime: str | None = None,
    rounds: int = DEFAULT_ROUNDS,
    batch: int = 1,
    threads: int | None = None,
    warmup: int = DEFAULT_ROUND_WARMUP,
    runs_per_round: int = DEFAULT_ROUND_RUNS,
    max_regression: float = DEFAULT_MAX_REGRESSION,
    seed: int = 0,
    confidence: float = CONFIDENCE,
    method: str = intervals.DEFAULT_METHOD,
) -> PairedResult:
    """Measure A and B in alternation (A B, B A, A B, ...) on this machine; B regressed when the
    interval (``method``, see ``edgenas.intervals``) of the per-round ratios B/A lies wholly above
    ``1 + max_regression``."""
    _check_paired(rounds=rounds, method=method, confidence=confidence)
    if max_regression < 0:
        raise UserInputError(f"max_regression must be >= 0, got {max_regression}")
    with ExitStack() as stack:
        ra = stack.enter_context(bench_mod.open_runner(model_a, runtime, threads))
        rb = stack.enter_context(bench_mod.open_runner(model_b, runtime, threads))
        if ra.runtime != rb.runtime:
            raise UserInputError(f"A runs on {ra.runtime} and B on {rb.runtime}: name one runtime to measure both on")
        stack.enter_context(kit_errors())
        xa, xb = kit.bench_input(ra.input_chw, batch, seed), kit.bench_input(rb.input_chw, batch, seed)
        before = kit.probe()
        samples_a, samples_b, ratios = _alternate(
            lambda: ra(xa), run_b=lambda: rb(xb), rounds=rounds, warmup=warmup, runs=runs_per_round
        )
        environment = kit.conditions.environment(before, kit.probe())
        bench_a, bench_b = (
            kit.bench_result(r, batch=batch, warmup=warmup, samples_ms=s, tool=bench_mod.TOOL, environment=environment)
            | {"rounds": rounds}
            for r, s in ((ra, samples_a), (rb, samples_b))
        )
    try:
        ci = intervals.METHODS[method](ratios, confidence=confidence)
    except ValueError as e:  # a median of 0 ms: the timer cannot resolve the model
        raise ParamError(
            "batch", batch, f"paired mode: {e} (per-round ratios {ratios[:3]}...): use a larger {{batch}}"
        ) from None
    return PairedResult(ratios, ci, confidence, max_regression, bench_a, bench_b, method)


def paired_compare_on_device(  # noqa: PLR0917 (A and B, a pair)
    model_a: str | Path,
    model_b: str | Path,
    *,
    url: str,
    token: str,
    runtime: str | None = None,
    rounds: int = DEFAULT_ROUNDS,
    batch: int = 1,
    threads: int | None = None,
    warmup: int = DEFAULT_ROUND_WARMUP,
    runs_per_round: int = DEFAULT_ROUND_RUNS,
    max_regression: float = DEFAULT_MAX_REGRESSION,
    confidence: float = CONFIDENCE,
    method: str = intervals.DEFAULT_METHOD,
) -> PairedResult:
    """``paired_compare`` on the device server at ``url``: it times A and B in alternation there."""
    _check_paired(rounds=rounds, method=method, confidence=confidence)
    (path_a, runtime), (path_b, _) = bench_mod.device_model(model_a, runtime), bench_mod.device_model(model_b, runtime)
    client = DeviceClient(url, token=token)
    answer = client.paired(
        upload_body(path_a, runtime),
        onnx_b=upload_body(path_b, runtime),
        runtime=runtime,
        threads=threads,
        batch=batch,
        rounds=rounds,
        warmup=warmup,
        runs=runs_per_round,
        name=f"{path_a.name} {path_b.name}",
    )
    bench_a, bench_b = (
        bench_mod.read_device_bench(answer.get(k), url) | {"model": str(m)}
        for k, m in (("bench_a", model_a), ("bench_b", model_b))
    )
    ratios = [float(r) for r in answer.get("ratios", [])]
    if len(ratios) != rounds:
        raise UserInputError(f"the answer of {url} holds {len(ratios)} ratios for {rounds} rounds")
    ci = intervals.METHODS[method](ratios, confidence=confidence)
    return PairedResult(ratios, ci, confidence, max_regression, bench_a, bench_b, method)
