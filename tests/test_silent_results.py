"""Issue 24, part 3: inputs that used to give a wrong result with exit 0 now refuse or say so."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import make_meta, torch_threads
from PIL import Image
from sklearn.datasets import load_digits

from edgenas.cli import main
from edgenas.config.profile import load_profile
from edgenas.deploy.export.exporter import export_run
from edgenas.errors import RunDirError, UserInputError
from edgenas.run.meta import run_meta
from edgenas.run.rundir import RunDir
from edgenas.runtime.latency_table import FEATURES, SCHEMA, read_table, table_from_dict
from edgenas.runtime.table_build import Target, local_built_for
from edgenas.search.space import Arch
from edgenas.training.network import build_model
from edgenas.training.tasks import task_for


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _error_line(r) -> str:
    lines = r.output.strip().splitlines()
    assert lines and lines[-1].startswith("edgenas: error: "), r.output
    return lines[-1]


# -- latency tables with NaN, infinite or negative figures -----------------------------------------
def _table(**change) -> dict:
    built_for = local_built_for(Target("classify", (1, 8, 8), 10, "onnxruntime-cpu"))
    coef = [1.0 if f.endswith("_layers") else 0.0 for f in FEATURES]
    return {
        "schema": SCHEMA,
        "model": "regression",
        "built_for": built_for,
        "space": {},
        "entries": {},
        "coef": coef,
        "build_seconds": 0.0,
        **change,
    }


def _lookup(**change) -> dict:
    return _table(**{"model": "lookup", "coef": [], "entries": {"stem:1>8@8x8": 0.1, "head:8>10@8x8": 0.1}, **change})


NAN, INF = float("nan"), float("inf")
BAD_TABLES = {
    "NaN coefficient": (_table(coef=[NAN] * len(FEATURES)), "coef[0] is nan"),
    "NaN entry": (_lookup(entries={"stem:1>8@8x8": NAN}), "entry 'stem:1>8@8x8' is nan"),
    "negative entry": (_lookup(entries={"stem:1>8@8x8": -0.5}), "entry 'stem:1>8@8x8' is -0.5"),
    "NaN scale": (_lookup(scale=NAN), "scale is nan"),
    "infinite scale": (_lookup(scale=INF), "scale is inf"),
    "negative scale": (_lookup(scale=-1.0), "scale is -1.0"),
    "NaN overhead": (_lookup(overhead_ms=NAN), "overhead_ms is nan"),
    "infinite overhead": (_lookup(overhead_ms=-INF), "overhead_ms is -inf"),
    "a string": (_lookup(scale="1.0"), "scale is '1.0', not a number"),
}


@pytest.mark.parametrize("case", BAD_TABLES)
def test_a_table_with_a_figure_that_is_not_a_latency_is_refused(tmp_path, case):
    table, needle = BAD_TABLES[case]
    path = tmp_path / "t.json"
    path.write_text(json.dumps(table))  # json writes NaN and Infinity, and reads them back
    with pytest.raises(UserInputError) as e:
        read_table(path)
    assert needle in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)


def test_a_prediction_that_is_not_a_latency_is_refused():
    """Finite coefficients can still predict a negative latency, which every budget would let through."""
    table = table_from_dict(_table(coef=[-5.0 if f == "one" else 0.0 for f in FEATURES]), "t")
    with pytest.raises(UserInputError, match="predicts -5.0 ms"):
        table.predict_ms(Arch.plain(2, 4))


def test_a_search_refuses_a_nan_table_before_anything_is_written(tmp_path, ci_profile):
    """On main every prediction was NaN, the budget never bound and the search exited 0 with a winner."""
    (tmp_path / "table.json").write_text(json.dumps(_table(coef=[NAN] * len(FEATURES))))
    profile = tmp_path / "p.toml"
    profile.write_text(
        ci_profile.read_text() + f'\n[budget]\nmax_latency_ms = 2.5\nlatency_table = "{tmp_path / "table.json"}"\n'
    )
    r = _cli("discover", "--profile", profile, "--out", tmp_path / "run", "--device", "cpu")
    assert r.exit_code == 2, r.output
    line = _error_line(r)
    assert "budget.latency_table" in line and "coef[0] is nan" in line, line
    assert not (tmp_path / "run").exists()


def test_latency_check_refuses_a_nan_table_instead_of_printing_nan(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps(_table(coef=[NAN] * len(FEATURES))))
    r = _cli("latency-check", path, "--quick", "--samples", "2", "--profile", "demo")
    assert r.exit_code == 2, r.output
    assert "nan %" not in r.output and "coef[0] is nan" in _error_line(r)


# -- export and evaluate on other images than the run's ------------------------------------------
def _write_digit_folder(root, *, black: bool = False) -> None:
    """sklearn's digits as 8x8 PNGs, 12 per class (or all black: the "replaced image folder")."""
    digits = load_digits()
    for c in range(10):
        folder = root / str(c)
        folder.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(digits.images[digits.target == c][:12]):
            pixels = np.zeros((8, 8), np.uint8) if black else (img * 255 / 16).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A run made on an image folder (run.json records its fingerprint), its weights and an ONNX export."""
    root = tmp_path_factory.mktemp("folder")
    images = root / "images"
    _write_digit_folder(images)
    profile = load_profile("demo")
    profile = dataclasses.replace(profile, data=dataclasses.replace(profile.data, input_size=(8, 8), channels=1))
    data = task_for("classify").load_data("imagefolder", data_dir=str(images), profile=profile, seed=0, download=False)
    meta = run_meta(
        profile, task="classify", dataset="imagefolder", data_dir=images, data=data, extra={}, seed=0, device="cpu"
    )
    run = RunDir.start(root / "run", meta, resume=False)
    arch = Arch(2, 4, (0, 0), (3, 3))
    run.write(RunDir.ARCH, arch.to_dict())
    torch.manual_seed(0)
    run.save_weights(build_model(arch, 1, 10))
    with torch_threads(1):
        export_run(run.path, parity_samples=16)
    return run, images


def test_evaluate_and_int8_export_refuse_other_images_than_the_runs(folder_run, tmp_path):
    """On main, with the folder replaced by black images, the INT8 gate passed and evaluate said "nothing lost"."""
    run, images = folder_run
    r = _cli("evaluate", run.path, "--threads", "1")
    assert r.exit_code == 0, r.output  # the run's own images: evaluated
    saved = tmp_path / "saved"
    shutil.copytree(images, saved)
    try:
        shutil.rmtree(images)
        _write_digit_folder(images, black=True)
        for args in (["evaluate", run.path, "--threads", "1"], ["export", run.path, "--format", "onnx,onnx-int8"]):
            r = _cli(*args)
            assert r.exit_code == 2, r.output
            line = _error_line(r)
            assert f"the images in {images} are not the ones {run.path} was made on" in line, line
            assert "restore the run's images" in line
        assert not (run.path / "export" / "model.int8.onnx").exists()
    finally:
        shutil.rmtree(images)
        shutil.copytree(saved, images)


# -- evaluate on a stale export ---------------------------------------------------------------------
def test_evaluate_says_when_the_export_is_older_than_the_weights(folder_run, tmp_path):
    run, _ = folder_run
    copy = tmp_path / "run"
    shutil.copytree(run.path, copy)
    r = _cli("evaluate", copy, "--threads", "1")
    assert r.exit_code == 0 and "stale" not in r.output, r.output
    torch.manual_seed(7)  # what `edgenas train RUN_DIR` does to model.pt
    torch.save(build_model(Arch(2, 4, (0, 0), (3, 3)), 1, 10).state_dict(), copy / "model.pt")
    r = _cli("evaluate", copy, "--threads", "1")
    assert r.exit_code == 0, r.output
    warnings = [line for line in r.output.splitlines() if line.startswith("edgenas: warning:")]
    assert len(warnings) == 1 and "is stale" in warnings[0] and f"edgenas export {copy}" in warnings[0], r.output
    figures = json.loads((copy / "export" / "model.evaluate.json").read_text())
    assert "is stale" in figures["stale"]


# -- a journal record with a NaN figure ------------------------------------------------------------
@pytest.mark.parametrize(
    "field,file",
    [("acc", "journal.jsonl"), ("train_acc", "journal.jsonl"), ("seconds", "journal.jsonl"), ("ms", "latency.jsonl")],
)
@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_resume_refuses_a_record_with_a_non_finite_figure(tmp_path, field, file, value):
    """On main a "trained" record with a NaN accuracy was replayed without a word and changed the winner."""
    meta = make_meta()
    run = RunDir.start(tmp_path / "r", meta, resume=False)
    good = {"key": "d2-w4-ss-33", "status": "trained", "acc": 50.0, "train_acc": 60.0, "seconds": 1.0, "ms": 0.5}
    fields = ("key", "ms") if file == "latency.jsonl" else ("key", "status", "acc", "train_acc", "seconds")
    lines = [
        json.dumps({k: good[k] for k in fields}),
        json.dumps({k: good[k] for k in fields}).replace(json.dumps(good[field]), value, 1),
    ]
    (run.path / file).write_text("\n".join(lines) + "\n")
    with pytest.raises(RunDirError) as e:
        RunDir.start(run.path, meta, resume=True)
    message = str(e.value)
    assert f"{file}, line 2, is damaged: its {field!r} is" in message and "not a finite number" in message, message
    assert "\n" not in message
