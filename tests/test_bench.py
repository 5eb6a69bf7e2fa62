"""edgenas bench: the runtime table, ONNX files and run directories, errors, and the CLI."""

from __future__ import annotations

import importlib.util
import json
import os
import warnings
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import make_meta

from edgenas.cli import main
from edgenas.config.runtimes import RUNTIMES
from edgenas.deploy import bench
from edgenas.device_kit import edgenas_env as env
from edgenas.device_kit import edgenas_kit as kit
from edgenas.errors import MissingDependency, UserInputError
from edgenas.search.space import Arch
from edgenas.training.network import build_model


def export_onnx(model, path: Path, size: int = 32) -> None:
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


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished run as discover + export leave it: run.json, arch.json, model.pt, export/model.onnx."""
    run = tmp_path_factory.mktemp("run")
    arch = Arch.plain(3, 8)
    torch.manual_seed(0)
    model = build_model(arch, 3, 10).eval()
    (run / "run.json").write_text(json.dumps(make_meta(in_channels=3, num_classes=10, input_size=(32, 32)).to_dict()))
    (run / "arch.json").write_text(arch.to_json())
    torch.save(model.state_dict(), run / "model.pt")
    (run / "export").mkdir()
    export_onnx(model, run / "export" / "model.onnx")
    return run


def test_runtime_table_agrees_with_the_kit():
    for name, (engine, suffix, needs_gpu) in kit.RUNTIMES.items():
        rt = RUNTIMES[name]
        assert (rt.engine, rt.suffix, rt.needs_gpu) == (engine, suffix, needs_gpu)
    assert {n for n, r in RUNTIMES.items() if r.in_kit} == set(kit.RUNTIMES)  # not torch-*, not tflm-int8


def test_bench_onnx_file(run_dir):
    onnx = run_dir / "export" / "model.onnx"
    r = bench.bench(onnx, batch=2, threads=1, warmup=2, runs=12)
    kit.validate_bench(r)
    assert (r["runtime"], r["threads"], r["batch"], r["input_shape"], r["runs"]) == (
        "onnxruntime-cpu",
        1,
        2,
        [2, 3, 32, 32],
        12,
    )
    assert r["model_sha256"] == kit.file_sha256(onnx) and r["tool"] == bench.TOOL
    assert r["p50_ms"] > 0 and "p50" in bench.format_bench(r)
    e = r["environment"]  # the conditions, measured around the timed runs by the kit's probe
    assert r["schema"] == "edgenas.bench/2" and set(e) == set(env.FIELDS)
    assert e["cpus"] == os.cpu_count() and len(e["load_avg_before"]) == len(e["load_avg_after"]) == 3


def test_bench_run_directory_on_onnxruntime_and_torch(run_dir):
    r = bench.bench(run_dir, threads=1, warmup=1, runs=5)
    assert r["runtime"] == "onnxruntime-cpu" and r["model"].endswith("export/model.onnx")
    before = torch.get_num_threads()
    t = bench.bench(run_dir, runtime="torch-cpu", batch=3, threads=1, warmup=1, runs=5)
    kit.validate_bench(t)
    assert (t["runtime"], t["runtime_version"], t["threads"], t["input_shape"]) == (
        "torch-cpu",
        torch.__version__,
        1,
        [3, 3, 32, 32],
    )
    assert t["model_sha256"] == kit.file_sha256(run_dir / "model.pt")
    assert torch.get_num_threads() == before  # the thread setting is restored


def test_torch_runner_computes_what_onnxruntime_computes(run_dir):
    x = kit.bench_input((3, 32, 32), 4)
    with bench.open_runner(run_dir, "torch-cpu", 1) as t, bench.open_runner(run_dir, "onnxruntime-cpu", 1) as o:
        assert abs(t(x) - o(x)).max() < 1e-4


def test_bench_writes_json_atomically(run_dir, tmp_path):
    r = bench.bench(run_dir / "export" / "model.onnx", threads=1, warmup=0, runs=3)
    bench.write_bench(tmp_path / "b.json", r)
    assert bench.read_bench(tmp_path / "b.json") == r
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json"]


def test_user_errors_are_one_line(run_dir, tmp_path):
    onnx = run_dir / "export" / "model.onnx"
    with pytest.raises(
        UserInputError, match="runtime='ort': unknown runtime; choose one of onnxruntime-cpu, .*torch-cuda"
    ):
        bench.bench(onnx, runtime="ort")
    (tmp_path / "weights.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(UserInputError, match="weights.onnx is not an ONNX model"):
        bench.bench(tmp_path / "weights.onnx")
    with pytest.raises(UserInputError, match="no such model file or run directory"):
        bench.bench(tmp_path / "nothing.onnx")
    with pytest.raises(UserInputError, match="torch-cpu benchmarks a run directory"):
        bench.bench(onnx, runtime="torch-cpu")
    bare = tmp_path / "bare_run"
    bare.mkdir()
    with pytest.raises(UserInputError, match="has no export/model.onnx: run `edgenas export"):
        bench.bench(bare)
    with pytest.raises(UserInputError, match="batch must be >= 1"):
        bench.bench(onnx, batch=0, threads=1)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed")
def test_missing_tensorrt_is_a_missing_dependency(tmp_path):
    (tmp_path / "model.engine").write_bytes(b"\0" * 32)
    with pytest.raises(MissingDependency, match="pip install tensorrt"):
        bench.bench(tmp_path / "model.engine")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
def test_gpu_runtime_without_a_gpu(run_dir):
    with pytest.raises(UserInputError, match="torch-cuda.: needs a CUDA GPU"):
        bench.bench(run_dir, runtime="torch-cuda")


def test_cli_bench(run_dir, tmp_path):
    out = tmp_path / "bench.json"
    r = CliRunner().invoke(
        main,
        [
            "bench",
            str(run_dir / "export" / "model.onnx"),
            "--threads",
            "1",
            "--warmup",
            "1",
            "--runs",
            "5",
            "--batch",
            "2",
            "--json",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "p50" in r.output and f"wrote {out}" in r.output
    assert bench.read_bench(out)["batch"] == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--runtime", "tflite"], "--runtime tflite: unknown runtime"),
        (["--runs", "0"], "runs >= 1"),
    ],
)
def test_cli_bench_bad_input_exits_2(run_dir, args, message):
    r = CliRunner().invoke(main, ["bench", str(run_dir / "export" / "model.onnx"), *args])
    assert r.exit_code == 2 and message in r.output
    assert r.output.strip().count("\n") == 0 and "Traceback" not in r.output


def test_cli_bench_not_onnx(tmp_path):
    (tmp_path / "cat.jpg").write_bytes(b"\xff\xd8\xff")
    r = CliRunner().invoke(main, ["bench", str(tmp_path / "cat.jpg")])
    assert r.exit_code == 2 and "cat.jpg is not an ONNX model" in r.output
