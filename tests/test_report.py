"""``edgenas report``: the HTML of a real run (budgeted, exported, benched), of a face run, of a run
still searching and of one with a failed candidate; its PNGs; and the page in a real browser."""

import base64
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import torch_threads
from PIL import Image

import edgenas
from edgenas.cli import main
from edgenas.deploy.report.run_report import write_report
from edgenas.deploy.report.view import load_view
from edgenas.deploy.verify import verify_run
from edgenas.run.rundir import RunDir, write_json_atomic

CLASSIFY_FIGURES = ("trajectory", "tradeoffs", "network", "stages", "budgets", "export", "bench")


class Page(HTMLParser):
    """The figures (id, data-points, PNG bytes), every URL-bearing attribute, and the text."""

    def __init__(self, text: str):
        super().__init__()
        self.figures, self.urls, self.text, self.tags = {}, [], [], []
        self._figure = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        self.urls += [v for k, v in attrs if k in ("src", "href", "action", "poster", "data") and v]
        if tag == "figure":
            self._figure = a["id"].removeprefix("fig-")
            self.figures[self._figure] = {"points": int(a["data-points"])}
        if tag == "img" and self._figure:
            self.figures[self._figure]["png"] = base64.b64decode(a["src"].removeprefix("data:image/png;base64,"))

    def handle_data(self, data):
        self.text.append(data)


def check_png(data: bytes, min_size=(300, 150)):
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.size[0] >= min_size[0] and image.size[1] >= min_size[1], image.size
    pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 5  # not a blank canvas


def check_self_contained(html: str, page: Page):
    assert all(u.startswith("data:image/png;base64,") for u in page.urls), page.urls
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/|@import|url\(", html, re.I)
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags


@pytest.fixture(scope="module")
def exported_run(budget_run):
    """The budgeted CI run, exported (parity.json) and benchmarked (bench.json), then reported with PNGs."""
    out, _ = budget_run
    for args in (
        ["export", out],
        [
            "bench",
            out / "export" / "model.onnx",
            "--threads",
            "1",
            "--warmup",
            "5",
            "--runs",
            "60",
            "--json",
            out / "bench.json",
        ],
    ):
        r = subprocess.run(
            [sys.executable, "-m", "edgenas.cli", *map(str, args)], capture_output=True, text=True, timeout=600
        )
        assert r.returncode == 0, r.stderr
    png = out.parent / "png"
    r = subprocess.run(
        [sys.executable, "-m", "edgenas.cli", "report", str(out), "--png", str(png)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == f"wrote {out / 'report.html'}"
    return out, png


@pytest.mark.slow
def test_report_of_a_real_run_holds_every_figure_with_data_and_nothing_external(exported_run):
    out, _ = exported_run
    html = (out / "report.html").read_text()
    page = Page(html)
    journal = RunDir(out).journal()
    assert set(CLASSIFY_FIGURES) <= set(page.figures)
    for name in CLASSIFY_FIGURES:
        assert page.figures[name]["points"] > 0, name
        check_png(page.figures[name]["png"])
    assert page.figures["trajectory"]["points"] == len(journal)
    assert (
        page.figures["network"]["points"] == json.loads((out / "arch.json").read_text())["depth"] + 2
    )  # stem, layers, head
    assert page.figures["bench"]["points"] == 60
    check_self_contained(html, page)
    text = " ".join(page.text)
    for phrase in (
        "Search trajectory",
        "Pareto front against params",
        "The discovered network",
        "Time per stage",
        "max_params",
        "skipped",
        "Provenance",
        "ci-budget",
        "digits",
        "torch version",
        "onnx",
        "fp32",
    ):
        assert phrase in text, phrase
    skipped = [r for r in journal if r["status"] == "skipped"]
    assert skipped and skipped[0]["reason"] in text
    assert "ROC" not in text  # a classify run has no face section


@pytest.mark.slow
def test_layer_table_adds_up_to_the_networks_params_and_macs(exported_run):
    out, _ = exported_run
    view = load_view(out)
    summary = json.loads((out / "summary.json").read_text())
    rows = view.layers
    assert sum(r["params"] for r in rows) == summary["params"] and sum(r["macs"] for r in rows) == summary["macs"]
    assert all(r["params"] > 0 and r["macs"] > 0 for r in rows)


@pytest.mark.slow
def test_png_dir_holds_each_figure_as_an_image(exported_run):
    out, png = exported_run
    names = sorted(p.stem for p in png.glob("*.png"))
    assert names == sorted(CLASSIFY_FIGURES)
    for path in png.glob("*.png"):
        check_png(path.read_bytes())


def _partial(out: Path, dest: Path, records: int) -> Path:
    """A copy of a run as it was while searching: run.json, ``records`` journal lines and a torn one."""
    dest.mkdir()
    shutil.copy(out / "run.json", dest / "run.json")
    lines = (out / "journal.jsonl").read_text().splitlines(keepends=True)
    (dest / "journal.jsonl").write_text("".join(lines[:records]) + lines[records][:40])
    return dest


@pytest.mark.slow
def test_report_of_a_run_still_searching(budget_run, tmp_path):
    out, _ = budget_run
    run = _partial(out, tmp_path / "searching", 3)
    written = write_report(run, png_dir=tmp_path / "png")
    page = Page((run / "report.html").read_text())
    text = " ".join(page.text)
    assert "in progress: 3 candidates journaled" in text and "best candidate so far" in text
    assert page.figures["trajectory"]["points"] == 3 and page.figures["network"]["points"] > 0
    assert "stages" in page.figures and "export" not in page.figures
    assert "Export parity: not available" in text
    assert len(written) == 1 + len(list((tmp_path / "png").glob("*.png")))


@pytest.mark.slow
def test_report_marks_a_failed_candidate(budget_run, tmp_path):
    out, _ = budget_run
    run = _partial(out, tmp_path / "failed", 4)
    records = RunDir(run).journal()
    records[-1].update(status="failed", acc=0.0)  # as pipeline.py journals a non-finite loss
    (run / "journal.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    write_report(run, out=tmp_path / "r.html")
    page = Page((tmp_path / "r.html").read_text())
    rows = re.findall(r"<tr><td class=\"l\">4</td>.*?</tr>", (tmp_path / "r.html").read_text())
    assert rows and ">failed<" in rows[0]
    assert page.figures["trajectory"]["points"] == 4


@pytest.mark.slow
def test_latency_is_drawn_where_candidates_were_measured(budget_run, tmp_path):
    from edgenas.deploy.report.figures import tradeoff_axes

    out, _ = budget_run
    run = _partial(out, tmp_path / "timed", 4)
    assert tradeoff_axes(load_view(run)) == ["params", "macs"]
    records = RunDir(run).journal()
    for i, r in enumerate(records):  # as a search under a latency budget journals them
        r["latency_ms"] = 0.5 + 0.1 * i
    (run / "journal.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert tradeoff_axes(load_view(run)) == ["params", "macs", "latency"]
    write_report(run, out=tmp_path / "r.html")
    page = Page((tmp_path / "r.html").read_text())
    assert "Pareto front against latency" in " ".join(page.text) and page.figures["tradeoffs"]["points"] >= 6


@pytest.mark.slow
def test_report_errors_name_the_file_or_flag(budget_run, tmp_path):
    out, _ = budget_run
    r = subprocess.run([sys.executable, "-m", "edgenas.cli", "report", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("edgenas: error:") and "not an edgenas run directory" in r.stderr
    r = CliRunner().invoke(main, ["report", str(out), "--out", str(tmp_path)], standalone_mode=False)
    assert (
        r.return_value == 2
        and r.output.startswith("edgenas: error: Invalid value for '--out'")
        and "is a directory" in r.output
    )
    with pytest.raises(edgenas.errors.UserInputError, match="out=.*: is a directory"):
        write_report(out, out=tmp_path)


# -- a face run ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def face_run(tmp_path_factory):
    """A small face search through the real pipeline, verified (verify.json with its ROC curve)."""
    from test_face import face_profile_text, write_faces

    root = tmp_path_factory.mktemp("report-face")
    faces = write_faces(root / "people", identities=16, per_identity=6, size=16)
    profile = root / "face.toml"
    profile.write_text(
        face_profile_text(
            depths=(2, 2),
            widths=(4, 8),
            epochs=2,
            micro_epochs=1,
            size=16,
            embedding_dim=16,
            val_identities=0.25,
            val_pairs=100,
        )
    )
    out = root / "run"
    with torch_threads(1):
        edgenas.discover(
            str(profile), dataset="imagefolder", data_dir=str(faces), out=out, device="cpu", seed=0, log=lambda m: None
        )
        write_json_atomic(out / "verify.json", verify_run(out, device="cpu"))
    return out


@pytest.mark.slow
def test_report_of_a_face_run_draws_the_roc_curve(face_run, tmp_path):
    verify = json.loads((face_run / "verify.json").read_text())
    assert len(verify["roc"]["fpr"]) == len(verify["roc"]["tpr"]) >= 2
    assert verify["roc"]["fpr"][0] == 0.0 and verify["roc"]["tpr"][-1] == 1.0
    write_report(face_run, out=tmp_path / "face.html", png_dir=tmp_path / "png")
    html = (tmp_path / "face.html").read_text()
    page = Page(html)
    for name in ("trajectory", "tradeoffs", "network", "stages", "roc"):
        assert page.figures[name]["points"] > 0, name
        check_png(page.figures[name]["png"])
    assert page.figures["roc"]["points"] == len(verify["roc"]["fpr"])
    text = " ".join(page.text)
    assert "Face verification" in text
    assert "head: embedding" in text and "roc_auc" in text
    check_self_contained(html, page)
    assert (tmp_path / "png" / "roc.png").is_file()


@pytest.mark.slow
def test_face_report_says_when_the_roc_curve_is_not_available(face_run, tmp_path):
    run = tmp_path / "face"
    shutil.copytree(face_run, run)
    verify = json.loads((run / "verify.json").read_text())
    del verify["roc"]
    write_json_atomic(run / "verify.json", verify)
    write_report(run)
    page = Page((run / "report.html").read_text())
    assert "roc" not in page.figures and "ROC curve: not available" in " ".join(page.text)


# -- a real browser --------------------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium (Debian: apt-get install chromium)")
def test_the_report_renders_in_headless_chromium(exported_run, tmp_path):
    out, _ = exported_run
    shot = tmp_path / "page.png"
    with tempfile.TemporaryDirectory() as profile:
        r = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                "--enable-logging=stderr",
                "--v=0",
                f"--screenshot={shot}",
                "--window-size=1200,2000",
                (out / "report.html").resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    console = [
        line
        for line in r.stderr.splitlines()
        if "CONSOLE" in line or "Uncaught" in line or "ERR_" in line and "net::" in line
    ]
    assert not console, console
    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape[:2] == (2000, 1200)
    assert image.std() > 10 and len(np.unique(image.reshape(-1, 3), axis=0)) > 50  # text and figures, not a blank page
    shutil.copy(shot, out.parent / "chromium-screenshot.png")
