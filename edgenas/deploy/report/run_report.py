"""``edgenas report``: one self-contained HTML page (figures embedded as PNG, no external resource) of
a run directory, finished or still searching, and optionally each figure as a PNG file."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from edgenas.deploy.report import figures
from edgenas.deploy.report.html_page import page
from edgenas.deploy.report.view import RunView, load_view
from edgenas.device_kit.edgenas_kit import write_atomic
from edgenas.errors import ParamError

DPI = 100


def png_bytes(figure) -> bytes:
    buf = io.BytesIO()
    figure.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def render_charts(view: RunView) -> dict[str, tuple[figures.Chart, bytes]]:
    """name -> (Chart, PNG bytes) for every figure the run has data for."""
    out = {}
    for draw in figures.ALL:
        chart = draw(view)
        if chart is not None:
            out[chart.name] = (chart, png_bytes(chart.figure))
    return out


def write_report(
    run_dir: str | Path,
    *,
    out: str | Path | None = None,
    png_dir: str | Path | None = None,
    warn: Callable[[str], None] = lambda line: None,
) -> list[Path]:
    """Write the HTML report (default RUN_DIR/report.html) and, with ``png_dir``, one PNG per figure.
    ``warn`` hears one line per damaged file left out of it."""
    view = load_view(run_dir)
    for name, why in view.damaged.items():
        warn(f"{view.path / name} is damaged, left out of the report: {why}")
    out = Path(out) if out else view.path / "report.html"
    if out.is_dir():
        raise ParamError("out", str(out), f"is a directory; give a file name such as {out / 'report.html'}")
    if png_dir is not None and Path(png_dir).exists() and not Path(png_dir).is_dir():
        raise ParamError("png_dir", str(png_dir), "is a file; give a directory")
    charts = render_charts(view)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    text = page(
        view, {name: (chart, base64.b64encode(data).decode()) for name, (chart, data) in charts.items()}, created
    )
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
