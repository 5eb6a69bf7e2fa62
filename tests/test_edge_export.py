"""``edgenas export --format litert,...``: the edge runtimes' files of a trained demo run pass parity,
``edgenas evaluate`` reports their test accuracy, the kit checks each, and an INT8 file is gated on
accuracy over the whole test split (a broken calibration trips the gate, exit 1, files left)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import torch_threads

import edgenas.deploy.export.edge_export as edge_export_mod
from edgenas.cli import main
from edgenas.config.runtimes import RUNTIMES
from edgenas.deploy.evaluate import evaluate_run
from edgenas.deploy.export import layout
from edgenas.deploy.export.edge_export import is_edge_format
from edgenas.deploy.export.exporter import export_run
from edgenas.deploy.export.formats import FORMATS
from edgenas.device_kit import edgenas_engines as engines
from edgenas.device_kit import edgenas_kit as kit
from edgenas.run.rundir import RunDir

ARCH = {"depth": 3, "width": 12, "ops": [0, 1, 1], "kernels": [3, 3, 3]}
NEEDS = {
    "litert": ("ai_edge_litert", "litert_torch"),
    "executorch": ("executorch",),
    "openvino": ("openvino", "nncf"),
    "ncnn": ("ncnn", "pnnx"),
}
EDGE = [name for name in FORMATS if is_edge_format(name)]
INSTALLED = [n for n in EDGE if all(importlib.util.find_spec(p) for p in NEEDS[RUNTIMES[FORMATS[n].runtime].engine])]


def installed(name: str) -> None:
    if name not in INSTALLED:
        pytest.skip(f"format {name} needs {RUNTIMES[FORMATS[name].runtime].install}")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """A run of the ``demo`` profile on digits (ARCH, 8 epochs, about 96 % test accuracy), exported to
    every edge format installed here."""
    from edgenas.run.final import train_final

    if not INSTALLED:
        pytest.skip("no edge runtime installed: pip install 'edgenas[runtimes]'")
    root = tmp_path_factory.mktemp("edge-demo")
    arch = root / "arch.json"
    arch.write_text(json.dumps(ARCH))
    with torch_threads(1):
        train_final(str(arch), epochs=8, device="cpu", seed=0, profile="demo", out=root / "run", log=lambda m: None)
        report = export_run(root / "run", formats=("onnx", *INSTALLED), calibration_images=256)
    return root / "run", report


@pytest.mark.slow
@pytest.mark.parametrize("name", EDGE)
def test_every_edge_format_passes_parity_and_records_it(demo_run, name):
    installed(name)
    run, report = demo_run
    fmt = FORMATS[name]
    parity = json.loads((run / "export" / layout.PARITY).read_text())
    entry = parity["formats"][name]
    assert parity["passed"] and entry["passed"] and entry["file"] == fmt.file and entry["runtime"] == fmt.runtime
    meta = engines.read_metadata(run / "export" / fmt.file)
    assert meta["weights_sha256"] == kit.file_sha256(run / RunDir.WEIGHTS) == parity["weights_sha256"]
    assert meta["runtime"] == fmt.runtime and meta["input_chw"] == [1, 8, 8] and meta["mean"] and meta["class_names"]
    if RUNTIMES[fmt.runtime].precision == "fp32":
        assert entry["precision"] == "fp32" and entry["max_abs_diff"] <= 1e-3 and entry["top1_agreement"] == 1.0
    else:  # gated on the whole test split, figures beside the file
        gate = entry["accuracy_gate"]
        assert entry["precision"] == "int8" and gate["images"] == 359 and gate["drop_pp"] <= 1.0
        assert (run / "export" / gate["figures"]).is_file() and meta["calibration"]["images"] == 256
        assert entry["kit_tolerances"]["min_agreement"] <= 0.99


@pytest.mark.slow
@pytest.mark.parametrize("name", EDGE)
def test_evaluate_through_each_file_matches_pytorch(demo_run, name):
    installed(name)
    run, _ = demo_run
    fmt = FORMATS[name]
    with torch_threads(1):
        r = evaluate_run(run, model=run / "export" / fmt.file, threads=1)
    assert r["runtime"] == fmt.runtime and r["images"] == 359 and r["threads"] == 1
    if RUNTIMES[fmt.runtime].precision == "fp32":  # 0.1 pp is below one image (0.28 pp): the same predictions
        assert abs(r["artifact"]["top1"] - r["pytorch"]["top1"]) <= 0.1 and r["top1_agreement"] == 100.0
    else:
        assert r["drop_pp"] <= 1.0 and r["top1_agreement"] >= 95.0


@pytest.mark.slow
@pytest.mark.parametrize("name", EDGE)
def test_the_kit_checks_each_file_in_the_export_folder(demo_run, name):
    installed(name)
    run, _ = demo_run
    runtime = FORMATS[name].runtime
    report = kit.check_export(run / "export", runtime=runtime, threads=1)  # the file from the kit's DEFAULT_MODELS
    assert report["passed"], report["failures"]
    assert report["runtime"] == runtime and report["model"].endswith(FORMATS[name].file)
    if RUNTIMES[runtime].precision == "int8":
        assert report["tolerances_from"] == "parity.json"


@pytest.mark.slow
def test_evaluate_cli_and_bench_cli_take_an_edge_file(demo_run, tmp_path):
    installed("litert-int8")
    run, _ = demo_run
    r = CliRunner().invoke(
        main,
        [
            "evaluate",
            str(run),
            "--model",
            str(run / "export" / "model.int8.tflite"),
            "--threads",
            "1",
            "--max-drop",
            "1%",
        ],
    )
    assert r.exit_code == 0 and "litert-int8" in r.output and "gate passed" in r.output, r.output
    assert (run / "export" / "model.int8.tflite.evaluate.json").is_file()
    out = tmp_path / "b.json"
    r = CliRunner().invoke(
        main, ["bench", str(run), "--runtime", "litert-int8", "--threads", "1", "--runs", "20", "--json", str(out)]
    )
    assert r.exit_code == 0, r.output
    record = kit.read_bench(out)
    assert record["runtime"] == "litert-int8" and record["model"].endswith("export/model.int8.tflite")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["litert-int8", "executorch-int8", "openvino-int8"])
def test_a_broken_calibration_trips_the_gate_and_leaves_the_files(demo_run, name, tmp_path, monkeypatch):
    installed(name)
    run = tmp_path / "run"
    run.mkdir()
    for file in (RunDir.META, RunDir.ARCH, RunDir.WEIGHTS):
        (run / file).write_bytes((demo_run[0] / file).read_bytes())
    extreme = lambda data, count: np.full((1, 1, 8, 8), 1e4, np.float32)  # noqa: E731 -- one image of extreme values
    monkeypatch.setattr(edge_export_mod, "calibration_images", extreme)
    with torch_threads(1):
        r = CliRunner().invoke(main, ["export", str(run), "--format", name])
    assert r.exit_code == 1, r.output
    line = r.output.strip().splitlines()[-1]
    assert line.startswith(f"edgenas: error: parity check failed for {name} int8: {FORMATS[name].file} loses ")
    assert "more than --int8-max-drop 1 pp" in line
    parity = json.loads((run / "export" / layout.PARITY).read_text())
    assert not parity["passed"] and parity["formats"]["onnx"]["passed"]
    for file in (
        FORMATS[name].file,
        layout.evaluate_json(run / "export" / FORMATS[name].file).name,
        "model.onnx",
        layout.SAMPLES,
        layout.KIT,
    ):
        assert (run / "export" / file).is_file(), file


def test_an_edge_format_without_its_package_is_one_line_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    r = CliRunner().invoke(main, ["export", str(tmp_path / "nothing-here"), "--format", "onnx,litert-int8"])
    assert r.exit_code == 2 and "pip install edgenas[litert]" in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "nothing-here").exists()


@pytest.mark.slow
def test_stale_edge_files_go_with_their_companions(demo_run, tmp_path):
    installed("openvino")
    run = tmp_path / "run"
    run.mkdir()
    for file in (RunDir.META, RunDir.ARCH, RunDir.WEIGHTS):
        (run / file).write_bytes((demo_run[0] / file).read_bytes())
    with torch_threads(1):
        export_run(run, formats=("onnx", "openvino"))
        assert (run / "export" / "model.bin").is_file() and (run / "export" / "model.xml.json").is_file()
        report = export_run(run, formats=("onnx",))
    gone = {p.name for p in report.removed}
    assert {"model.xml", "model.bin", "model.xml.json"} <= gone
    assert not any((run / "export" / n).exists() for n in gone)


@pytest.mark.slow
def test_bench_runtime_all_times_every_installed_runtime_in_one_table_and_the_report_shows_it(demo_run):
    from edgenas.deploy.report.run_report import write_report

    run, _ = demo_run
    # in a process of its own: with every runtime loaded into it, a SIGTERM later delivered to the same
    # process (tests/test_train_resume.py stops a training so) crashed it with a segmentation fault
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgenas.cli",
            "bench",
            str(run),
            "--runtime",
            "all",
            "--threads",
            "1",
            "--runs",
            "12",
            "--rounds",
            "3",
            "--warmup",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = r.stdout + r.stderr
    assert r.returncode == 0, output
    record = json.loads((run / "export" / layout.BENCH_ALL).read_text())
    timed = {row["runtime"] for row in record["rows"]}
    assert {FORMATS[n].runtime for n in INSTALLED} | {"onnxruntime-cpu", "torch-cpu"} <= timed
    assert "onnxruntime-cpu-int8" in record["skipped"] and "onnxruntime-cuda" in record["skipped"]
    assert record["threads"] == 1 and record["rounds"] == 3
    for row in record["rows"]:
        assert row["samples"] == 3 * 4 and 0 < row["p50_ms"] <= row["p90_ms"]  # 12 runs over 3 rounds: 4 a round
        assert (
            row["size_bytes"] >= (run / "export" / row["file"]).stat().st_size
            if row["runtime"] != "torch-cpu"
            else True
        )
        assert row["runtime"] in output
    assert [row["p50_ms"] for row in record["rows"]] == sorted(row["p50_ms"] for row in record["rows"])
    evaluated = [row for row in record["rows"] if row["accuracy"] is not None]  # the INT8 files: their gate wrote them
    assert {row["runtime"] for row in evaluated} >= {FORMATS[n].runtime for n in INSTALLED if n.endswith("-int8")}
    html = write_report(run)[0].read_text()
    assert "Which runtime is fastest here" in html and all(row["runtime"] in html for row in record["rows"])


@pytest.mark.slow
def test_bench_device_sends_the_edge_files_to_a_kit_server(demo_run, tmp_path):
    """`edgenas bench RUN_DIR --runtime R --device URL`: the .tflite and its metadata (its layout), the OpenVINO
    IR and the ncnn model with their weights go to the server."""
    installed("litert-int8")
    import subprocess

    from edgenas.deploy.export.exporter import _copy_kit

    run, _ = demo_run
    device = tmp_path / "device"
    device.mkdir()
    _copy_kit(device)
    (device / "token").write_text("edge-token-0123456789\n")
    server = subprocess.Popen(
        [sys.executable, "-I", "edgenas_kit.py", "serve", "--port", "0", "--token-file", "token", "--threads", "1"],
        cwd=device,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = server.stdout.readline()
        assert "listening on http://127.0.0.1:" in line, line + server.stderr.read()
        url = "http://127.0.0.1:" + line.split("127.0.0.1:")[1].split()[0]
        out = tmp_path / "device.json"
        r = CliRunner(env={"EDGENAS_DEVICE_TOKEN": "edge-token-0123456789"}).invoke(
            main, ["bench", str(run), "--runtime", "litert-int8", "--device", url, "--runs", "10", "--json", str(out)]
        )
        assert r.exit_code == 0, r.output
        record = kit.read_bench(out)
        assert record["runtime"] == "litert-int8" and record["model"].endswith("export/model.int8.tflite")
        assert record["model_sha256"] == kit.file_sha256(run / "export" / "model.int8.tflite")
        for name in ("openvino", "ncnn"):  # two files each: sent in one archive with the metadata
            if name not in INSTALLED:
                continue
            fmt = FORMATS[name]
            r = CliRunner(env={"EDGENAS_DEVICE_TOKEN": "edge-token-0123456789"}).invoke(
                main, ["bench", str(run), "--runtime", fmt.runtime, "--device", url, "--runs", "10", "--json", str(out)]
            )
            assert r.exit_code == 0, r.output
            record = kit.read_bench(out)
            assert record["runtime"] == fmt.runtime and record["model"].endswith(f"export/{fmt.file}")
            assert record["model_sha256"] == kit.file_sha256(run / "export" / fmt.file)
            assert record["input_shape"] == [1, 1, 8, 8]  # ncnn: from the metadata file sent along
    finally:
        server.kill()
        server.wait(timeout=30)
