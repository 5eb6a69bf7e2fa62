"""The fast protocol's schedule and learning, the graph step's arithmetic on the CPU, and the CUDA paths."""

from __future__ import annotations

import dataclasses
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import subset_train
from synthetic import synthetic_dataset
from torch import nn

from edgenas.config.plan import TrainPlan
from edgenas.errors import ProfileError
from edgenas.search.space import Arch
from edgenas.training.augment import BatchAugment
from edgenas.training.cuda_graphs import GraphedTrainer
from edgenas.training.data import Split, load_dataset
from edgenas.training.network import build_model
from edgenas.training.schedule import schedule_for
from edgenas.training.trainer import (
    _EagerLoop,
    _Step,
    accuracy,
    fit,
    train_candidate,
)

CPU = torch.device("cpu")
SMALL = Arch.plain(4, 16)
FAST = TrainPlan(protocol="fast", crop_padding=1)  # 8x8 digits: a 4-pixel shift would hide half the digit


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_fast_schedule_is_scaled_lr_warmup_then_cosine():
    s = schedule_for(TrainPlan(protocol="fast"), n=5000, epochs=4)
    assert s.batch_size == 512 and s.starts == tuple(range(0, 4608, 512))  # whole batches only: 9 per epoch
    assert s.total_steps == 36 and s.warmup_steps == round(0.05 * 36) == 2
    assert s.peak_lr == pytest.approx(0.025 * 512 / 64)  # linear scaling from the reference lr at batch 64
    lrs = s.lrs()
    assert lrs[:3] == pytest.approx([0.1, 0.2, 0.2])  # linear warm-up to the peak, then the cosine starts at it
    assert all(a > b for a, b in zip(lrs[2:], lrs[3:]))  # then falls every step
    assert lrs[2 + 17] == pytest.approx(0.1)  # half way through the cosine: half the peak
    assert 0 < lrs[-1] < 0.002
    assert s.bn_momentum_power == 8.0


def test_fast_batch_is_capped_at_the_training_set():
    s = schedule_for(dataclasses.replace(FAST, warmup_fraction=0.0), n=300, epochs=2)
    assert (s.batch_size, s.starts, s.warmup_steps) == (300, (0,), 0)
    assert s.peak_lr == pytest.approx(0.025 * 300 / 64)
    assert s.lr(0) == pytest.approx(s.peak_lr)  # no warm-up: cosine from the first step


def test_reference_schedule_is_torch_cosine_annealing_per_epoch():
    s = schedule_for(TrainPlan(), n=1000, epochs=5)
    assert s.batch_size == 64 and len(s.starts) == 16 and s.warmup_steps == 0  # 15 full batches + one of 40
    assert schedule_for(TrainPlan(), n=129, epochs=1).starts == (0, 64)  # a lone last sample is dropped
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.025)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=5, eta_min=0.0)
    for epoch in range(5):
        assert [s.lr(epoch * 16 + k) for k in (0, 15)] == pytest.approx([opt.param_groups[0]["lr"]] * 2, abs=1e-12)
        opt.step()
        sched.step()


@pytest.mark.parametrize(
    "change",
    [{"warmup_fraction": 1.0}, {"warmup_fraction": -0.1}, {"fast_batch_size": 0}, {"warmup_fraction": float("nan")}],
)
def test_fast_plan_rejects_bad_values(change):
    with pytest.raises(ProfileError, match="is not allowed"):
        dataclasses.replace(FAST, **change)


def test_fast_protocol_learns_digits_well_above_chance(digits):
    lines = []
    model, result = train_candidate(
        SMALL, data=digits, epochs=10, plan=FAST, device=CPU, seed=0, on_epoch=lambda *a: lines.append(a)
    )
    assert result.status == "trained" and result.epochs == 10 and len(lines) == 10
    assert result.val_acc > 70.0 and result.train_acc > 50.0, result  # chance is 10 %
    assert lines[-1][2] < lines[0][2]
    assert accuracy(model, split=digits.test, data=digits, device=CPU) > 70.0
    _, again = train_candidate(SMALL, data=digits, epochs=10, plan=FAST, device=CPU, seed=0)
    assert (again.val_acc, again.loss) == (result.val_acc, result.loss)  # bit-repeatable on the CPU


def test_fast_scales_batchnorm_momentum_while_training_only(digits):
    torch.manual_seed(0)
    model = build_model(SMALL, 1, 10)
    bn = model.stem[1]
    seen = []
    bn.register_forward_pre_hook(lambda m, args: seen.append(m.momentum))
    fit(
        model,
        data=subset_train(digits, 512),
        epochs=1,
        plan=dataclasses.replace(FAST, fast_batch_size=256, recompute_bn=False),
        device=CPU,
        seed=0,
    )  # the recompute after training runs with momentum None
    assert seen and all(m == pytest.approx(1 - 0.9**4) for m in seen)  # batch 256 = 4 reference batches
    assert bn.momentum == 0.1


def _train_float64(digits, plan: TrainPlan, graph_code: bool, graph_plan: TrainPlan | None = None):
    """3 epochs of 300 digits in float64, through the graph step run eagerly (``graph_code``) or torch's
    SGD loop; ``graph_plan`` lets the graph step train under a (deliberately) different plan."""
    train = Split(digits.train.x[:300], digits.train.y[:300])  # reference: 4 batches of 64 and one of 44
    torch.manual_seed(0)
    model = build_model(SMALL, 1, 10).double().to(memory_format=torch.channels_last)
    params = list(model.parameters())
    sched = schedule_for(plan, len(train), 3)
    augment = BatchAugment(digits, crop_padding=1)
    used = graph_plan or plan
    step = _Step(
        model,
        head=None,
        loss_fn=F.cross_entropy,
        params=params,
        plan=used,
        train=train,
        augment=lambda x, g: augment(x, g).double(),
        gen=torch.Generator().manual_seed(5),
        device=CPU,
    )
    epochs = GraphedTrainer(step, sched, capture=False).epochs() if graph_code else _EagerLoop(step, sched).epochs()
    stats = [(float(loss) / seen, int(correct), seen) for loss, correct, seen in epochs]
    return stats, [p.detach().clone() for p in params]


# Measured (1 and 2 threads, both protocols): the two paths' float64 weights differ by at most 2.2e-16
# absolute (3e-13 relative) after the run; a momentum of 0.89, no clipping or a 10 % larger weight
# decay in the graph step move a weight by 1.2e-5 to 3.6e-2. The tolerances sit between, 5 orders of
# magnitude from each. In float32 the two summation orders legitimately drift by up to 3e-3 relative
# in single small weights over the same steps, which is why the comparison runs in float64.
F64_RTOL, F64_ATOL = 1e-8, 1e-10


def _plan(protocol: str) -> TrainPlan:
    base = FAST if protocol == "fast" else TrainPlan(crop_padding=1)
    return dataclasses.replace(base, protocol=protocol, fast_batch_size=128, grad_clip=0.5)  # 0.5: clipping acts


@pytest.mark.parametrize("protocol", ["reference", "fast"])
def test_graph_step_arithmetic_is_torch_sgd(digits, protocol):
    """The step the CUDA graph captures (foreach SGD on a device lr, device counters), run eagerly on
    the CPU in float64, trains as torch's SGD + clip_grad_norm_ + schedule do: same batches, same losses."""
    plan = _plan(protocol)
    (eager, w_eager), (graph, w_graph) = (_train_float64(digits, plan, code) for code in (False, True))
    assert [s[1:] for s in eager] == [s[1:] for s in graph]
    assert [s[0] for s in eager] == pytest.approx([s[0] for s in graph], rel=F64_RTOL)
    for a, b in zip(w_eager, w_graph):
        torch.testing.assert_close(a, b, rtol=F64_RTOL, atol=F64_ATOL)


@pytest.mark.parametrize("protocol", ["reference", "fast"])
@pytest.mark.parametrize("change", [{"momentum": 0.89}, {"grad_clip": 0.0}, {"weight_decay": 3.3e-4}])
def test_graph_step_comparison_catches_a_wrong_update(digits, protocol, change):
    """The tolerance above is tight enough to see a real arithmetic difference in the graph step."""
    plan = _plan(protocol)
    _, w_eager = _train_float64(digits, plan, False)
    _, w_graph = _train_float64(digits, plan, True, graph_plan=dataclasses.replace(plan, **change))
    assert not all(torch.allclose(a, b, rtol=F64_RTOL, atol=F64_ATOL) for a, b in zip(w_eager, w_graph))


def test_cpu_fit_is_not_graphed(digits):
    result = fit(build_model(SMALL, 1, 10), data=subset_train(digits, 256), epochs=1, plan=FAST, device=CPU, seed=0)
    assert result.graphed is False and result.images_per_s > 0


# --- CUDA (run on a GPU machine: pytest -m gpu) ---------------------------------------------------------


def _cuda_data(n_train: int):
    return synthetic_dataset("fashionmnist", n_train=n_train, n_test=1000, seed=0).to("cuda")


@pytest.mark.parametrize("protocol", ["reference", "fast"])
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_path_follows_the_eager_path(protocol):
    """Same seed, same data: the graphed steps give the eager path's loss trajectory within bf16 noise."""
    cuda = torch.device("cuda")
    data = _cuda_data(6000)  # 5400 train: reference 84 batches of 64 and one of 24; fast 10 batches of 512
    plan = TrainPlan(protocol=protocol)
    curves, results = [], []
    for graphs in (True, False):
        torch.manual_seed(0)
        model = build_model(Arch.plain(6, 32), 1, 10)
        losses = []
        r = fit(
            model,
            data=data,
            epochs=4,
            plan=dataclasses.replace(plan, cuda_graphs=graphs),
            device=cuda,
            seed=3,
            on_epoch=lambda e, n, loss, acc, s, losses=losses: losses.append(loss),
        )
        curves.append(losses)
        results.append(r)
    assert results[0].graphed and not results[1].graphed
    graphed, eager = curves
    assert all(math.isfinite(v) for v in graphed + eager)
    # same seed: same batches and augmentations, so only bf16 / cuDNN-algorithm noise separates them
    assert graphed[0] == pytest.approx(eager[0], rel=0.05), curves
    assert graphed == pytest.approx(eager, rel=0.08, abs=0.05), curves
    assert graphed[-1] < graphed[0] and eager[-1] < eager[0], curves


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fast_protocol_on_cuda():
    cuda = torch.device("cuda")
    data = _cuda_data(8000)
    model, result = train_candidate(
        Arch.plain(6, 32), data=data, epochs=5, plan=TrainPlan(protocol="fast"), device=cuda, seed=0
    )
    assert result.status == "trained" and result.val_acc > 30.0, result  # chance is 10 %
    assert model.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert model.stem[1].momentum == 0.1  # restored after training
    fitted = fit(
        build_model(Arch.plain(6, 32), 1, 10), data=data, epochs=1, plan=TrainPlan(protocol="fast"), device=cuda, seed=0
    )
    assert fitted.graphed and fitted.images_per_s > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_failed_graph_capture_trains_on_eagerly():
    """A loss that syncs with the host cannot be captured: a warning, then the same training, eagerly."""
    cuda = torch.device("cuda")
    data = _cuda_data(2000)

    def syncing_loss(logits, y):
        loss = F.cross_entropy(logits, y)
        return loss * (1.0 if loss.item() >= 0 else 1.0)  # .item() is not allowed while capturing

    torch.manual_seed(0)
    model = build_model(Arch.plain(4, 16), 1, 10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fit(model, data=data, epochs=2, plan=TrainPlan(), device=cuda, seed=0, loss_fn=syncing_loss)
    assert any("CUDA graph capture failed" in str(w.message) for w in caught), [str(w.message) for w in caught]
    assert result.status == "trained" and not result.graphed and math.isfinite(result.loss)
    assert torch.cuda.current_stream() == torch.cuda.default_stream()  # the capture stream was left
    assert accuracy(model, split=data.val, data=data, device=cuda) > 15.0
