"""The runtime plug-ins: every runtime has one; each available one converts a network, runs it and agrees with PyTorch."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from conftest import slow_engines_marked

from edgenas.config.profile import LATENCY_FROM, Budget
from edgenas.config.runtimes import RUNTIMES
from edgenas.errors import MissingDependency, ParamError
from edgenas.runtime import cost
from edgenas.runtime.backend import (
    BACKENDS,
    Backend,
    backend_of,
    is_available,
    module_runner,
)
from edgenas.runtime.latency import random_network
from edgenas.runtime.target import Target
from edgenas.search.space import Arch

ARCH, CHW = Arch(3, 8, (0, 1, 0), (3, 5, 3)), (3, 16, 16)
# PyTorch vs a runtime, logits of a random network of order one: fp32 rounding differs by kernel order;
# INT8 is checked for agreeing top-1 on most images only (its error is the quantisation's).
FP32_ATOL = {"fp32": 1e-4, "fp16": 5e-2}


def test_every_runtime_has_a_backend_with_the_tables_facts():
    assert list(BACKENDS) == list(RUNTIMES)
    for name, backend in BACKENDS.items():
        row = RUNTIMES[name]
        assert (
            backend.name,
            backend.engine,
            backend.suffix,
            backend.needs_gpu,
            backend.install,
            backend.precision,
        ) == (row.name, row.engine, row.suffix, row.needs_gpu, row.install, row.precision)
        assert backend.precision in ("fp32", "fp16", "int8")
        for member in ("available", "version", "convert", "open"):
            assert callable(getattr(backend, member)), (name, member)


def test_an_unknown_runtime_names_the_allowed_ones():
    with pytest.raises(
        ParamError,
        match=r"runtime='tflite': choose one of onnxruntime-cpu, .*torch-cuda, litert-cpu, .*ncnn-cpu, "
        r"tflm-int8$",
    ):
        backend_of("tflite")


def test_what_a_runtime_cannot_do_is_declared_and_refused_in_one_line(tmp_path):
    """TFLM's row: INT8 only, one thread, converted by litert-int8, no latency here, not in the kit."""
    from edgenas.config.profile import parse_profile
    from edgenas.config.runtimes import KIT_RUNTIMES, TIMED_RUNTIMES
    from edgenas.errors import ProfileError

    tflm = backend_of("tflm-int8")
    assert (tflm.precision, tflm.fixed_threads, tflm.converts_via, tflm.in_kit) == ("int8", 1, "litert-int8", False)
    assert "tflm-int8" not in TIMED_RUNTIMES and "tflm-int8" not in KIT_RUNTIMES and "litert-int8" in TIMED_RUNTIMES
    with pytest.raises(ParamError, match=r"runtime='tflm-int8': TFLM's reference kernels on this machine compute"):
        Target("classify", CHW, 10, "tflm-int8")
    with pytest.raises(ProfileError, match=r"budget.runtime = 'tflm-int8' is not allowed: TFLM's reference kernels"):
        parse_profile('[budget]\nruntime = "tflm-int8"\n', "p", "p.toml")
    with pytest.raises(ProfileError, match=r"budget.runtime = 'torch-cpu' cannot run on a device server .*ncnn-cpu$"):
        parse_profile('[budget]\nruntime = "torch-cpu"\ndevice = "http://host:1"\n', "p", "p.toml")
    assert parse_profile('[budget]\nruntime = "ncnn-cpu"\ndevice = "http://host:1"\n', "p", "p.toml").budget.device
    with pytest.raises(ParamError, match=r"threads=2: tflm-int8 runs on 1 thread"):
        tflm.open(tmp_path / "model.tflite", threads=2)


@pytest.mark.parametrize("name", slow_engines_marked(BACKENDS))
def test_each_backend_converts_runs_and_agrees_with_pytorch(name, tmp_path):
    backend: Backend = BACKENDS[name]
    try:
        backend.available()
    except MissingDependency as e:
        assert "\n" not in str(e) and "pip install" in str(e)
        pytest.skip(f"{name} cannot run here: {e}")
    model = random_network(ARCH, Target("classify", CHW, 10, "torch-cpu"))  # the same network whatever the runtime
    x = np.random.default_rng(0).standard_normal((16, *CHW), dtype=np.float32)
    with torch.inference_mode():
        want = model(torch.from_numpy(x)).numpy()
    path = backend.convert(model, out=tmp_path / f"model{backend.suffix}", input_chw=CHW, calibration=x)
    assert path.is_file()
    with backend.open(path, threads=1) as runner:
        got = runner(x)
        assert runner.runtime == name and runner.runtime_version == backend.version() and runner.device
    assert got.shape == want.shape
    if backend.precision == "int8":
        assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.75, (got.argmax(1), want.argmax(1))
    else:
        np.testing.assert_allclose(got, want, atol=FP32_ATOL[backend.precision] * np.abs(want).max(), rtol=0)


def test_module_runner_restores_torchs_threads():
    threads = torch.get_num_threads()
    target = Target("classify", CHW, 10, "torch-cpu", threads=1)
    with module_runner(random_network(ARCH, target), runtime="torch-cpu", input_chw=CHW, threads=1) as runner:
        assert torch.get_num_threads() == 1 and runner(np.zeros((1, *CHW), np.float32)).shape == (1, 10)
    assert torch.get_num_threads() == threads
    assert is_available("torch-cpu") and is_available("onnxruntime-cpu")


def test_a_target_refuses_bad_threads_and_batch():
    for bad in ({"threads": 0}, {"batch": 0}, {"threads": True}):
        with pytest.raises(ParamError, match="give an integer >= 1"):
            Target("classify", CHW, 10, "onnxruntime-cpu", **bad)


@pytest.mark.parametrize("source", [cost.MeasuredHere, cost.OnDevice, cost.FromTable])
def test_every_cost_source_implements_the_whole_protocol(source):
    """Callers use nothing but the protocol: each source has every member it declares, and its kind is a
    word of ``Budget.latency_from``."""
    declared = {n for n in vars(cost.CostSource) if not n.startswith("_")} | set(cost.CostSource.__annotations__)
    for member in declared:
        assert hasattr(source, member), (source.__name__, member)
        if callable(getattr(cost.CostSource, member, None)):
            want = list(inspect.signature(getattr(cost.CostSource, member)).parameters)
            assert list(inspect.signature(getattr(source, member)).parameters) == want, (source.__name__, member)
    assert source.kind in LATENCY_FROM


def test_a_budget_says_where_its_latency_comes_from():
    assert Budget().latency_from == "measured"
    assert Budget(device="http://127.0.0.1:8000").latency_from == "device"
    assert Budget(device="http://127.0.0.1:8000", latency_table="t.json").latency_from == "table"
