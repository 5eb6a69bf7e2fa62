"""`edgenas train` checkpoints, stops on Ctrl-C/SIGTERM, resumes to the same weights, and keeps earlier weights."""

import json
import os
import random
import signal
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from conftest import CI_PROFILE, subset_train

from edgenas.cli import main
from edgenas.config.plan import TrainPlan
from edgenas.errors import TrainingStopped
from edgenas.run.final import train_final
from edgenas.run.rundir import RunDir
from edgenas.search.space import Arch
from edgenas.training.checkpoint import Checkpointing
from edgenas.training.data import load_dataset
from edgenas.training.network import build_model
from edgenas.training.trainer import fit

CPU = torch.device("cpu")
ARCH = Arch.plain(2, 4)
EPOCHS = 4

pytestmark = pytest.mark.usefixtures("one_thread")


def quiet(message: str) -> None:
    pass


def assert_same_weights(a, b):
    wa, wb = (torch.load(p, map_location="cpu", weights_only=True) for p in (a, b))
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


@pytest.fixture(scope="module")
def arch_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("arch") / "arch.json"
    path.write_text(json.dumps(ARCH.to_dict()))
    return path


@pytest.fixture(scope="module")
def uninterrupted(arch_file, tmp_path_factory):
    """A run directory trained for EPOCHS epochs without a stop."""
    out = tmp_path_factory.mktemp("whole") / "run"
    train_final(arch_file, profile=str(CI_PROFILE), out=str(out), epochs=EPOCHS, log=quiet)
    return out


# -- the trainer ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["reference", "fast"])
def test_fit_from_a_checkpoint_ends_as_an_uninterrupted_fit(protocol):
    data = subset_train(load_dataset("digits", seed=0), 192)
    plan = TrainPlan(protocol=protocol, batch_size=32, fast_batch_size=64, lr=0.05, crop_padding=1, cutout=0)

    def model():
        torch.manual_seed(3)
        return build_model(ARCH, 1, 10)

    whole = model()
    fit(whole, data=data, epochs=3, plan=plan, device=CPU, seed=7)
    saved = []
    first = model()
    fit(first, data=data, epochs=3, plan=plan, device=CPU, seed=7, checkpoint=Checkpointing(save=saved.append, every=1))
    assert [s["epoch"] for s in saved] == [1, 2]  # every epoch but the last
    for name, value in whole.state_dict().items():
        assert torch.equal(value, first.state_dict()[name]), name  # checkpointing changes nothing
    torch.manual_seed(12345)  # the global generators moved on: the checkpoint must bring them back
    again = model()
    result = fit(
        again,
        data=data,
        epochs=3,
        plan=plan,
        device=CPU,
        seed=7,
        checkpoint=Checkpointing(save=saved.append, state=saved[0]),
    )
    assert result.status == "trained" and result.epochs == 3
    for name, value in whole.state_dict().items():
        assert torch.equal(value, again.state_dict()[name]), name


def test_fit_asked_to_stop_writes_a_checkpoint_and_says_stopped():
    data = subset_train(load_dataset("digits", seed=0), 128)
    saved, epochs_seen = [], []
    result = fit(
        build_model(ARCH, 1, 10),
        data=data,
        epochs=5,
        plan=TrainPlan(crop_padding=1, cutout=0),
        device=CPU,
        seed=0,
        on_epoch=lambda e, *a: epochs_seen.append(e),
        checkpoint=Checkpointing(save=saved.append, stop=lambda: len(epochs_seen) >= 2),
    )
    assert result.status == "stopped" and result.epochs == 2 and [s["epoch"] for s in saved] == [2]
    state = saved[0]
    assert set(state["rng"]) == {"torch", "cuda", "numpy", "python"} and "generator" in state and "loop" in state


# -- edgenas train ------------------------------------------------------------------------------------
@pytest.mark.parametrize("signum, code, name", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")])
def test_stopped_in_process_then_resumed_is_bit_identical(arch_file, uninterrupted, tmp_path, signum, code, name):
    out = tmp_path / "run"
    before = (
        signal.getsignal(signal.SIGTERM),
        signal.getsignal(signal.SIGINT),
    )  # SIG_IGN where started in the background

    def stop_at_2(message):
        if f"epoch 2/{EPOCHS}" in message:
            os.kill(os.getpid(), signum)  # handled: the epoch ends, the checkpoint is written

    with pytest.raises(TrainingStopped) as stopped:
        train_final(arch_file, profile=str(CI_PROFILE), out=str(out), epochs=EPOCHS, log=stop_at_2)
    assert stopped.value.exit_code == code and str(stopped.value).startswith(f"{name}: ")
    assert f"after epoch 2 of {EPOCHS}" in str(stopped.value) and f"edgenas train {out} --resume" in str(stopped.value)
    assert (out / RunDir.CHECKPOINT).is_file() and not (out / RunDir.WEIGHTS).exists()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before  # the handlers given back

    lines = []
    summary = train_final(out, resume=True, log=lines.append)
    assert "from the checkpoint after epoch 2" in lines[0] and summary["epochs"] == EPOCHS
    assert not (out / RunDir.CHECKPOINT).exists()  # superseded by model.pt
    assert_same_weights(out / RunDir.WEIGHTS, uninterrupted / RunDir.WEIGHTS)
    whole = json.loads((uninterrupted / RunDir.SUMMARY).read_text())["final_training"]
    assert summary["test_acc"] == whole["test_acc"] and summary["val_acc"] == whole["val_acc"]


@pytest.mark.slow
def test_killed_at_a_random_epoch_then_resumed_is_bit_identical(arch_file, uninterrupted, tmp_path):
    # the line of epoch k is logged before epoch k's checkpoint is written: kill on epoch k + 1's line,
    # when epoch k's checkpoint is surely on disk (and k + 1's may be)
    out, kill_after = tmp_path / "run", random.randint(1, EPOCHS - 2)
    cmd = [
        sys.executable,
        "-m",
        "edgenas.cli",
        "train",
        str(arch_file),
        "--profile",
        str(CI_PROFILE),
        "--out",
        str(out),
        "--epochs",
        str(EPOCHS),
        "--checkpoint-every",
        "1",
        "--threads",
        "1",
    ]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        for line in proc.stderr:
            if f"epoch {kill_after + 1}/{EPOCHS}" in line:
                break
        proc.kill()  # SIGKILL: no handler runs; the periodic checkpoint is all there is
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert not (out / RunDir.WEIGHTS).exists(), f"killed after epoch {kill_after}"
    held = RunDir(out).checkpoint()
    assert held is not None and kill_after <= held["state"]["epoch"] <= kill_after + 1, (
        f"killed after epoch {kill_after}"
    )
    r = CliRunner().invoke(main, ["train", str(out), "--resume", "-q"])
    assert r.exit_code == 0, r.output
    assert_same_weights(out / RunDir.WEIGHTS, uninterrupted / RunDir.WEIGHTS)


@pytest.mark.slow
def test_sigterm_stops_the_cli_with_a_line_saying_how_to_resume(arch_file, tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "edgenas.cli",
        "train",
        str(arch_file),
        "--profile",
        str(CI_PROFILE),
        "--out",
        str(out),
        "--epochs",
        "50",
        "--checkpoint-every",
        "0",
    ]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "epoch 1/50" in line:
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 143, "".join(seen) + rest
    last = rest.strip().splitlines()[-1]
    assert last.startswith("edgenas: error: SIGTERM: training stopped after epoch ") and last.endswith(
        f"continue it with `edgenas train {out} --resume`"
    ), rest
    assert "Traceback" not in rest and RunDir(out).checkpoint() is not None


def test_resume_refusals_name_what_to_do(arch_file, tmp_path):
    out = tmp_path / "run"
    runner = CliRunner()
    r = runner.invoke(main, ["train", str(arch_file), "--profile", str(CI_PROFILE), "--out", str(out), "--epochs", "1"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["train", str(out), "--resume"])
    assert r.exit_code == 2 and "holds no unfinished training" in r.output and "without --resume" in r.output
    r = runner.invoke(main, ["train", str(arch_file), "--resume"])
    assert r.exit_code == 2 and "is not a run directory" in r.output

    RunDir(out).save_checkpoint(
        {
            "arch": str(ARCH),
            "epochs": 3,
            "seed": 0,
            "threads": 1,
            "device": "cpu",
            "profile": RunDir(out).meta.profile.to_dict(),
            "state": {"epoch": 1},
        }
    )
    r = runner.invoke(main, ["train", str(out)])
    assert r.exit_code == 2 and "holds an unfinished training (1 of 3 epochs" in r.output and "--resume" in r.output
    for flag, value, given in (("--epochs", "5", "3"), ("--threads", "2", "1"), ("--seed", "4", "0")):
        r = runner.invoke(main, ["train", str(out), "--resume", flag, value])
        assert r.exit_code == 2, r.output
        assert (
            f"{flag} {value}:" in r.output
            and f"was started with {given}" in r.output
            and f"leave {flag} out" in r.output
        )
    (out / RunDir.CHECKPOINT).write_bytes(b"not a checkpoint")
    r = runner.invoke(main, ["train", str(out), "--resume"])
    assert r.exit_code == 2 and "cannot be read" in r.output and "delete it" in r.output


def test_training_again_keeps_the_earlier_weights_and_their_figures(arch_file, uninterrupted, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    before = (run / RunDir.WEIGHTS).read_bytes()
    figures = json.loads((run / RunDir.SUMMARY).read_text())["final_training"]
    lines = []
    summary = train_final(run, epochs=1, log=lines.append)
    assert (run / "model.1.pt").read_bytes() == before and (run / RunDir.WEIGHTS).read_bytes() != before
    assert summary["kept_earlier_weights"] == "model.1.pt"
    assert any(f"kept as {run / 'model.1.pt'}" in line for line in lines)
    earlier = json.loads((run / RunDir.SUMMARY).read_text())["earlier_models"]
    assert earlier == [{"weights": "model.1.pt", **figures}]
    train_final(run, epochs=1, log=quiet)
    assert (run / "model.1.pt").read_bytes() == before and (run / "model.2.pt").is_file()
    assert [e["weights"] for e in json.loads((run / RunDir.SUMMARY).read_text())["earlier_models"]] == [
        "model.1.pt",
        "model.2.pt",
    ]


def test_the_cuda_graph_loop_resumes_from_its_state_on_the_cpu():
    """GraphedTrainer's state (momentum buffers, global step) with the parameters and the generator: run
    eagerly on the CPU (capture=False), 1 epoch + a restored trainer for 2 more = 3 epochs straight."""
    import torch.nn.functional as F

    from edgenas.training.augment import BatchAugment
    from edgenas.training.cuda_graphs import GraphedTrainer
    from edgenas.training.schedule import schedule_for
    from edgenas.training.trainer import _Step

    digits = load_dataset("digits", seed=0)
    data = subset_train(digits, 192)
    plan = TrainPlan(protocol="fast", fast_batch_size=64, lr=0.05, crop_padding=1, cutout=0)
    sched = schedule_for(plan, len(data.train), 3)

    def trainer():
        torch.manual_seed(0)
        model = build_model(ARCH, 1, 10).to(memory_format=torch.channels_last)
        step = _Step(
            model,
            head=None,
            loss_fn=F.cross_entropy,
            params=list(model.parameters()),
            plan=plan,
            train=data.train,
            augment=BatchAugment(digits, crop_padding=1),
            gen=torch.Generator().manual_seed(5),
            device=CPU,
        )
        return model, step, GraphedTrainer(step, sched, capture=False)

    whole, _, loop = trainer()
    list(loop.epochs())
    first, step, loop = trainer()
    next(iter(loop.epochs()))
    saved = {
        "model": {k: v.clone() for k, v in first.state_dict().items()},
        "loop": loop.state_dict(),
        "gen": step.gen.get_state(),
    }
    again, step, loop = trainer()
    again.load_state_dict(saved["model"])
    loop.load_state_dict(saved["loop"])
    step.gen.set_state(saved["gen"])
    assert len(list(loop.epochs(start=1))) == 2
    for name, value in whole.state_dict().items():
        assert torch.equal(value, again.state_dict()[name]), name
