"""The trainer: learns digits, is bit-repeatable on the CPU, fails cleanly on a non-finite loss."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import subset_train
from synthetic import synthetic_dataset
from torch import nn

from edgenas.config.plan import TrainPlan
from edgenas.errors import ProfileError, UserInputError
from edgenas.search.space import Arch
from edgenas.training.augment import normalize
from edgenas.training.data import load_dataset
from edgenas.training.network import build_model
from edgenas.training.trainer import (
    TrainResult,
    accuracy,
    fit,
    select_device,
    train_candidate,
)

CPU = torch.device("cpu")
SMALL = Arch.plain(4, 16)
PLAN = TrainPlan(crop_padding=1)  # 8x8 digits: a 4-pixel shift would hide half the digit


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_trainplan_defaults_are_the_reference_protocol():
    p = TrainPlan()
    assert (p.protocol, p.batch_size, p.lr, p.momentum, p.weight_decay, p.grad_clip) == (
        "reference",
        64,
        0.025,
        0.9,
        3e-4,
        5.0,
    )
    assert (p.crop_padding, p.cutout, p.final_epochs) == (4, 16, 600)


def test_learns_digits_well_above_chance(digits):
    lines = []
    model, result = train_candidate(
        SMALL, data=digits, epochs=4, plan=PLAN, device=CPU, seed=0, on_epoch=lambda *a: lines.append(a)
    )
    assert isinstance(result, TrainResult) and result.status == "trained" and result.epochs == 4
    assert result.val_acc > 70.0 and result.train_acc > 50.0  # chance is 10 %
    assert [line[:2] for line in lines] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert lines[-1][2] < lines[0][2]  # the loss fell
    assert result.images_per_s > 0 and result.seconds > 0
    assert accuracy(model, split=digits.test, data=digits, device=CPU) > 70.0


@pytest.mark.parametrize("threads", [1, 2])
def test_same_seed_same_weights_and_accuracy(digits, threads):
    data = subset_train(digits, 320)
    m1, r1 = train_candidate(SMALL, data=data, epochs=2, plan=PLAN, device=CPU, seed=11, threads=threads)
    m2, r2 = train_candidate(SMALL, data=data, epochs=2, plan=PLAN, device=CPU, seed=11, threads=threads)
    _, r3 = train_candidate(SMALL, data=data, epochs=2, plan=PLAN, device=CPU, seed=12, threads=threads)
    assert r1.val_acc == r2.val_acc and r1.train_acc == r2.train_acc and r1.loss == r2.loss
    for (name, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), name
    assert r3.loss != r1.loss


def test_non_finite_loss_fails_the_training(digits):
    model = build_model(SMALL, 1, 10)
    with torch.no_grad():
        model.classifier.bias[0] = float("inf")  # a profile cannot ask for a diverging lr any more
    result = fit(model, data=subset_train(digits, 320), epochs=5, plan=PLAN, device=CPU, seed=0)
    assert result.status == "failed" and result.epochs == 1 and not math.isfinite(result.loss)  # stopped at once


def test_plan_settings_are_checked_where_the_plan_is_made():
    with pytest.raises(ProfileError, match=r"train.protocol = 'turbo' is not allowed; choose one of reference, fast"):
        TrainPlan(protocol="turbo")
    with pytest.raises(ProfileError, match=r"train.lr = inf is not allowed; it must be a finite number > 0"):
        TrainPlan(lr=float("inf"))


class _CosineHead(nn.Module):
    """A stand-in for a margin head: (features, labels) -> logits, with its own parameters."""

    def __init__(self, dim: int, classes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(classes, dim) * 0.01)

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return 16.0 * nn.functional.normalize(features) @ nn.functional.normalize(self.weight).t()


def test_fit_trains_a_separate_head(digits):
    torch.manual_seed(0)
    model = build_model(SMALL, 1, 10)
    head = _CosineHead(model.classifier.in_features, 10)
    before = head.weight.detach().clone()
    calls = []

    def loss_fn(logits, y):
        calls.append(logits.shape)
        return nn.functional.cross_entropy(logits, y)

    result = fit(
        model, data=subset_train(digits, 640), epochs=2, plan=PLAN, device=CPU, seed=0, head=head, loss_fn=loss_fn
    )
    assert result.status == "trained" and result.train_acc > 20.0
    assert not torch.equal(before, head.weight) and calls and calls[0][1] == 10


def test_select_device():
    assert select_device("cpu") == CPU
    assert select_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UserInputError, match="device='tpu': unknown device; choose one of: cpu, cuda") as info:
        select_device("tpu")
    assert info.value.exit_code == 2
    if not torch.cuda.is_available():
        with pytest.raises(UserInputError, match="device=.cuda.: no CUDA device is visible; use cpu"):
            select_device("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_trains_on_cuda_with_bf16_and_channels_last():
    cuda = torch.device("cuda")
    data = synthetic_dataset("fashionmnist", n_train=4000, n_test=1000, seed=0).to(cuda)
    assert data.train.x.is_cuda
    model, result = train_candidate(Arch.plain(6, 32), data=data, epochs=6, plan=TrainPlan(), device=cuda, seed=0)
    assert result.status == "trained" and result.val_acc > 30.0, result  # chance is 10 %
    assert next(model.parameters()).is_cuda
    assert model.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = normalize(data.val.x[:8], data.mean, data.std).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert model(x).dtype == torch.bfloat16
    assert accuracy(model, split=data.test, data=data, device=cuda) > 30.0
