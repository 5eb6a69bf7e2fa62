"""Latency history for the gate: a directory of bench JSONs, one per result, appended and never
rewritten; a result is judged against the median of the last N results of its environment."""

from __future__ import annotations

import io
import json
import os
import re
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from edgenas.deploy.gate.compare import (
    DEFAULT_MAX_REGRESSION,
    ENV_FIELDS,
    METRICS,
    distinct_text,
    exact,
    exceeds,
    relative_change,
    render_table,
    threshold_text,
    verdict_block,
)
from edgenas.deploy.gate.environment import difference_note, record_notes
from edgenas.device_kit import edgenas_kit as kit
from edgenas.errors import MissingDependency, ParamError, UserInputError
from edgenas.runtime.runners import kit_errors

DEFAULT_WINDOW = 10
NAME = re.compile(r"(\d{6})-.*\.json")  # 000042-20260101T000000Z.json: append order, then the time
SPARKS = "▁▂▃▄▅▆▇█"


@dataclass(frozen=True)
class Entry:
    path: Path
    record: dict


@dataclass
class History:
    directory: Path
    entries: list[Entry]  # readable results, oldest first
    refused: list[str] = field(default_factory=list)  # "why" for each file left alone

    @classmethod
    def load(cls, directory: str | Path) -> History:
        """Every ``*.json`` in ``directory`` in name order; unreadable or invalid ones are listed in
        ``refused`` and left untouched (a missing directory is an empty history)."""
        directory = Path(directory)
        entries, refused = [], []
        for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
            try:
                entries.append(Entry(path, kit.read_bench(path)))
            except kit.KitError as e:
                refused.append(f"left alone: {e}")
        return cls(directory, entries, refused)

    def window(self, current: dict, size: int) -> list[Entry]:
        """The last ``size`` results measured in ``current``'s environment (runtime, device, threads,
        batch, input shape)."""
        same = [
            e
            for e in self.entries
            if all(e.record[f] == current[f] for f in ENV_FIELDS) and not _same_result(e.record, current)
        ]
        return same[-size:] if size > 0 else []

    def holds(self, record: dict) -> bool:
        """Whether ``record`` was added before (a CI job run again)."""
        return any(_same_result(e.record, record) for e in self.entries)

    def append(self, record: dict) -> Path:
        """Write ``record`` as a new file (never over an existing one, also against a concurrent
        writer: the file is linked into place, which fails if the name was taken)."""
        with kit_errors():
            kit.validate_bench(record, "the current result")
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = re.sub(r"[^0-9TZ]", "", record["created"])
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".append-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                os.chmod(tmp, kit.default_file_mode())  # mkstemp makes 0600: a history is shared like any file
                f.write(_json(record))
                f.flush()
                os.fsync(f.fileno())
            seq = 1 + max([int(m.group(1)) for p in self.directory.iterdir() if (m := NAME.fullmatch(p.name))] or [0])
            target = _claim(Path(tmp), directory=self.directory, seq=seq, stamp=stamp)
        finally:
            Path(tmp).unlink(missing_ok=True)
        self.entries.append(Entry(target, record))
        return target


def _claim(tmp: Path, *, directory: Path, seq: int, stamp: str) -> Path:
    """Give the written ``tmp`` the first free name from ``seq`` on, never replacing a file."""
    while True:
        target = directory / f"{seq:06d}-{stamp}.json"
        try:
            os.link(tmp, target)  # fails if the name is taken
            return target
        except FileExistsError:
            seq += 1
        except OSError:  # no hard links here: reserve the name exclusively, then move onto it
            try:
                os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                seq += 1
                continue
            os.replace(tmp, target)
            return target


def _same_result(a: dict, b: dict) -> bool:
    return a["created"] == b["created"] and a["samples_ms"] == b["samples_ms"]


def _json(record: dict) -> str:
    return json.dumps(record, indent=2) + "\n"


def sparkline(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    if hi == lo:
        return SPARKS[3] * len(values)
    return "".join(SPARKS[min(int((v - lo) / (hi - lo) * len(SPARKS)), len(SPARKS) - 1)] for v in values)


@dataclass
class Trend:
    """The current result against the window of its history."""

    current: dict
    name: str  # the current result's file
    window: list[Entry]
    metric: str
    max_regression: float
    warnings: list[str] = field(default_factory=list)

    def values(self, metric: str | None = None) -> list[float]:
        return [float(e.record[f"{metric or self.metric}_ms"]) for e in self.window]

    @property
    def baseline(self) -> float | None:
        """The window's median of the gated metric (None: no earlier result here)."""
        return statistics.median(self.values()) if self.window else None

    @property
    def regressed(self) -> bool:
        return self.baseline is not None and exceeds(
            self.current[f"{self.metric}_ms"], self.baseline, self.max_regression
        )

    @property
    def exit_code(self) -> int:
        return 1 if self.regressed else 0

    @property
    def verdict(self) -> str:
        m, cur, limit = self.metric, float(self.current[f"{self.metric}_ms"]), threshold_text(self.max_regression)
        if not self.window:
            text = f"PASS: {m} {cur:.6g} ms is the first result in this environment: the history starts here"
        else:
            t = exact(self.max_regression)
            change = distinct_text(relative_change(cur, self.baseline), limits=[t, -t])
            vs = (
                f"{cur:.6g} ms against the median {self.baseline:.6g} ms of the last {len(self.window)} results "
                f"(range {min(self.values()):.6g}-{max(self.values()):.6g} ms)"
            )
            text = (
                f"FAIL: {m} regressed by {change}: {vs}, over the {limit} threshold"
                if self.regressed
                else f"PASS: {m} changed by {change}: {vs}, within the {limit} threshold"
            )
        return text + "".join(f"\nwarning: {w}" for w in self.warnings)

    def trend_line(self) -> str:
        values = [*self.values(), float(self.current[f"{self.metric}_ms"])]
        return (
            f"trend of {self.metric} (last {len(self.window)} results, then this one): {sparkline(values)} "
            f"{min(values):.4g}-{max(values):.4g} ms"
        )

    def table(self, markdown: bool = False) -> str:
        head = ("metric", f"median of last {len(self.window)}", f"current ({Path(self.name).name})", "change")
        body = []
        for m in (*METRICS, "mean"):
            base, cur = (statistics.median(self.values(m)) if self.window else None), float(self.current[f"{m}_ms"])
            change = distinct_text(relative_change(cur, base), limits=[exact(self.max_regression)]) if base else "-"
            body.append(
                (
                    m + (" (gate)" if m == self.metric else ""),
                    f"{base:.3f} ms" if base else "-",
                    f"{cur:.3f} ms",
                    change,
                )
            )
        trend = f"\n\n`{self.trend_line()}`" if markdown else f"\n{self.trend_line()}"
        return render_table(head, body, markdown) + trend + verdict_block(self.verdict, markdown)

    def save_png(self, path: str | Path) -> None:
        """The window and the current result as a small line chart, with the threshold over the median."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            import matplotlib.ticker
        except ImportError:
            raise MissingDependency("drawing the trend needs matplotlib: pip install 'edgenas[report]'") from None
        values = [*self.values(), float(self.current[f"{self.metric}_ms"])]
        fig, ax = plt.subplots(figsize=(5, 2.2), dpi=100)
        ax.plot(range(len(values)), values, marker="o", markersize=3)
        if self.baseline is not None:
            ax.axhline(
                self.baseline * (1 + self.max_regression),
                color="red",
                linewidth=0.8,
                linestyle="--",
                label=f"median + {threshold_text(self.max_regression)}",
            )
            ax.legend(loc="best", fontsize=8)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel("result (last is the current one)")
        ax.set_ylabel(f"{self.metric} ms")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        kit.write_atomic(path, lambda f: f.write(buf.getvalue()))


def judge(
    current: dict,
    *,
    history: History,
    name: str,
    window: int = DEFAULT_WINDOW,
    metric: str = "p50",
    max_regression: float = DEFAULT_MAX_REGRESSION,
) -> Trend:
    """``current`` against the last ``window`` results of its environment in ``history``."""
    if metric not in METRICS:
        raise UserInputError(f"unknown metric {metric!r}: choose one of {', '.join(METRICS)}")
    if window < 1:
        raise ParamError("window", window, "give an integer >= 1")
    entries = history.window(current, window)
    warnings = list(history.refused) + (difference_note(entries[-1].record, current) if entries else [])
    warnings += record_notes(current, name)  # the window's own notes were shown when each was judged
    return Trend(current, name, entries, metric, max_regression, warnings)
