"""The CPU thread policy of training: one thread unless a step is big, overridable, recorded, kept on resume."""

import dataclasses
import json

import pytest
import torch
from click.testing import CliRunner
from conftest import CI_PROFILE, make_meta, subset_train, torch_threads

from edgenas.cli import main
from edgenas.config.plan import TrainPlan
from edgenas.config.profile import load_profile
from edgenas.errors import ParamError, ProfileError
from edgenas.run.discover import run_threads
from edgenas.run.meta import RunMeta
from edgenas.run.rundir import RunDir
from edgenas.search.space import Arch, count_macs
from edgenas.training.data import load_dataset
from edgenas.training.network import build_model
from edgenas.training.tasks import task_for
from edgenas.training.threads import (
    SHARED_STEP_MACS,
    check_threads,
    plan_threads,
    policy_threads,
    step_macs,
    training_threads,
)
from edgenas.training.trainer import fit, train_candidate

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


SMALL = Arch.plain(2, 8)
PLAN = TrainPlan(batch_size=128, lr=0.05, crop_padding=1, cutout=0)


def test_policy_is_one_thread_below_a_big_step_and_every_core_from_it():
    assert policy_threads(SHARED_STEP_MACS - 1, cores=16) == 1
    assert policy_threads(SHARED_STEP_MACS, cores=16) == 16
    assert step_macs(1000, 64) == 3 * 1000 * 64  # forward, and the backward's two gradients
    assert training_threads(0, SHARED_STEP_MACS, cores=4) == 4 and training_threads(3, 0, cores=4) == 3
    for bad in (-1, True, 2.0, "2", 5000):
        with pytest.raises(ValueError, match="from 0"):
            check_threads(bad)


def test_the_policy_reads_the_step_of_the_plans_batch():
    tiny_first = Arch.plain(10, 64)  # the tiny space's first candidate at 32x32x3: ~9.4 G MACs a step at batch 64
    macs = count_macs(tiny_first, in_channels=3, num_classes=10, input_size=(32, 32))
    assert plan_threads(TrainPlan(), forward_macs=macs, train_images=50_000, cores=8) == 1
    assert (
        plan_threads(TrainPlan(batch_size=256), forward_macs=macs, train_images=50_000, cores=8) == 8
    )  # 37.7 G MACs a step
    assert (
        plan_threads(TrainPlan(batch_size=256), forward_macs=macs, train_images=64, cores=8) == 1
    )  # a batch never exceeds the set
    assert plan_threads(TrainPlan(threads=3), forward_macs=macs, train_images=50_000, cores=8) == 3


def test_profile_setting_is_checked(tmp_path):
    with pytest.raises(ProfileError, match=r"train.threads"):
        TrainPlan(threads=-1)
    path = tmp_path / "p.toml"
    path.write_text("[train]\nthreads = 2\n")
    assert load_profile(str(path)).train.threads == 2


def test_fit_trains_with_its_threads_and_restores_them(digits):
    seen = []
    with torch_threads(2):
        fit(
            build_model(SMALL, 1, 10),
            data=subset_train(digits, 256),
            epochs=2,
            plan=PLAN,
            device=CPU,
            seed=0,
            threads=1,
            on_epoch=lambda *a: seen.append(torch.get_num_threads()),
        )
        assert seen == [1, 1] and torch.get_num_threads() == 2


@pytest.mark.parametrize("plan_threads_, inside", [(0, 1), (2, 2)])
def test_train_candidate_applies_the_policy_or_the_plans_count(digits, plan_threads_, inside):
    seen = []
    with torch_threads(2 if inside == 1 else 1):
        train_candidate(
            SMALL,
            data=subset_train(digits, 256),
            epochs=1,
            plan=dataclasses.replace(PLAN, threads=plan_threads_),
            device=CPU,
            seed=0,
            on_epoch=lambda *a: seen.append(torch.get_num_threads()),
        )
    assert seen == [inside]


def test_run_threads_explicit_profile_policy_and_the_runs_own(digits, tmp_path):
    demo, task = load_profile("demo"), task_for("classify")
    assert (
        run_threads(demo, task=task, data=digits, threads=None, where=tmp_path) == 1
    )  # demo nets are tiny: the policy's one thread
    assert run_threads(demo, task=task, data=digits, threads=3, where=tmp_path) == 3
    with_two = dataclasses.replace(demo, train=dataclasses.replace(demo.train, threads=2))
    assert run_threads(with_two, task=task, data=digits, threads=None, where=tmp_path) == 2
    assert (
        run_threads(with_two, task=task, data=digits, threads=0, where=tmp_path) == 1
    )  # 0: the policy, over the profile
    assert (
        run_threads(demo, task=task, data=digits, threads=None, stored=2, where=tmp_path) == 2
    )  # a resume keeps the run's own
    assert run_threads(demo, task=task, data=digits, threads=2, stored=2, where=tmp_path) == 2
    with pytest.raises(ParamError, match=r"searched with 2 CPU thread\(s\).*resume without \{?threads"):
        run_threads(demo, task=task, data=digits, threads=1, stored=2, where=tmp_path)


def test_run_json_records_the_threads_and_reads_them_back():
    meta = dataclasses.replace(make_meta(), threads=2)
    assert meta.to_dict()["threads"] == 2 and RunMeta.from_dict(meta.to_dict()).threads == 2
    older = make_meta().to_dict()
    assert "threads" not in older and RunMeta.from_dict(older).threads is None
    assert meta.same_run(make_meta()) is None  # the count is checked on its own, with its own message


def test_resume_with_another_thread_count_is_refused(tmp_path):
    out = tmp_path / "run"
    RunDir.start(out, dataclasses.replace(make_meta(load_profile(str(CI_PROFILE))), threads=2), resume=False)
    before = (out / RunDir.META).read_bytes()
    r = CliRunner().invoke(
        main,
        ["discover", "--profile", str(CI_PROFILE), "--out", str(out), "--device", "cpu", "--resume", "--threads", "1"],
    )
    assert r.exit_code == 2, r.output
    assert "--threads 1:" in r.output and "searched with 2 CPU thread(s)" in r.output and "Traceback" not in r.output
    assert (out / RunDir.META).read_bytes() == before and not (out / RunDir.JOURNAL).exists()


@pytest.mark.slow
def test_a_search_records_its_threads(budget_run):
    run, stderr = budget_run
    assert json.loads((run / RunDir.META).read_text())["threads"] == 1  # the CI nets are tiny: one thread
    assert json.loads((run / RunDir.SUMMARY).read_text())["threads"] == 1
    assert "(1 CPU thread)" in stderr
