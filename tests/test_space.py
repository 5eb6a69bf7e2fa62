import json

import pytest
import torch
from conftest import SEARCHLOGS
from torch import nn

from edgenas.search.replay import dataset_shape
from edgenas.search.space import Arch, count_macs, count_params, load_arch
from edgenas.training.network import build_model

ARCHS = [
    Arch.plain(10, 64),
    Arch.plain(3, 8),
    Arch(5, 13, (1, 0, 1, 0, 1), (3, 5, 7, 3, 5)),
    Arch(7, 9, (0, 1, 0, 0, 1, 1, 0), (7, 7, 3, 5, 3, 5, 3)),
]


def test_reference_example_count():
    assert count_params(Arch.plain(10, 64), 1, 10) == 307_146


@pytest.mark.parametrize("arch", ARCHS, ids=str)
@pytest.mark.parametrize("cin,ncls", [(1, 10), (3, 100)])
def test_count_params_equals_model(arch, cin, ncls):
    model = build_model(arch, cin, ncls)
    assert count_params(arch, cin, ncls) == sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("path", SEARCHLOGS, ids=lambda p: p.stem)
def test_params_match_every_logged_record(path):
    log = json.loads(path.read_text())
    cin, ncls = dataset_shape(log["args"])
    for rec in log["candidates"] + [log["final"]]:
        assert count_params(Arch.from_dict(rec), cin, ncls) / 1e6 == rec["params_mb"]


def _hooked_macs(model, x):
    total = 0

    def hook(module, inp, out):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            total += out.numel() // out.shape[0] * k
        elif isinstance(module, nn.Linear):
            total += module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    model.eval()(x)
    for h in handles:
        h.remove()
    return total


@pytest.mark.parametrize("arch", ARCHS, ids=str)
@pytest.mark.parametrize("size", [(8, 8), (28, 28), (32, 32), (17, 23)])
def test_count_macs_equals_hooked_forward(arch, size):
    model = build_model(arch, 3, 10)
    assert count_macs(arch, in_channels=3, num_classes=10, input_size=size) == _hooked_macs(
        model, torch.zeros(1, 3, *size)
    )


def test_forward_and_features_shapes():
    arch = Arch.plain(6, 8)
    model = build_model(arch, 1, 7).eval()
    x = torch.randn(5, 1, 28, 28)
    assert model(x).shape == (5, 7)
    assert model.features(x).shape == (5, 32)  # width doubles twice


def test_layout_strides_and_widths():
    model = build_model(Arch.plain(9, 4), 3, 10)
    strides = [layer[1].stride[0] for layer in model.layers]
    assert strides == [1, 1, 1, 2, 1, 1, 2, 1, 1]
    assert model.stem[0].out_channels == 8 and model.layers[0][-1].num_features == 4


def test_json_round_trip(tmp_path):
    arch = ARCHS[2]
    assert Arch.from_json(arch.to_json()) == arch
    (tmp_path / "arch.json").write_text(json.dumps({"arch": arch.to_dict(), "params": 1}))
    assert load_arch(tmp_path / "arch.json") == arch


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(depth=0, width=4, ops=(), kernels=()), "depth"),
        (dict(depth=2, width=4, ops=(0,), kernels=(3, 3)), "one op and one kernel"),
        (dict(depth=1, width=4, ops=(2,), kernels=(3,)), "ops"),
        (dict(depth=1, width=4, ops=(0,), kernels=(4,)), "kernels"),
    ],
)
def test_invalid_arch_raises_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Arch(**kwargs)
    with pytest.raises(ValueError, match="missing the key"):
        Arch.from_dict({"depth": 1})
