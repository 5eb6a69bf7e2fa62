"""``edgenas report``: one self-contained HTML page (figures embedded as PNG, no external resource) of
a run directory, finished or still searching, and optionally each figure as a PNG file."""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from edgenas.device_kit.edgenas_kit import write_atomic
from edgenas.errors import UserInputError
from edgenas import pareto
from edgenas.runs import RunDir, read_jsonl
from edgenas.space import SEPARABLE, Arch, _out_size, layer_plan

BENCH_SCHEMA = "edgenas.bench/1"
DPI = 100


@dataclass
class RunView:
    """Everything the report reads from a run directory; any file but run.json may be missing."""

    path: Path
    meta: dict
    journal: list[dict]
    latencies: dict[str, float]
    summary: Optional[dict] = None
    arch: Optional[Arch] = None  # arch.json, else the best trained candidate so far
    arch_source: str = "discovered"
    parity: Optional[dict] = None
    verify: Optional[dict] = None
    benches: list[tuple[str, dict]] = field(default_factory=list)

    @property
    def task(self) -> str:
        return self.meta.get("task", "classify")

    @property
    def finished(self) -> bool:
        return self.summary is not None

    @property
    def winner(self) -> Optional[str]:
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

    def budget_use(self) -> list[tuple[str, Optional[float], float]]:
        """(axis, the winner's value, the budget; 0 = none) for params, MACs, latency."""
        w, b = self.winner_figures(), self.budget
        return [("params", w.get("params"), b.get("max_params", 0)), ("macs", w.get("macs"), b.get("max_macs", 0)),
                ("latency", w.get("latency_ms"), b.get("max_latency_ms", 0.0))]

    @property
    def layers(self) -> list[dict]:
        return layer_rows(self) if self.arch else []


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except ValueError:
        return None  # half-written by another process: the report shows the rest


def find_benches(path: Path) -> list[tuple[str, dict]]:
    """Bench JSONs (``edgenas bench --json``) lying in the run directory, export/ or bench/."""
    found = []
    for folder in (path, path / "export", path / "bench"):
        for f in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            record = _read_json(f)
            if isinstance(record, dict) and record.get("schema") == BENCH_SCHEMA:
                found.append((str(f.relative_to(path)), record))
    return found


def load_view(run_dir: str | Path) -> RunView:
    run = RunDir.open(run_dir)
    journal = run.journal()
    view = RunView(run.path, run.meta, journal, {r["key"]: r["ms"] for r in read_jsonl(run.path / RunDir.LATENCY)},
                   summary=_read_json(run.path / RunDir.SUMMARY), parity=_read_json(run.path / "export" / "parity.json"),
                   verify=_read_json(run.path / "verify.json"), benches=find_benches(run.path))
    arch = _read_json(run.path / RunDir.ARCH)
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
    c, (h, w) = shape["in_channels"], shape["input_size"]
    rows = [{"name": "stem", "label": f"stem conv3x3 {c}->{2 * arch.width} {h}x{w}", "op": "stem", "kernel": 3, "c_in": c,
             "c_out": 2 * arch.width, "stride": 1, "resolution": f"{h}x{w}",
             "params": 9 * c * 2 * arch.width + 4 * arch.width, "macs": h * w * 9 * c * 2 * arch.width}]
    for i, ((c_in, c_out, stride), op, k) in enumerate(zip(layer_plan(arch), arch.ops, arch.kernels), start=1):
        h, w = _out_size(h, stride), _out_size(w, stride)
        per_pixel = k * k * c_in + c_in * c_out if op == SEPARABLE else k * k * c_in * c_out
        name = "sep" if op == SEPARABLE else "conv"
        rows.append({"name": f"L{i}", "label": f"L{i} {name}{k}x{k} {c_in}->{c_out} s{stride} {h}x{w}", "op": name, "kernel": k,
                     "c_in": c_in, "c_out": c_out, "stride": stride, "resolution": f"{h}x{w}",
                     "params": per_pixel + 2 * c_out, "macs": h * w * per_pixel})
    total = view.winner_figures()
    if total.get("params") is not None:
        head = "embedding" if view.task == "face" else "pool+linear"
        rows.append({"name": f"head: {head}", "label": f"head {head}", "op": "head", "kernel": None, "c_in": rows[-1]["c_out"], "c_out": None,
                     "stride": None, "resolution": "1x1", "params": total["params"] - sum(r["params"] for r in rows),
                     "macs": total["macs"] - sum(r["macs"] for r in rows)})
    return rows


def png_bytes(figure) -> bytes:
    buf = io.BytesIO()
    figure.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def render_charts(view: RunView) -> dict[str, tuple[object, bytes]]:
    """name -> (Chart, PNG bytes) for every figure the run has data for."""
    from edgenas import report_figures

    out = {}
    for draw in report_figures.ALL:
        chart = draw(view)
        if chart is not None:
            out[chart.name] = (chart, png_bytes(chart.figure))
    return out


def write_report(run_dir: str | Path, out: Optional[str | Path] = None, *, png_dir: Optional[str | Path] = None) -> list[Path]:
    """Write the HTML report (default RUN_DIR/report.html) and, with ``png_dir``, one PNG per figure."""
    from edgenas.report_html import page

    view = load_view(run_dir)
    out = Path(out) if out else view.path / "report.html"
    if out.is_dir():
        raise UserInputError(f"--out {out} is a directory; give a file name such as {out / 'report.html'}")
    if png_dir is not None and Path(png_dir).exists() and not Path(png_dir).is_dir():
        raise UserInputError(f"--png {png_dir} is a file; give a directory")
    charts = render_charts(view)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    text = page(view, {name: (chart, base64.b64encode(data).decode()) for name, (chart, data) in charts.items()}, created)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, lambda f: f.write(text.encode()))
    written = [out]
    if png_dir is not None:
        folder = Path(png_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for name, (_, data) in charts.items():
            write_atomic(folder / f"{name}.png", lambda f, data=data: f.write(data))
            written.append(folder / f"{name}.png")
    return written


def esc(value) -> str:
    return html.escape("" if value is None else str(value))
