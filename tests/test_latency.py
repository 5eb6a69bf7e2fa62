"""Latency on the real runtime: a positive median, bigger networks slower, one-line errors."""

from __future__ import annotations

import importlib.util
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgenas.config.runtimes import RUNTIMES
from edgenas.device_kit import edgenas_kit as kit
from edgenas.errors import MissingDependency, UserInputError
from edgenas.runtime.latency import measure_latency, median_ms, random_network
from edgenas.runtime.onnx import export_onnx, timing_onnx
from edgenas.runtime.target import Target
from edgenas.search.space import Arch
from edgenas.training.network import build_model

TINY = Arch.plain(3, 4)
BIG = Arch(9, 64, (1,) * 9, (5,) * 9)  # ~2600x the MACs of TINY on 32x32 inputs
HAS_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.mark.parametrize("runtime", ["onnxruntime-cpu", "torch-cpu"])
def test_median_is_positive_and_finite(runtime):
    ms = measure_latency(TINY, Target(task="classify", input_chw=(1, 8, 8), outputs=10, runtime=runtime))
    assert 0 < ms < 1000


def test_face_networks_are_measured():
    assert measure_latency(TINY, Target(task="face", input_chw=(3, 16, 16), outputs=16, runtime="onnxruntime-cpu")) > 0


def test_a_much_larger_network_is_slower():
    tiny = measure_latency(
        TINY, Target(task="classify", input_chw=(3, 32, 32), outputs=10, runtime="onnxruntime-cpu", threads=1)
    )
    big = measure_latency(
        BIG, Target(task="classify", input_chw=(3, 32, 32), outputs=10, runtime="onnxruntime-cpu", threads=1)
    )
    assert big > 5 * tiny, (tiny, big)


def test_batch_costs_time():
    mid = Arch.plain(6, 16)
    one = measure_latency(
        mid, Target(task="classify", input_chw=(3, 32, 32), outputs=10, runtime="onnxruntime-cpu", batch=1)
    )
    sixteen = measure_latency(
        mid, Target(task="classify", input_chw=(3, 32, 32), outputs=10, runtime="onnxruntime-cpu", batch=16)
    )
    assert sixteen > 4 * one, (one, sixteen)


def test_measuring_leaves_the_callers_rng_and_threads_alone():
    torch.manual_seed(123)
    want = torch.rand(3)
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    measure_latency(TINY, Target(task="classify", input_chw=(1, 8, 8), outputs=10, runtime="torch-cpu", threads=1))
    measure_latency(TINY, Target(task="classify", input_chw=(1, 8, 8), outputs=10, runtime="onnxruntime-cpu"))
    assert torch.equal(torch.rand(3), want) and torch.get_num_threads() == threads


@pytest.mark.parametrize("task", ["classify", "face"])
def test_a_deep_random_network_computes_on_normal_floats(task):
    """Timed random networks must not run into subnormal floats (up to 100x slower on x86), which a
    trained network never computes on: at initialisation a depth-90 network's activations are subnormal
    from about layer 50 and zero from layer 70; normalised, every layer's are of order one."""
    net = random_network(
        Arch.plain(90, 16), Target(task=task, input_chw=(3, 32, 32), outputs=10, runtime="onnxruntime-cpu")
    )
    h = net.stem(torch.from_numpy(kit.bench_input((3, 32, 32), 1)))
    with torch.no_grad():
        for i, layer in enumerate(net.layers):
            h = layer(h)
            subnormal = (h != 0) & (h.abs() < torch.finfo(torch.float32).tiny)
            assert not subnormal.any() and 0.1 < h.std().item() < 10, (i, h.std().item())
    assert not net.training


def test_median_ms_runs_long_enough_for_a_stable_median():
    calls = []
    assert median_ms(lambda: calls.append(1)) >= 0
    assert len(calls) >= 30 + 5


def test_timing_graph_matches_the_exported_graph(tmp_path):
    """The fast timing export computes with the same ops as ``edgenas export``'s file."""
    model = build_model(Arch(4, 8, (0, 1, 0, 1), (3, 5, 7, 3)), 3, 10).eval()
    compute = {"Conv", "Gemm", "Relu", "MatMul", "Add", "BatchNormalization"}

    def ops(path):
        return Counter(n.op_type for n in onnx.load(str(path)).graph.node if n.op_type in compute)

    timing = timing_onnx(model, tmp_path / "t.onnx", (3, 16, 16))
    exported = export_onnx(model, path=tmp_path / "e.onnx", input_shape=(3, 16, 16), metadata={})
    assert ops(timing) == ops(exported) and ops(timing)["Conv"] == 1 + 4 + 2  # stem, 4 layers, 2 pointwise


def test_tensorrt_timing_graphs_run(tmp_path):
    """The FP16 and INT8 graphs the TensorRT runtimes time are valid and run (here on ONNX Runtime)."""
    from edgenas.runtime.onnx import half_precision, quantize_int8

    model = build_model(TINY, 3, 10).eval()
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16), dtype=np.float32)
    fp16 = timing_onnx(half_precision(model), tmp_path / "fp16.onnx", (3, 16, 16))
    int8 = quantize_int8(
        timing_onnx(model, tmp_path / "fp32.onnx", (3, 16, 16)), out_path=tmp_path / "int8.onnx", calibration=x
    )
    for path in (fp16, int8):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert session.run(None, {"input": x})[0].shape == (4, 10)
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(int8)).graph.node}


def test_unknown_runtime_is_one_line():
    with pytest.raises(
        UserInputError, match=r"runtime='tflite': choose one of onnxruntime-cpu, .*torch-cuda, litert-cpu, .*ncnn-cpu$"
    ) as e:
        measure_latency(TINY, Target(task="classify", input_chw=(1, 8, 8), outputs=10, runtime="tflite"))
    assert "\n" not in str(e.value)


def test_bad_arguments_are_one_line():
    with pytest.raises(UserInputError, match="threads=0: give an integer >= 1"):
        measure_latency(
            TINY, Target(task="classify", input_chw=(1, 8, 8), outputs=10, runtime="onnxruntime-cpu", threads=0)
        )
    with pytest.raises(UserInputError, match="batch=0: give an integer >= 1"):
        measure_latency(
            TINY, Target(task="classify", input_chw=(1, 8, 8), outputs=10, runtime="onnxruntime-cpu", batch=0)
        )


@pytest.mark.skipif(HAS_TRT, reason="checks the message without TensorRT")
@pytest.mark.parametrize("runtime", ["tensorrt-fp16", "tensorrt-int8"])
def test_missing_tensorrt_is_one_line(runtime):
    with pytest.raises(
        MissingDependency, match=rf"runtime {runtime} needs TensorRT, which is not installed: pip install tensorrt"
    ) as e:
        measure_latency(TINY, Target(task="classify", input_chw=(1, 8, 8), outputs=10, runtime=runtime))
    assert "\n" not in str(e.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without a GPU")
def test_missing_gpu_runtimes_are_one_line():
    import onnxruntime as ort

    with pytest.raises(MissingDependency, match="torch-cuda needs a CUDA GPU"):
        measure_latency(TINY, Target(task="classify", input_chw=(1, 8, 8), outputs=10, runtime="torch-cuda"))
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(MissingDependency, match="onnxruntime-cuda needs onnxruntime-gpu"):
            measure_latency(TINY, Target(task="classify", input_chw=(1, 8, 8), outputs=10, runtime="onnxruntime-cuda"))


def test_every_runtime_is_known():
    assert set(RUNTIMES) == {
        "onnxruntime-cpu",
        "onnxruntime-cpu-int8",
        "onnxruntime-cuda",
        "tensorrt-fp16",
        "tensorrt-int8",
        "torch-cpu",
        "torch-cuda",
        "litert-cpu",
        "litert-int8",
        "executorch-cpu",
        "executorch-int8",
        "openvino-cpu",
        "openvino-int8",
        "ncnn-cpu",
        "tflm-int8",
    }


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.parametrize("runtime", ["tensorrt-fp16", "tensorrt-int8"])
def test_tensorrt_latency(runtime):
    tiny = measure_latency(TINY, Target(task="classify", input_chw=(3, 32, 32), outputs=10, runtime=runtime))
    big = measure_latency(BIG, Target(task="classify", input_chw=(3, 32, 32), outputs=10, runtime=runtime, batch=8))
    assert 0 < tiny < big


@pytest.mark.gpu
@pytest.mark.parametrize("runtime", ["torch-cuda", "onnxruntime-cuda"])
def test_gpu_latency(runtime):
    import onnxruntime as ort

    if runtime == "onnxruntime-cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs onnxruntime-gpu")
    assert measure_latency(TINY, Target(task="classify", input_chw=(3, 32, 32), outputs=10, runtime=runtime)) > 0
