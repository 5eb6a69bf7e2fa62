"""The search end to end on digits: run directory, resume after SIGKILL, the CLI's errors."""

import json
import os
import signal
import subprocess
import time

import pytest
import torch
from click.testing import CliRunner
from conftest import discover_cmd

import edgenas
from edgenas.cli import main
from edgenas.run.loading import load_run_model
from edgenas.run.rundir import RunDir
from edgenas.search.space import Arch, count_params


def _discover(profile, out, *extra, timeout=600):
    cmd = discover_cmd(profile, out, *extra)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "full"
    r = _discover(os.path.join(os.path.dirname(__file__), "data", "profiles", "ci.toml"), out)
    assert r.returncode == 0, r.stderr
    return out, r


@pytest.mark.slow
def test_run_directory_contents(finished_run):
    out, r = finished_run
    for name in ("run.json", "journal.jsonl", "arch.json", "summary.json", "model.pt"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    arch = Arch.from_dict(json.loads((out / "arch.json").read_text()))
    assert summary["arch"] == arch.to_dict()
    assert summary["params"] == count_params(arch, 1, 10)
    for key in (
        "macs",
        "val_acc",
        "test_acc",
        "discovered_epochs",
        "candidates_trained",
        "search_seconds",
        "device",
        "versions",
    ):
        assert key in summary, key
    assert summary["test_acc"] > 30  # 10 classes: chance is 10 %
    journal = RunDir(out).journal()
    assert len(journal) == summary["candidates"] and {r["stage"] for r in journal} == {
        "depth",
        "width",
        "ops",
        "kernels",
    }
    # progress on stderr names stage, candidate number, architecture, epoch, accuracy and elapsed time
    assert "[depth #1] d2-w12-ss-33 e2: epoch 1/2" in r.stderr and "elapsed" in r.stderr and "val acc" in r.stderr
    state = torch.load(out / "model.pt", weights_only=True)
    assert load_run_model(RunDir(out)).state_dict().keys() == state.keys()


@pytest.mark.slow
def test_resume_after_sigkill_mid_candidate_ends_at_the_same_arch(finished_run, ci_profile, tmp_path):
    full, _ = finished_run
    out = tmp_path / "killed"
    cmd = discover_cmd(ci_profile, out)
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    killed_in = None
    for line in proc.stderr:  # kill inside the first epoch of the 4th candidate: it is in flight
        if line.startswith("[width #4]") and "epoch 1/" in line:
            proc.send_signal(signal.SIGKILL)
            killed_in = line
            break
        assert time.monotonic() < deadline
    proc.wait()
    assert killed_in and proc.returncode == -signal.SIGKILL
    done_before = len(RunDir(out).journal())
    assert done_before == 3 and not (out / "arch.json").exists()

    refused = _discover(ci_profile, out)
    assert (
        refused.returncode == 2
        and "already holds a search; continue it with --resume, or choose another --out" in refused.stderr
    )

    resumed = _discover(ci_profile, out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stderr.count("from the journal") == done_before
    assert json.loads((out / "arch.json").read_text()) == json.loads((full / "arch.json").read_text())

    def keys(d):
        return [(r["key"], r["acc"]) for r in RunDir(d).journal()]

    assert keys(out) == keys(full)


@pytest.mark.slow
def test_python_api(tmp_path, ci_profile):
    summary = edgenas.discover(str(ci_profile), out=tmp_path / "api", device="cpu", log=lambda m: None)
    assert summary["run_dir"] == str(tmp_path / "api") and summary["test_acc"] > 30
    model = edgenas.build_model(edgenas.Arch.from_dict(summary["arch"]), 1, 10)
    assert sum(p.numel() for p in model.parameters()) == summary["params"]


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--dataset", "mnist"], "unknown dataset 'mnist'"),
        (["--dataset", "cifar10", "--data-dir", "/nonexistent/edgenas"], "/nonexistent/edgenas"),
        (["--device", "tpu"], "Invalid value for '--device'"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(tmp_path, ci_profile, args, needle):
    r = CliRunner().invoke(main, ["discover", "--profile", str(ci_profile), "--out", str(tmp_path / "o"), *args])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgenas: error:") and needle in lines[0]
    assert not (tmp_path / "o").exists()


def test_cli_cuda_without_gpu(tmp_path, ci_profile):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    r = CliRunner().invoke(
        main, ["discover", "--profile", str(ci_profile), "--out", str(tmp_path / "o"), "--device", "cuda"]
    )
    assert r.exit_code == 2 and "no CUDA device" in r.output


@pytest.mark.slow
def test_train_command_retrains_a_run(finished_run):
    out, _ = finished_run
    r = CliRunner().invoke(main, ["train", str(out), "--epochs", "1", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_training"]["epochs"] == 1 and 0 <= summary["final_training"]["test_acc"] <= 100


def test_train_command_on_a_bare_arch_json(tmp_path, ci_profile):
    (tmp_path / "arch.json").write_text(Arch.plain(2, 4).to_json())
    r = CliRunner().invoke(
        main,
        [
            "train",
            str(tmp_path / "arch.json"),
            "--profile",
            str(ci_profile),
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "run"),
            "--device",
            "cpu",
        ],
    )
    assert r.exit_code == 0, r.output
    assert RunDir(tmp_path / "run").arch() == Arch.plain(2, 4) and (tmp_path / "run" / "model.pt").is_file()


@pytest.mark.gpu
def test_discover_on_cuda(tmp_path, ci_profile):
    cmd = discover_cmd(ci_profile, tmp_path / "g", device="cuda")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "g" / "summary.json").read_text())["device"].startswith("cuda")
