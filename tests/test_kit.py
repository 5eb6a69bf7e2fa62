"""The device kit: statistics, the bench JSON schema, parity checks, runners, and the kit run alone
in a fresh virtual environment that holds only numpy and onnxruntime."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import subprocess
import sys
import venv
import warnings
from pathlib import Path

import numpy as np
import pytest

from edgenas.deploy.export.exporter import _copy_kit
from edgenas.device_kit import edgenas_kit as kit
from edgenas.device_kit.edgenas_env import FIELDS as ENV_FIELDS

KIT = Path(kit.__file__)


def export_onnx(path: Path, width: int = 8, depth: int = 3, size: int = 32, seed: int = 0):
    """A small random-weight classifier exported to ONNX (opset 17, dynamic batch); returns the torch model."""
    import torch

    from edgenas.search.space import Arch
    from edgenas.training.network import build_model

    torch.manual_seed(seed)
    model = build_model(Arch.plain(depth, width), 3, 10).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model,
            torch.randn(1, 3, size, size),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    return model


def make_export_dir(root: Path, n: int = 16) -> Path:
    """RUN_DIR/export as `edgenas export` leaves it: model.onnx and samples.npz with PyTorch outputs."""
    import torch

    export = root / "export"
    export.mkdir(parents=True)
    model = export_onnx(export / "model.onnx")
    inputs = np.random.default_rng(1).standard_normal((n, 3, 32, 32), dtype=np.float32)
    with torch.no_grad():
        outputs = model(torch.from_numpy(inputs)).numpy()
    kit.save_samples(export / "samples.npz", inputs=inputs, outputs=outputs, task="classify")
    return export


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    return make_export_dir(tmp_path_factory.mktemp("run"))


# -- statistics ------------------------------------------------------------------------------------
def test_latency_stats_known_answers():
    s = kit.latency_stats(list(range(1, 101)), batch=4)  # 1, 2, ..., 100 ms
    assert s["p50_ms"] == pytest.approx(50.5)
    assert s["p90_ms"] == pytest.approx(90.1)
    assert s["p99_ms"] == pytest.approx(99.01)
    assert s["mean_ms"] == pytest.approx(50.5)
    assert s["std_ms"] == pytest.approx(math.sqrt(sum((x - 50.5) ** 2 for x in range(1, 101)) / 99))
    assert s["throughput"] == pytest.approx(4 * 1000 / 50.5)


def test_latency_stats_constant_and_single_sample():
    assert kit.latency_stats([2.0] * 7) == {
        "p50_ms": 2.0,
        "p90_ms": 2.0,
        "p99_ms": 2.0,
        "mean_ms": 2.0,
        "std_ms": 0.0,
        "throughput": 500.0,
    }
    assert kit.latency_stats([3.0])["std_ms"] == 0.0


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [1.0, -2.0], [[1.0, 2.0]]])
def test_latency_stats_rejects_bad_samples(bad):
    with pytest.raises(ValueError):
        kit.latency_stats(bad)


def test_measure_warms_up_then_times_each_run():
    calls = []
    samples = kit.measure(lambda: calls.append(1), warmup=3, runs=5)
    assert len(calls) == 8 and len(samples) == 5
    import time

    slow = kit.measure(lambda: time.sleep(0.002), warmup=0, runs=3)
    assert all(x >= 2.0 for x in slow)
    with pytest.raises(kit.KitError):
        kit.measure(lambda: None, warmup=0, runs=0)


def test_parse_fraction():
    assert kit.parse_fraction("5%") == pytest.approx(0.05)
    assert kit.parse_fraction("0.05") == pytest.approx(0.05)
    assert kit.parse_fraction("99.9%") == pytest.approx(0.999)
    for bad in ("abc", "-1%", "nan"):
        with pytest.raises(ValueError):
            kit.parse_fraction(bad)


# -- the bench JSON --------------------------------------------------------------------------------
def good_record(**changes) -> dict:
    samples = [1.0, 1.1, 1.2, 1.3]
    record = {
        "schema": kit.SCHEMA,
        "model": "m.onnx",
        "model_sha256": "0" * 64,
        "runtime": "onnxruntime-cpu",
        "runtime_version": "1.0",
        "device": "cpu",
        "host": "h",
        "threads": 1,
        "batch": 1,
        "input_shape": [1, 3, 32, 32],
        "warmup": 2,
        "runs": len(samples),
        **kit.latency_stats(samples),
        "samples_ms": samples,
        "created": "2026-01-01T00:00:00Z",
        "environment": kit.unknown_environment(),
    }
    record.update(changes)
    return record


def test_validate_bench_accepts_a_record_and_extra_fields():
    assert kit.validate_bench(good_record(tool="x", rounds=3))["runs"] == 4


@pytest.mark.parametrize(
    "changes, message",
    [
        (
            {"schema": "edgenas.bench/3"},
            "schema is 'edgenas.bench/3', expected one of 'edgenas.bench/1', 'edgenas.bench/2'",
        ),
        ({"environment": None}, "field 'environment' must be an object"),
        ({"schema": None}, "schema is None"),
        ({"p50_ms": "fast"}, "'p50_ms' has the wrong type"),
        ({"batch": True}, "'batch' has the wrong type"),
        ({"threads": 1.5}, "'threads' has the wrong type"),
        ({"runs": 5}, "samples_ms must hold 5 numbers"),
        ({"batch": 0}, "batch and runs must be >= 1"),
        ({"input_shape": [1, 3, -1, 32]}, "input_shape must be a list of positive ints"),
    ],
)
def test_validate_bench_names_the_problem(changes, message):
    with pytest.raises(kit.BenchSchemaError, match=message.replace("(", r"\(")):
        kit.validate_bench(good_record(**changes), "b.json")


def test_validate_bench_missing_field():
    record = good_record()
    del record["device"]
    with pytest.raises(kit.BenchSchemaError, match="b.json: field 'device' is missing"):
        kit.validate_bench(record, "b.json")
    with pytest.raises(kit.BenchSchemaError, match="not a bench JSON object"):
        kit.validate_bench([record], "b.json")


def test_write_and_read_bench_atomically(tmp_path):
    path = tmp_path / "out" / "bench.json"
    kit.write_bench(path, good_record())
    assert kit.read_bench(path) == good_record()
    assert [p.name for p in path.parent.iterdir()] == ["bench.json"]  # no temp file left behind
    with pytest.raises(kit.BenchSchemaError):
        kit.write_bench(path, good_record(schema="other"))
    assert kit.read_bench(path) == good_record()  # a refused write leaves the old file
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(kit.KitError, match="bad.json is not a readable JSON file"):
        kit.read_bench(tmp_path / "bad.json")
    with pytest.raises(kit.KitError, match="no such file"):
        kit.read_bench(tmp_path / "missing.json")


# -- parity ----------------------------------------------------------------------------------------
def test_parity_report_classify():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((100, 10)).astype(np.float32)
    ok = kit.parity_report(ref, actual=ref + 1e-5)
    assert ok["passed"] and ok["top1_agreement"] == 1.0 and ok["max_abs_diff"] == pytest.approx(1e-5, rel=1e-2)
    off = kit.parity_report(ref, actual=ref + 0.01)
    assert not off["passed"] and "max |diff|" in off["failures"][0]
    assert kit.parity_report(ref, actual=ref + 0.01, max_abs_diff=0.1)["passed"]  # a looser tolerance (fp16)
    flipped = ref.copy()
    flipped[0] = -flipped[0]  # changes the top-1 class of sample 0
    report = kit.parity_report(ref, actual=flipped, max_abs_diff=math.inf, min_agreement=0.999)
    assert report["top1_agreement"] == pytest.approx(0.99) and not report["passed"]
    assert kit.parity_report(ref, actual=flipped, max_abs_diff=math.inf, min_agreement=0.98)["passed"]


def test_parity_report_face_uses_cosine_similarity():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((20, 16))
    assert kit.parity_report(ref, actual=3 * ref, task="face")["passed"]  # same direction, other scale
    noisy = ref + rng.standard_normal(ref.shape)
    report = kit.parity_report(ref, actual=noisy, task="face")
    assert not report["passed"] and report["min_cosine"] < 0.999 and "cosine" in report["failures"][0]


def test_parity_report_shape_and_nan():
    ref = np.zeros((4, 10))
    assert "shape" in kit.parity_report(ref, actual=np.zeros((4, 12)))["failures"][0]
    bad = ref.copy()
    bad[1, 1] = np.nan
    assert "NaN" in kit.parity_report(ref, actual=bad)["failures"][0]


def test_parity_fails_on_nan_reference_and_refuses_nan_tolerances():
    ref = np.zeros((4, 10))
    ref[2, 3] = np.nan
    report = kit.parity_report(ref, actual=np.zeros((4, 10)))  # NaN - 0 compares False with any tolerance
    assert not report["passed"] and "reference outputs (samples.npz) hold NaN" in report["failures"][0]
    for tolerance in ("max_abs_diff", "min_agreement", "min_cosine"):
        with pytest.raises(ValueError, match=f"{tolerance} is NaN"):
            kit.parity_report(np.zeros((4, 10)), actual=np.zeros((4, 10)), **{tolerance: math.nan})


def test_check_cli_fails_on_nan_reference_and_refuses_nan_tolerance(export_dir, tmp_path, capsys):
    for flag in ("--max-abs-diff", "--min-cosine"):
        with pytest.raises(SystemExit) as e:
            kit.main(["check", str(export_dir), flag, "nan"])
        err = capsys.readouterr().err
        assert (
            e.value.code == 2
            and f"{flag}: invalid _tolerance value" not in err
            and "'nan' must be a number >= 0" in err
        )
    poisoned = tmp_path / "export"
    shutil.copytree(export_dir, poisoned)
    s = kit.load_samples(poisoned / "samples.npz")
    outputs = s.outputs.copy()
    outputs[0, 0] = np.nan
    kit.save_samples(poisoned / "samples.npz", inputs=s.inputs, outputs=outputs, task=s.task)
    assert kit.main(["check", str(poisoned), "--threads", "1"]) == 1
    assert "FAIL: the reference outputs (samples.npz) hold NaN" in capsys.readouterr().out


def test_check_writable(tmp_path):
    (tmp_path / "f").write_text("x")
    assert (
        kit.check_writable(tmp_path / "new" / "deeper" / "b.json", "--json") == tmp_path / "new" / "deeper" / "b.json"
    )
    assert not (tmp_path / "new").exists()  # checking creates nothing
    with pytest.raises(kit.KitError, match=r"--json .*f/b.json cannot be written: .*f is not a directory"):
        kit.check_writable(tmp_path / "f" / "b.json", "--json")
    with pytest.raises(kit.KitError, match="is a directory, expected a file"):
        kit.check_writable(tmp_path, "--json")
    with pytest.raises(kit.KitError, match="is a file, expected a directory"):
        kit.check_writable(tmp_path / "f", "--history", directory=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_samples_round_trip_and_errors(tmp_path):
    x, y = np.ones((2, 1, 4, 4), np.float32), np.zeros((2, 3), np.float32)
    kit.save_samples(tmp_path / "s.npz", inputs=x, outputs=y, task="face")
    s = kit.load_samples(tmp_path / "s.npz")
    assert s.task == "face" and s.inputs.shape == (2, 1, 4, 4) and s.outputs.shape == (2, 3)
    with pytest.raises(kit.KitError, match="no such file"):
        kit.load_samples(tmp_path / "none.npz")
    (tmp_path / "junk.npz").write_text("junk")
    with pytest.raises(kit.KitError, match="junk.npz is not a samples file"):
        kit.load_samples(tmp_path / "junk.npz")


def _samples_file(path: Path, **arrays) -> Path:
    np.savez(path, **{"task": np.array("classify"), **arrays})
    return path


@pytest.mark.parametrize(
    "inputs, outputs, message",
    [
        (
            np.array([["a", "b"]] * 16).reshape(16, 1, 1, 2),
            np.zeros((16, 10)),
            "inputs must be real numbers (float32), got dtype <U1",
        ),
        (np.zeros((16, 3, 32, 32), complex), np.zeros((16, 10)), "inputs must be real numbers"),
        (
            np.zeros((16, 3, 32)),
            np.zeros((16, 10)),
            "inputs must be a non-empty (N, C, H, W) array, got shape (16, 3, 32)",
        ),
        (np.zeros((0, 3, 32, 32)), np.zeros((0, 10)), "inputs must be a non-empty"),
        (np.zeros((16, 3, 32, 32)), np.zeros((16, 10, 1)), "outputs must be a non-empty (N, K) array"),
        (np.zeros((16, 3, 32, 32)), np.zeros((15, 10)), "inputs and outputs must hold as many samples"),
        (np.full((16, 3, 32, 32), np.nan), np.zeros((16, 10)), "inputs hold NaN or infinite values"),
        (np.zeros((16, 1, 8, 8)), np.zeros((16, 10)), "inputs are 1x8x8 (C x H x W), the model"),
        (
            np.zeros((16, 3, 16, 16)),
            np.zeros((16, 10)),
            "model.onnx takes 3x32x32: these samples belong to another model",
        ),
    ],
)
def test_check_cli_refuses_samples_of_the_wrong_shape_or_dtype(export_dir, tmp_path, capsys, inputs, outputs, message):
    """Each was a numpy or ONNX Runtime traceback (or a pass on garbage); now one line, exit 2."""
    bad = tmp_path / "export"
    shutil.copytree(export_dir, bad)
    _samples_file(bad / "samples.npz", inputs=inputs, outputs=outputs)
    assert kit.main(["check", str(bad), "--threads", "1"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1, captured
    assert captured.err.startswith("edgenas_kit.py: error: ") and "samples.npz" in captured.err
    assert message in captured.err, captured.err


def test_check_fails_when_samples_come_from_other_weights(export_dir, tmp_path, capsys):
    """Samples recorded for other weights than the model's (ONNX metadata) are a stale export: FAIL, exit 1."""
    import onnx

    export = tmp_path / "export"
    shutil.copytree(export_dir, export)
    proto = onnx.load(str(export / "model.onnx"))
    onnx.helper.set_model_props(proto, {"weights_sha256": "a" * 64})
    onnx.save(proto, str(export / "model.onnx"))
    s = kit.load_samples(export / "samples.npz")
    kit.save_samples(export / "samples.npz", inputs=s.inputs, outputs=s.outputs, task=s.task, weights_sha256="a" * 64)
    assert kit.main(["check", str(export), "--threads", "1"]) == 0  # the same weights: PASS
    assert "PASS" in capsys.readouterr().out
    kit.save_samples(export / "samples.npz", inputs=s.inputs, outputs=s.outputs, task=s.task, weights_sha256="b" * 64)
    assert kit.main(["check", str(export), "--threads", "1"]) == 1
    out = capsys.readouterr().out
    assert "FAIL: stale export" in out and "samples.npz bbbbbbbbbbbb" in out and "model.onnx aaaaaaaaaaaa" in out
    (export / "parity.json").write_text(json.dumps({"weights_sha256": "c" * 64}))
    kit.save_samples(export / "samples.npz", inputs=s.inputs, outputs=s.outputs, task=s.task, weights_sha256="a" * 64)
    report = kit.check_export(export, threads=1)
    assert not report["passed"] and "parity.json cccccccccccc" in report["failures"][0]


# -- runners on ONNX Runtime -----------------------------------------------------------------------
def test_check_export_passes_and_a_tampered_sample_fails(export_dir, tmp_path):
    report = kit.check_export(export_dir, threads=1)
    assert report["passed"], report
    assert report["samples"] == 16 and report["top1_agreement"] == 1.0 and report["max_abs_diff"] < 1e-4
    assert "PASS" in kit.format_check(report)
    tampered = tmp_path / "export"
    shutil.copytree(export_dir, tampered)
    s = kit.load_samples(tampered / "samples.npz")
    kit.save_samples(tampered / "samples.npz", inputs=s.inputs, outputs=s.outputs + 0.01, task=s.task)
    report = kit.check_export(tampered, threads=1)
    assert not report["passed"] and "FAIL: max |diff|" in kit.format_check(report)


def test_onnxruntime_runner(export_dir):
    with kit.open_runner(export_dir / "model.onnx", threads=1) as r:
        assert (r.runtime, r.threads, r.input_chw, r.max_batch) == ("onnxruntime-cpu", 1, (3, 32, 32), None)
        assert r(np.zeros((5, 3, 32, 32), np.float32)).shape == (5, 10)
        assert kit.run_batched(r, np.zeros((7, 3, 32, 32), np.float32)).shape == (7, 10)


def test_bench_model_writes_a_valid_record(export_dir):
    r = kit.bench_model(export_dir / "model.onnx", batch=2, threads=1, warmup=2, runs=15)
    kit.validate_bench(r)
    assert (r["runtime"], r["threads"], r["batch"], r["input_shape"], r["runs"]) == (
        "onnxruntime-cpu",
        1,
        2,
        [2, 3, 32, 32],
        15,
    )
    assert r["model_sha256"] == kit.file_sha256(export_dir / "model.onnx") and len(r["samples_ms"]) == 15
    assert r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] and r["throughput"] == pytest.approx(2000 / r["mean_ms"])
    assert "p50" in kit.format_bench(r)


def test_bad_inputs_give_kit_errors(export_dir, tmp_path):
    with pytest.raises(kit.KitError, match="unknown runtime 'onnx': choose one of onnxruntime-cpu"):
        kit.open_runner(export_dir / "model.onnx", runtime="onnx")
    with pytest.raises(kit.KitError, match="nope.onnx: no such file"):
        kit.open_runner(tmp_path / "nope.onnx")
    (tmp_path / "notes.onnx").write_text("not a model")
    with pytest.raises(kit.KitError, match="notes.onnx is not an ONNX model"):
        kit.open_runner(tmp_path / "notes.onnx")
    (tmp_path / "model.engine").write_bytes(b"\0" * 16)
    with pytest.raises(kit.KitError, match="is a TensorRT engine"):
        kit.open_runner(tmp_path / "model.engine", runtime="onnxruntime-cpu")


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed")
def test_missing_tensorrt_says_how_to_install(tmp_path):
    (tmp_path / "model.engine").write_bytes(b"\0" * 16)
    with pytest.raises(kit.KitMissingDependency, match="pip install tensorrt"):
        kit.open_runner(tmp_path / "model.engine")


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_tensorrt_engine_matches_onnxruntime(export_dir, tmp_path):
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse((export_dir / "model.onnx").read_bytes())
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    profile.set_shape("input", (1, 3, 32, 32), (8, 3, 32, 32), (16, 3, 32, 32))
    config.add_optimization_profile(profile)
    (tmp_path / "model.engine").write_bytes(bytes(builder.build_serialized_network(network, config)))
    shutil.copy(export_dir / "samples.npz", tmp_path / "samples.npz")
    report = kit.check_export(tmp_path, runtime="tensorrt-fp16", max_abs_diff=0.05, min_agreement=0.9)
    assert report["passed"], report
    r = kit.bench_model(tmp_path / "model.engine", runtime="tensorrt-fp16", batch=4, warmup=2, runs=10)
    assert r["threads"] is None and r["input_shape"] == [4, 3, 32, 32]


# -- the kit alone on a "device" -------------------------------------------------------------------
def device_env(root: Path, *runtimes: str) -> Path:
    """A fresh venv whose site-packages holds only numpy and onnxruntime (linked from this one), and the
    packages ``runtimes`` names (``openvino``, ``ncnn``)."""
    venv.EnvBuilder(with_pip=False, symlinks=True).create(root)
    python = root / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    for name in ("numpy", "onnxruntime", *runtimes):
        src = Path(importlib.util.find_spec(name).submodule_search_locations[0])
        for path in [src, *src.parent.glob(f"{name}.libs"), *src.parent.glob(f"{name}-*.dist-info")]:
            (site / path.name).symlink_to(path)
    return python


def run(python: Path, *args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-I", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_kit_runs_alone_in_a_venv_with_only_numpy_and_onnxruntime(export_dir, tmp_path):
    python = device_env(tmp_path / "venv")
    device = tmp_path / "device"  # what a user copies: RUN_DIR/export/ and edgenas_kit.py
    shutil.copytree(export_dir, device / "export")
    _copy_kit(device)  # edgenas_kit.py and edgenas_env.py, as `edgenas export` copies them
    probe = (
        "import importlib.util as u; "
        "print([n for n in ('numpy', 'onnxruntime', 'torch', 'edgenas', 'onnx', 'click') if u.find_spec(n)])"
    )
    assert run(python, "-c", probe, cwd=device).stdout.strip() == "['numpy', 'onnxruntime']"

    ok = run(python, "edgenas_kit.py", "check", "export", "--threads", "1", cwd=device)
    assert ok.returncode == 0, ok.stderr
    assert "PASS" in ok.stdout and "16 samples" in ok.stdout

    bench = run(
        python,
        "edgenas_kit.py",
        "bench",
        "export/model.onnx",
        "--threads",
        "1",
        "--runs",
        "20",
        "--warmup",
        "2",
        "--json",
        "bench.json",
        cwd=device,
    )
    assert bench.returncode == 0, bench.stderr
    from edgenas.deploy.gate.compare import compare_files

    assert compare_files(device / "bench.json", device / "bench.json").exit_code == 0  # edgenas reads it
    record = json.loads((device / "bench.json").read_text())
    assert record["tool"].startswith("edgenas-kit") and record["runs"] == 20 and record["threads"] == 1
    assert record["schema"] == "edgenas.bench/2" and set(record["environment"]) == set(ENV_FIELDS)
    assert record["environment"]["cpus"] == kit.conditions.cpu_count(Path("/"))  # the device's own probe ran

    s = kit.load_samples(device / "export" / "samples.npz")
    kit.save_samples(
        device / "export" / "samples.npz", inputs=s.inputs, outputs=s.outputs * 1.01, task=s.task
    )  # tampered
    bad = run(python, "edgenas_kit.py", "check", "export", "--threads", "1", cwd=device)
    assert bad.returncode == 1 and "FAIL" in bad.stdout

    for args, message in [
        (("bench", "missing.onnx"), "missing.onnx: no such file"),
        (("bench", "export/samples.npz"), "export/samples.npz is not an ONNX model"),
        (("bench", "export/model.onnx", "--runtime", "tflite"), "unknown runtime 'tflite'"),
        (("check", "export", "--min-agreement", "lots"), "is not a fraction"),
    ]:
        r = run(python, "edgenas_kit.py", *args, cwd=device)
        assert r.returncode == 2 and message in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_kit_without_its_probe_says_what_to_copy(export_dir, tmp_path):
    shutil.copy(KIT, tmp_path / "edgenas_kit.py")  # edgenas_env.py left behind
    r = run(Path(sys.executable), "edgenas_kit.py", "bench", export_dir / "model.onnx", "--runs", "2", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == (
        "edgenas_kit.py: error: edgenas_env.py is missing beside edgenas_kit.py: copy the whole export folder to the device"
    )
    check = run(Path(sys.executable), "edgenas_kit.py", "check", export_dir, "--threads", "1", cwd=tmp_path)
    assert check.returncode == 0 and "PASS" in check.stdout  # check needs no probe


@pytest.mark.parametrize("name, allowed", [("edgenas_kit.py", {"numpy"}), ("edgenas_env.py", set())])
def test_kit_source_imports_only_stdlib_numpy_and_lazy_runtimes(name, allowed):
    import ast

    tree = ast.parse((KIT.parent / name).read_text())
    top = {alias.name.split(".")[0] for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
    top |= {node.module.split(".")[0] for node in tree.body if isinstance(node, ast.ImportFrom) and node.module}
    assert top - set(sys.stdlib_module_names) == allowed


def test_kit_version_follows_edgenas():
    import edgenas

    assert kit.KIT_VERSION == edgenas.__version__
