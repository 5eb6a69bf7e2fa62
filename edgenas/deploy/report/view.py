"""What ``edgenas report`` reads from a run directory, finished or still searching (any file but run.json may be missing)."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgenas.deploy.bench_all import SCHEMA as BENCH_ALL_SCHEMA
from edgenas.deploy.export.layout import BENCH_ALL, EXPORT_DIR, PARITY, export_dir
from edgenas.deploy.report import pareto
from edgenas.device_kit.edgenas_kit import KitError, validate_bench
from edgenas.run.rundir import RunDir, read_jsonl
from edgenas.search.space import Arch, layer_costs

BENCH_SCHEMAS = ("edgenas.bench/1", "edgenas.bench/2")


@dataclass
class RunView:
    """Everything the report reads from a run directory; any file but run.json may be missing."""

    path: Path
    meta: dict
    journal: list[dict]
    latencies: dict[str, float]
    summary: dict | None = None
    arch: Arch | None = None  # arch.json, else the best trained candidate so far
    arch_source: str = "discovered"
    parity: dict | None = None
    verify: dict | None = None
    benches: list[tuple[str, dict]] = field(default_factory=list)
    runtimes: dict | None = None  # export/bench-all.json: `edgenas bench RUN_DIR --runtime all`
    damaged: dict[str, str] = field(default_factory=dict)  # file (relative to path) -> what is wrong with it

    @property
    def task(self) -> str:
        return self.meta.get("task", "classify")

    @property
    def finished(self) -> bool:
        return self.summary is not None

    @property
    def winner(self) -> str | None:
        return str(self.arch) if self.arch else None

    @property
    def budget(self) -> dict:
        return self.meta.get("profile", {}).get("budget", {})

    def winner_figures(self) -> dict:
        """params, macs, latency_ms of the winner: summary.json, else its journal record."""
        if self.summary and "params" in self.summary:
            return {k: self.summary.get(k) for k in ("params", "macs", "latency_ms")}
        for r in self.journal:
            if self.arch and str(pareto.arch_of(r)) == str(self.arch):
                return {"params": r["params"], "macs": r["macs"], "latency_ms": pareto.latency_of(r, self.latencies)}
        return {}

    def budget_use(self) -> list[tuple[str, float | None, float]]:
        """(axis, the winner's value, the budget; 0 = none) for params, MACs, latency and, where a memory
        budget is set, peak memory and flash in KB (TFLM's measurement once exported, else the estimate)."""
        w, b = self.winner_figures(), self.budget
        use = [
            ("params", w.get("params"), b.get("max_params", 0)),
            ("macs", w.get("macs"), b.get("max_macs", 0)),
            ("latency", w.get("latency_ms"), b.get("max_latency_ms", 0.0)),
        ]
        memory = (self.summary or {}).get("memory", {})
        figures = memory.get("measured") or memory.get("estimate") or {}
        for axis, key, limit in (
            ("peak memory", "peak_memory_bytes", "max_peak_memory_kb"),
            ("flash", "flash_bytes", "max_flash_kb"),
        ):
            if b.get(limit):
                value = figures.get(key)
                use.append((axis, None if value is None else value / 1024, b[limit]))
        return use

    @property
    def layers(self) -> list[dict]:
        return layer_rows(self) if self.arch else []


def _read_json(path: Path, damaged: dict | None = None, root: Path | None = None) -> dict | None:
    """A JSON object file; None when absent. A file that is there but is not a JSON object (files are
    written atomically: it is damaged, never half-written) is None too, and said in ``damaged``."""
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
        problem = None if isinstance(value, dict) else f"a JSON {type(value).__name__}, not an object"
    except (ValueError, OSError) as e:
        problem = f"not readable as JSON: {' '.join(str(e).split())[:100]}"
    if problem is None:
        return value
    if damaged is not None:
        damaged[str(path.relative_to(root)) if root else path.name] = problem
    return None


def find_benches(path: Path, damaged: dict | None = None) -> list[tuple[str, dict]]:
    """Bench JSONs (``edgenas bench --json``) lying in the run directory, export/ or bench/; one with a
    bench schema but missing or wrong fields is left out and said in ``damaged``."""
    found = []
    for folder in (path, export_dir(path), path / "bench"):
        for f in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            record, name = _read_json(f), str(f.relative_to(path))
            if not (isinstance(record, dict) and record.get("schema") in BENCH_SCHEMAS):
                continue
            try:
                found.append((name, validate_bench(record, name)))
            except KitError as e:
                if damaged is not None:
                    damaged[name] = f"not a valid bench result ({str(e).removeprefix(name + ': ')})"
    return found


def load_view(run_dir: str | Path) -> RunView:
    run = RunDir.open(run_dir)
    journal = run.journal()
    damaged: dict[str, str] = {}
    view = RunView(
        run.path,
        run.meta.to_dict(),
        journal,
        {r["key"]: r["ms"] for r in read_jsonl(run.path / RunDir.LATENCY)},
        summary=_read_json(run.path / RunDir.SUMMARY, damaged, run.path),
        parity=_read_json(export_dir(run.path) / PARITY, damaged, run.path),
        verify=_read_json(run.path / "verify.json", damaged, run.path),
        benches=find_benches(run.path, damaged),
        damaged=damaged,
    )
    runtimes = _read_json(export_dir(run.path) / BENCH_ALL, damaged, run.path)
    if runtimes is not None and runtimes.get("schema") != BENCH_ALL_SCHEMA:
        damaged[f"{EXPORT_DIR}/{BENCH_ALL}"] = f"not a {BENCH_ALL_SCHEMA} record"
    elif runtimes is not None:
        view.runtimes = runtimes
    arch = _read_json(run.path / RunDir.ARCH, damaged, run.path)
    if arch:
        view.arch = Arch.from_dict(arch)
    else:
        trained = [r for r in journal if r["status"] == "trained"]
        if trained:
            view.arch = pareto.arch_of(max(trained, key=lambda r: r["acc"]))
            view.arch_source = "best candidate so far"
    return view


def layer_rows(view: RunView) -> list[dict]:
    """Stem, each layer and the head: op, kernel, channels, stride, resolution, params and MACs."""
    arch, shape = view.arch, view.meta["data"]
    if arch is None:
        return []
    rows: list[dict[str, Any]] = []
    for c in layer_costs(arch, shape["in_channels"], tuple(shape["input_size"])):
        h, w = c.size
        kind = (
            f"conv3x3 {c.c_in}->{c.c_out}"
            if c.op == "stem"
            else f"{c.op}{c.kernel}x{c.kernel} {c.c_in}->{c.c_out} s{c.stride}"
        )
        rows.append(
            {
                "name": c.name,
                "label": f"{c.name} {kind} {h}x{w}",
                "op": c.op,
                "kernel": c.kernel,
                "c_in": c.c_in,
                "c_out": c.c_out,
                "stride": c.stride,
                "resolution": f"{h}x{w}",
                "params": c.params,
                "macs": c.macs,
            }
        )
    total = view.winner_figures()
    if total.get("params") is not None:
        head = "embedding" if view.task == "face" else "pool+linear"
        rows.append(
            {
                "name": f"head: {head}",
                "label": f"head {head}",
                "op": "head",
                "kernel": None,
                "c_in": rows[-1]["c_out"],
                "c_out": None,
                "stride": None,
                "resolution": "1x1",
                "params": total["params"] - sum(r["params"] for r in rows),
                "macs": total["macs"] - sum(r["macs"] for r in rows),
            }
        )
    return rows


def esc(value) -> str:
    return html.escape("" if value is None else str(value))
