"""ONNX export and parity: a checked, dynamic-batch model.onnx that computes what PyTorch computes."""

from __future__ import annotations

import dataclasses
import importlib.util
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from conftest import make_meta, torch_threads

from edgenas.config.profile import load_profile
from edgenas.deploy.export.exporter import (
    _calibration_images,
    export_run,
    onnx_metadata,
    precision_onnx,
)
from edgenas.deploy.export.formats import FORMATS, TOLERANCES, parse_formats, tolerance
from edgenas.deploy.export.parity import HeldOut, check_file, held_out, recheck_parity
from edgenas.device_kit import edgenas_kit as kit
from edgenas.errors import MissingDependency, ParityError, UserInputError
from edgenas.run.loading import load_run_data, load_run_model
from edgenas.run.rundir import RunDir
from edgenas.runtime.onnx import ONNX_OPSET, export_onnx, read_metadata
from edgenas.search.space import Arch
from edgenas.training.augment import normalize
from edgenas.training.data import load_dataset
from edgenas.training.network import build_model
from edgenas.version import __version__

ARCH = Arch(3, 8, (0, 1, 0), (3, 5, 3))
HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def make_run(path, seed: int = 0) -> RunDir:
    """A finished classify run on digits: run.json, arch.json and weights with real BatchNorm statistics."""
    data = load_dataset("digits", seed=0, val_fraction=0.1)
    run = RunDir.start(path, make_meta("tiny", data=data), resume=False)
    run.write(RunDir.ARCH, ARCH.to_dict())
    torch.manual_seed(seed)
    model = build_model(ARCH, data.in_channels, data.num_classes).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = normalize(data.train.x, data.mean, data.std)
    with torch_threads(1):
        for step in range(30):  # a few steps: distinct logits, non-trivial BatchNorm statistics
            i = step * 64 % (len(x) - 64)
            loss = torch.nn.functional.cross_entropy(model(x[i : i + 64]), data.train.y[i : i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    run.save_weights(model)
    return run


def copy_run(run: RunDir, path) -> RunDir:
    """The run's files (run.json, arch.json, model.pt) in a new directory, without its export."""
    path.mkdir()
    for name in (RunDir.META, RunDir.ARCH, RunDir.WEIGHTS):
        (path / name).write_bytes((run.path / name).read_bytes())
    return RunDir.open(path)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("runs") / "digits")
    report = export_run(run.path)
    return run, report


def test_export_writes_a_ready_to_copy_folder(exported):
    run, report = exported
    out = run.path / "export"
    assert sorted(p.name for p in out.iterdir()) == [
        "edgenas_engines.py",
        "edgenas_env.py",
        "edgenas_kit.py",
        "edgenas_serve.py",
        "model.onnx",
        "parity.json",
        "samples.npz",
    ]
    assert report.passed and report.files == {"onnx": out / "model.onnx"} and report.skipped == {}
    # the kit, its bench-conditions probe, its server, its LiteRT/ExecuTorch/OpenVINO/ncnn runners
    for name in ("edgenas_kit", "edgenas_env", "edgenas_serve", "edgenas_engines"):
        src = importlib.util.find_spec(f"edgenas.device_kit.{name}").origin
        assert (out / f"{name}.py").read_bytes() == open(src, "rb").read()


def test_onnx_is_checked_opset_and_metadata(exported):
    run, _ = exported
    model = onnx.load(str(run.path / "export" / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= max(ONNX_OPSET, 17)
    md = read_metadata(run.path / "export" / "model.onnx")
    shape = run.meta.data.to_dict()
    assert md["architecture"] == ARCH.to_dict() and md["architecture_str"] == str(ARCH)
    assert md["profile"] == "tiny" and md["dataset"] == "digits" and md["task"] == "classify"
    assert md["input_shape"] == ["batch", 1, 8, 8]
    assert md["mean"] == shape["mean"] and md["std"] == shape["std"]
    assert md["class_names"] == [str(i) for i in range(10)] and md["num_classes"] == 10
    assert md["edgenas_version"] == __version__ and md["output"] == "logits"
    assert md["weights_sha256"] == kit.file_sha256(run.path / "model.pt")


def test_batch_axis_is_dynamic(exported):
    run, _ = exported
    session = ort.InferenceSession(str(run.path / "export" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == "batch"
    model = load_run_model(run)
    for batch in (1, 7):
        x = np.random.default_rng(batch).standard_normal((batch, 1, 8, 8), dtype=np.float32)
        got = session.run(None, {session.get_inputs()[0].name: x})[0]
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        assert got.shape == (batch, 10)
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_parity_report_passes_on_held_out_samples(exported):
    run, _ = exported
    parity = json.loads((run.path / "export" / "parity.json").read_text())
    onnx_parity = parity["formats"]["onnx"]
    assert parity["passed"] and onnx_parity["passed"] and onnx_parity["failures"] == []
    assert onnx_parity["samples"] >= 256 and onnx_parity["held_out"] == "test"
    assert onnx_parity["top1_agreement"] >= 0.999 and onnx_parity["max_abs_diff"] <= 1e-3
    assert 0 <= onnx_parity["mean_abs_diff"] <= onnx_parity["max_abs_diff"]
    assert onnx_parity["reference_accuracy"] > 0.3  # trained a little: well above chance (0.1)
    assert onnx_parity["sha256"] == kit.file_sha256(run.path / "export" / "model.onnx")


def test_samples_file_holds_real_inputs_and_pytorch_outputs(exported):
    run, _ = exported
    samples = kit.load_samples(run.path / "export" / "samples.npz")
    assert samples.task == "classify" and samples.inputs.shape == (16, 1, 8, 8) and samples.outputs.shape == (16, 10)
    with torch.no_grad():
        want = load_run_model(run)(torch.from_numpy(samples.inputs)).numpy()
    np.testing.assert_allclose(samples.outputs, want, atol=1e-6)
    assert kit.check_export(run.path / "export", threads=1)["passed"]


def test_altered_weights_are_caught(exported, tmp_path):
    run, _ = exported
    copy = copy_run(run, tmp_path / "copy")
    (copy.path / "export").mkdir()
    for name in ("model.onnx", "samples.npz"):
        (copy.path / "export" / name).write_bytes((run.path / "export" / name).read_bytes())
    state = torch.load(run.path / "model.pt", weights_only=True)
    state["classifier.weight"] = state["classifier.weight"] * 1.01  # a model changed after export
    torch.save(state, copy.path / "model.pt")
    with pytest.raises(ParityError, match=r"onnx fp32: max \|diff\| .* > 0\.001"):
        recheck_parity(copy.path)
    parity = json.loads((copy.path / "export" / "parity.json").read_text())
    assert not parity["passed"] and parity["formats"]["onnx"]["max_abs_diff"] > 1e-3


def test_altered_onnx_initializer_is_caught(exported, tmp_path):
    run, _ = exported
    broken = copy_run(run, tmp_path / "run").path
    (broken / "export").mkdir()
    model = onnx.load(str(run.path / "export" / "model.onnx"))
    init = max(model.graph.initializer, key=lambda t: len(onnx.numpy_helper.to_array(t).ravel()))
    values = onnx.numpy_helper.to_array(init).copy()
    values.ravel()[::2] *= -1  # flip the sign of every other weight of the largest tensor
    init.CopyFrom(onnx.numpy_helper.from_array(values, init.name))
    onnx.save(model, str(broken / "export" / "model.onnx"))
    with pytest.raises(ParityError, match="parity check failed for onnx fp32") as e:
        recheck_parity(broken)
    assert "top-1 agreement" in str(e.value) and "parity.json" in str(e.value)


def test_formats_and_options_are_validated(tmp_path):
    assert set(FORMATS) == {
        "onnx",
        "tensorrt",
        "onnx-int8",
        "litert",
        "litert-int8",
        "executorch",
        "executorch-int8",
        "openvino",
        "openvino-int8",
        "ncnn",
        "tflm",
    }
    assert FORMATS["onnx"].file == "model.onnx" and FORMATS["tensorrt"].file == "model.engine"
    assert FORMATS["onnx-int8"].file == "model.int8.onnx" and FORMATS["onnx-int8"].runtime == "onnxruntime-cpu-int8"
    assert parse_formats("tensorrt, onnx") == ("onnx", "tensorrt")
    with pytest.raises(
        UserInputError, match="unknown export format tflite; choose from onnx, tensorrt, onnx-int8, litert, "
    ):
        parse_formats("onnx,tflite")
    with pytest.raises(UserInputError, match="fp16=True: applies to the tensorrt format only"):
        export_run(tmp_path, formats=("onnx",), fp16=True)


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_reduced_precision_graphs_for_tensorrt_keep_parity(exported, tmp_path, precision):
    """The FP16 graph and the Q/DQ INT8 graph TensorRT builds engines from, checked on ONNX Runtime (CPU)."""
    run, _ = exported
    model, data = load_run_model(run), load_run_data(run)
    source = precision_onnx(
        model,
        onnx_path=run.path / "export" / "model.onnx",
        precision=precision,
        input_chw=(1, 8, 8),
        workdir=tmp_path,
        calibration=_calibration_images(data, 256) if precision == "int8" else None,
    )
    graph = onnx.load(str(source)).graph
    ops = [n.op_type for n in graph.node]
    if precision == "fp16":
        weights = {i.data_type for i in graph.initializer} - {onnx.TensorProto.INT64}  # INT64: shapes
        assert ops[0] == ops[-1] == "Cast" and weights == {onnx.TensorProto.FLOAT16}
    else:
        assert ops.count("QuantizeLinear") >= 4 and ops.count("Conv") == 6
        stem = next(n for n in graph.node if n.op_type == "Conv" and "input" in n.input)
        assert stem.input[1] in {i.name for i in graph.initializer}  # the stem keeps float weights
    ref = held_out(run, model=model, data=data, samples=256)
    report = check_file(
        source, fmt=FORMATS["onnx"], ref=ref, task="classify", tol=tolerance(precision, int8_max_drop=0.05)
    )
    assert report["passed"], report["failures"]
    assert report["top1_agreement"] >= 0.95 and report["max_abs_diff"] > 1e-4  # really reduced precision


@pytest.mark.skipif(HAS_TRT, reason="checks the behaviour without TensorRT")
def test_tensorrt_alone_without_tensorrt_is_a_missing_dependency(exported):
    run, _ = exported
    with pytest.raises(MissingDependency, match=r"needs TensorRT, which is not installed: pip install tensorrt"):
        export_run(run.path, formats=("tensorrt",))


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_tensorrt_engine_parity(exported, tmp_path, precision):
    run, _ = exported
    copy = copy_run(run, tmp_path / "r")
    # The fixture's network is barely trained (small logit margins): INT8 may flip a few more.
    report = export_run(
        copy.path,
        formats=("onnx", "tensorrt"),
        fp16=precision == "fp16",
        int8=precision == "int8",
        calibration_images=256,
        int8_max_drop=0.1,
    )
    trt_parity = report.parity["tensorrt"]
    assert report.files["tensorrt"].name == "model.engine" and trt_parity["precision"] == precision
    assert trt_parity["passed"] and trt_parity["samples"] >= 256 and "top1_agreement" in trt_parity
    parity = json.loads((copy.path / "export" / "parity.json").read_text())
    assert set(parity["formats"]) == {"onnx", "tensorrt"} and parity["passed"]
    assert kit.check_export(
        copy.path / "export", runtime=f"tensorrt-{precision}", max_abs_diff=np.inf, min_agreement=0.75
    )["passed"]
    assert recheck_parity(copy.path, formats=("tensorrt",), int8_max_drop=0.1).passed


# -- the command ---------------------------------------------------------------------------------
def cli():
    from edgenas.cli import main

    return main


def test_cli_exports_a_run(exported, tmp_path):
    run = copy_run(exported[0], tmp_path / "r")
    (run.path / "export").mkdir()
    (run.path / "export" / "model.engine").write_bytes(b"an engine of an older model.onnx")
    result = CliRunner().invoke(cli(), ["export", str(run.path)])
    assert result.exit_code == 0, result.output
    assert "onnx (fp32)" in result.output and "parity passed" in result.output
    assert (run.path / "export" / "model.onnx").is_file() and not (run.path / "export" / "model.engine").exists()
    assert "removed" in result.output and "model.engine" in result.output


def test_cli_unknown_format_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli(), ["export", str(tmp_path), "--format", "onnx,tflite"])
    assert result.exit_code == 2
    assert "--format" in result.output and "tflite" in result.output and "onnx, tensorrt, onnx-int8" in result.output
    assert "Traceback" not in result.output


@pytest.mark.skipif(HAS_TRT, reason="checks the behaviour without TensorRT")
def test_cli_without_tensorrt_says_how_to_install_it(exported, tmp_path):
    run = copy_run(exported[0], tmp_path / "r")
    result = CliRunner().invoke(cli(), ["export", str(run.path), "--format", "onnx,tensorrt", "--fp16"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "TensorRT" in line]
    assert (
        len(lines) == 1 and "pip install tensorrt" in lines[0] and "ONNX export" in lines[0] and "complete" in lines[0]
    )
    assert "Traceback" not in result.output
    only = CliRunner().invoke(cli(), ["export", str(run.path), "--format", "tensorrt"])
    assert only.exit_code == 2 and "pip install tensorrt" in only.output and "Traceback" not in only.output


def test_cli_parity_failure_exits_1(exported, tmp_path, monkeypatch):
    import edgenas.deploy.export.exporter as export_mod

    run = copy_run(exported[0], tmp_path / "r")
    real = export_mod.export_onnx

    def broken_export(model, *, path, input_shape, metadata):  # an exporter that loses a weight
        model = type(model)(model.arch, in_channels=model.in_channels, num_classes=model.num_classes)
        return real(model, path=path, input_shape=input_shape, metadata=metadata)

    monkeypatch.setattr(export_mod, "export_onnx", broken_export)
    result = CliRunner().invoke(cli(), ["export", str(run.path)])
    assert result.exit_code == 1
    assert "parity check failed for onnx fp32" in result.output and "Traceback" not in result.output
    assert (run.path / "export" / "parity.json").is_file()


def test_face_embedding_export_keeps_cosine_parity(tmp_path):
    """A face run's network (L2-normalised embeddings) exports with its embedding size and passes on cosine."""
    from edgenas.training.network import EmbeddingNet

    tiny = load_profile("tiny")
    profile = dataclasses.replace(tiny, face=dataclasses.replace(tiny.face, embedding_dim=16))
    meta = make_meta(profile, task="face", dataset="lfw", in_channels=3, num_classes=5, input_size=(16, 16))
    run = RunDir.start(tmp_path / "face", meta, resume=False)
    run.write(RunDir.ARCH, ARCH.to_dict())
    torch.manual_seed(0)
    model = EmbeddingNet(ARCH, 3, 16).train()
    with torch.no_grad():
        model(torch.randn(32, 3, 16, 16))  # BatchNorm statistics
    torch.save(model.state_dict(), run.path / RunDir.WEIGHTS)
    model = load_run_model(run)

    md = onnx_metadata(run)
    assert md["task"] == "face" and md["embedding_dim"] == 16 and md["output"] == "L2-normalised embedding"
    path = export_onnx(model, path=tmp_path / "face.onnx", input_shape=(3, 16, 16), metadata=md)
    x = torch.randn(64, 3, 16, 16)
    with torch.no_grad():
        ref = HeldOut(x.numpy(), np.zeros(64, np.int64), model(x).numpy(), "test")
    report = check_file(path, fmt=FORMATS["onnx"], ref=ref, task="face", tol=TOLERANCES["fp32"])
    assert report["passed"] and report["min_cosine"] >= 0.999 and "top1_agreement" not in report
    broken = HeldOut(ref.inputs, ref.labels, np.roll(ref.outputs, 1, axis=1), "test")  # embedding dims shuffled
    assert not check_file(path, fmt=FORMATS["onnx"], ref=broken, task="face", tol=TOLERANCES["fp32"])["passed"]
