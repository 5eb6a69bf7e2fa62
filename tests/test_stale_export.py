"""An export made before `edgenas train` replaced model.pt is stale: `edgenas bench RUN_DIR` warns,
the kit's `check` fails (exit 1), where each finds the files that record the weights."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from conftest import torch_threads
from test_export import ARCH, make_run

from edgenas.cli import main
from edgenas.deploy.bench import stale_export
from edgenas.deploy.export.exporter import export_run
from edgenas.device_kit import edgenas_kit as kit
from edgenas.training.network import build_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("runs") / "digits")
    with torch_threads(1):
        export_run(run.path, parity_samples=32)
    return run


def _bench(target) -> Result:
    return CliRunner().invoke(main, ["bench", str(target), "--threads", "1", "--warmup", "0", "--runs", "3"])


def test_every_export_file_records_the_weights(exported):
    weights = kit.file_sha256(exported.path / "model.pt")
    export = exported.path / "export"
    assert kit.load_samples(export / "samples.npz").weights_sha256 == weights
    assert json.loads((export / "parity.json").read_text())["weights_sha256"] == weights
    with kit.open_runner(export / "model.onnx", threads=1) as runner:
        assert runner.weights_sha256 == weights


def test_retraining_makes_the_export_stale(exported, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(exported.path, run)
    assert stale_export(run) is None and kit.check_export(run / "export", threads=1)["passed"]
    r = _bench(run)
    assert r.exit_code == 0 and "warning" not in r.output, r.output

    torch.manual_seed(7)  # what `edgenas train RUN_DIR` does to model.pt: new weights
    torch.save(build_model(ARCH, 1, 10).state_dict(), run / "model.pt")

    for target in (run, run / "export" / "model.onnx"):
        r = _bench(target)
        assert r.exit_code == 0, r.output
        warnings = [line for line in r.output.splitlines() if line.startswith("edgenas: warning:")]
        assert len(warnings) == 1 and "is stale: model.onnx and parity.json record other weights" in warnings[0]
        assert f"run `edgenas export {run}` again" in warnings[0] and "p50" in r.output
    assert kit.main(["check", str(run / "export"), "--threads", "1"]) == 1
    out = capsys.readouterr().out
    assert "FAIL: stale export" in out and str(run / "model.pt") in out and "edgenas export" in out

    device = tmp_path / "device" / "model"  # the same export copied to a device: no model.pt to compare
    shutil.copytree(run / "export", device)
    assert kit.check_export(device, threads=1)["passed"]
    with torch_threads(1):
        export_run(run, parity_samples=32)  # re-exported: current again
    assert stale_export(run) is None and kit.check_export(run / "export", threads=1)["passed"]


def test_torch_runtimes_and_foreign_files_are_never_stale(exported, tmp_path):
    assert stale_export(exported.path, "torch-cpu") is None  # benchmarks model.pt itself
    elsewhere = tmp_path / "model.onnx"
    shutil.copy(exported.path / "export" / "model.onnx", elsewhere)
    assert stale_export(elsewhere) is None
    assert np.isfinite(kit.bench_model(elsewhere, threads=1, warmup=0, runs=2)["p50_ms"])
