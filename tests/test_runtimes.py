"""The edge runtimes' plug-ins (LiteRT, ExecuTorch, OpenVINO, ncnn): each converts a trained
demo-space network, and its file, run by the device kit, computes what PyTorch computes.

Each test is parametrised over every runtime of these engines in ``config.runtimes.RUNTIMES``, so a
new one is tested by adding its row; a runtime whose package is not installed skips with the
pip command that installs it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import discover_cmd, slow_engines_marked, torch_threads

from edgenas.config.runtimes import RUNTIMES
from edgenas.device_kit import edgenas_engines as engines
from edgenas.device_kit import edgenas_kit as kit
from edgenas.errors import MissingDependency
from edgenas.runtime import executorch, litert, ncnn, openvino
from edgenas.search.space import Arch
from edgenas.training.augment import normalize
from edgenas.training.data import load_dataset
from edgenas.training.network import build_model, build_network

ENGINE_MODULES = {"litert": litert, "executorch": executorch, "openvino": openvino, "ncnn": ncnn}
PACKAGES = {
    "litert": ("ai_edge_litert", "litert_torch"),
    "executorch": ("executorch",),
    "openvino": ("openvino", "nncf"),
    "ncnn": ("ncnn", "pnnx"),
}
EDGE = [name for name, r in RUNTIMES.items() if r.engine in ENGINE_MODULES]
ARCH = Arch(4, 8, (0, 1, 0, 1), (3, 5, 3, 7))  # both ops, three kernel sizes, a stride-2 stage
FP32_MAX_ABS_DIFF = 1e-4  # logits of O(10): float32 summation order gives ~1e-7 (measured 1e-8..2e-7)
INT8_MIN_AGREEMENT = 0.95  # top-1 agreement with PyTorch over the digits test split (measured >= 0.98)
ROOT = Path(__file__).resolve().parents[1]


def backend(runtime: str):
    engine = RUNTIMES[runtime].engine
    missing = [p for p in PACKAGES[engine] if importlib.util.find_spec(p) is None]
    if missing:
        pytest.skip(f"{runtime} needs {', '.join(missing)}: {RUNTIMES[runtime].install}")
    found = [b for b in ENGINE_MODULES[engine].BACKENDS if b.name == runtime]
    assert len(found) == 1, f"{runtime} has {len(found)} plug-ins in runtime/{engine}.py"
    return found[0]


@pytest.fixture(scope="module")
def trained():
    """A demo-space network trained briefly on digits (distinct logits, real BatchNorm statistics):
    (model, calibration images, test images, test labels)."""
    data = load_dataset("digits", seed=0, val_fraction=0.1)
    torch.manual_seed(0)
    model = build_model(ARCH, data.in_channels, data.num_classes).train()
    x = normalize(data.train.x, data.mean, data.std)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    with torch_threads(1):
        for step in range(120):
            i = step * 64 % (len(x) - 64)
            loss = torch.nn.functional.cross_entropy(model(x[i : i + 64]), data.train.y[i : i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    test = normalize(data.test.x, data.mean, data.std).numpy()
    return model.eval(), x[:256].numpy(), test, data.test.y.numpy()


@pytest.fixture(scope="module")
def converted(trained, tmp_path_factory):
    """runtime -> its converted file (each converted once for the module)."""
    folder, files = tmp_path_factory.mktemp("edge"), {}

    def get(runtime: str) -> Path:
        if runtime not in files:
            b = backend(runtime)
            with torch_threads(1):
                files[runtime] = b.convert(
                    trained[0], out=folder / f"{runtime}{b.suffix}", input_chw=(1, 8, 8), calibration=trained[1]
                )
        return files[runtime]

    return get


def reference(model, images: np.ndarray) -> np.ndarray:
    with torch.no_grad(), torch_threads(1):
        return model(torch.from_numpy(images)).numpy()


@pytest.mark.parametrize("runtime", slow_engines_marked(EDGE))
def test_the_runtime_computes_what_pytorch_computes(runtime, trained, converted):
    model, _, test, labels = trained
    b = backend(runtime)
    with b.open(converted(runtime), threads=1) as runner:
        out = kit.run_batched(runner, test)
        assert (runner.runtime, runner.threads, tuple(runner.input_chw)) == (runtime, 1, (1, 8, 8))
        assert runner.runtime_version == b.version()
    ref = reference(model, test)
    agreement = float(np.mean(out.argmax(1) == ref.argmax(1)))
    if b.precision == "fp32":
        assert np.abs(out - ref).max() <= FP32_MAX_ABS_DIFF
        assert agreement == 1.0
    else:  # INT8: judged by what it decides, as the export gate does
        assert agreement >= INT8_MIN_AGREEMENT, f"top-1 agreement {agreement:.3f}"
        accuracy, torch_accuracy = np.mean(out.argmax(1) == labels), np.mean(ref.argmax(1) == labels)
        assert accuracy >= torch_accuracy - 0.02, f"INT8 accuracy {accuracy:.3f}, PyTorch {torch_accuracy:.3f}"
        assert np.abs(out - ref).max() > 0  # really quantised: an INT8 file that computes in float would be exact


@pytest.mark.parametrize("runtime", slow_engines_marked(EDGE))
def test_the_file_carries_metadata_the_kit_reads(runtime, converted):
    path = converted(runtime)
    meta = json.loads(engines.metadata_path(path).read_text())
    assert meta["runtime"] == runtime and meta["input_chw"] == [1, 8, 8]
    assert meta["layout"] == ("NHWC" if RUNTIMES[runtime].engine == "litert" else "NCHW")
    assert kit.default_runtime(path) == runtime  # the kit picks the runtime the file was made for
    if RUNTIMES[runtime].precision == "int8":
        assert engines.size_on_disk(path) < engines.size_on_disk(converted(runtime.replace("-int8", "-cpu"))) / 2


@pytest.mark.parametrize("runtime", slow_engines_marked(EDGE))
def test_a_face_embedding_net_keeps_its_cosine(runtime, tmp_path):
    b = backend(runtime)
    torch.manual_seed(1)
    net = build_network(Arch(3, 8, (0, 1, 0), (3, 5, 3)), task="face", in_channels=3, outputs=16).train()
    with torch.no_grad(), torch_threads(1):
        for _ in range(3):
            net(torch.randn(32, 3, 16, 16))  # BatchNorm statistics
        net.eval()
        images = torch.randn(32, 3, 16, 16).numpy()
        path = b.convert(net, out=tmp_path / f"face{b.suffix}", input_chw=(3, 16, 16), calibration=images)
    with b.open(path, threads=1) as runner:
        out = runner(images)
    ref = reference(net, images)
    cosine = (out * ref).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))
    assert cosine.min() >= (0.999999 if b.precision == "fp32" else 0.98)


@pytest.mark.parametrize("runtime", EDGE)
def test_a_missing_package_names_the_extra(runtime, monkeypatch):
    b = backend(runtime)
    for package in PACKAGES[b.engine]:
        monkeypatch.setitem(sys.modules, package, None)  # as if not installed: import and find_spec fail
    with pytest.raises(MissingDependency, match=rf"pip install edgenas\[{b.engine}\]$"):
        b.available()
    with pytest.raises(MissingDependency, match=rf"pip install edgenas\[{b.engine}\]$"):
        b.convert(torch.nn.Identity(), out=Path("unused") / f"m{b.suffix}", input_chw=(1, 8, 8))


@pytest.mark.parametrize("runtime", slow_engines_marked(EDGE))
def test_the_kit_without_the_runtime_package_says_how_to_install_it(runtime, converted, monkeypatch):
    path = converted(runtime)
    monkeypatch.setitem(sys.modules, engines.PACKAGES[RUNTIMES[runtime].engine][0], None)
    with pytest.raises(kit.KitMissingDependency, match=r"pip install [a-z-]+$"):
        kit.open_runner(path, runtime, 1)


@pytest.mark.slow
def test_litert_metadata_is_required_and_checked(converted, tmp_path):
    path = (
        converted("litert-cpu") if importlib.util.find_spec("ai_edge_litert") else pytest.skip("needs ai-edge-litert")
    )
    copy = tmp_path / "copy.tflite"
    copy.write_bytes(path.read_bytes())
    with pytest.raises(kit.KitError, match="copy.tflite.json must give the input layout"):
        kit.open_runner(copy, "litert-cpu", 1)
    engines.metadata_path(copy).write_text(json.dumps({"layout": "NHWC", "input_chw": [3, 8, 8]}))
    with pytest.raises(kit.KitError, match="belong to different exports"):
        kit.open_runner(copy, "litert-cpu", 1)
    engines.metadata_path(copy).write_text("{not json")
    with pytest.raises(kit.KitError, match="not a readable metadata file"):
        kit.open_runner(copy, "litert-cpu", 1)


@pytest.mark.slow
def test_openvino_conversion_writes_nothing_in_the_home_folder(tmp_path):
    """OpenVINO's converter and NNCF keep telemetry files under ~/intel unless told they run in CI."""
    if importlib.util.find_spec("openvino") is None or importlib.util.find_spec("nncf") is None:
        pytest.skip("needs openvino and nncf: pip install edgenas[openvino]")
    home = tmp_path / "home"
    home.mkdir()
    script = (
        f"import sys, torch; sys.path.insert(0, {str(ROOT / 'tests')!r})\n"
        "from edgenas.runtime.openvino import BACKENDS\n"
        "net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten()).eval()\n"
        f"for b in BACKENDS: b.open(b.convert(net, out=__import__('pathlib').Path({str(tmp_path)!r}) / f'{{b.name}}.xml',"
        " input_chw=(1, 8, 8)), threads=1)(__import__('numpy').zeros((1, 1, 8, 8), 'float32'))\n"
    )
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert list(home.rglob("*")) == []


def litert_device_env(root: Path) -> Path:
    """A fresh venv whose site-packages holds only numpy and ai-edge-litert (linked from this one)."""
    import venv

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
    for name in ("numpy", "ai_edge_litert"):
        src = Path(importlib.util.find_spec(name).submodule_search_locations[0])
        for path in [src, *src.parent.glob(f"{name}.libs"), *src.parent.glob(f"{name}-*.dist-info")]:
            (site / path.name).symlink_to(path)
    return python


@pytest.mark.slow
def test_the_kit_alone_with_only_numpy_and_litert_checks_benchmarks_and_serves(trained, converted, tmp_path):
    """What a phone-class device needs for a .tflite: the kit's files, numpy and ai-edge-litert."""
    if importlib.util.find_spec("ai_edge_litert") is None or importlib.util.find_spec("litert_torch") is None:
        pytest.skip("needs ai-edge-litert and litert-torch: pip install edgenas[litert]")
    import http.client
    import shutil

    model, _, test, _ = trained
    python = litert_device_env(tmp_path / "venv")
    device = tmp_path / "device"
    device.mkdir()
    for kit_file in (ROOT / "export").glob("edgenas_*.py"):
        shutil.copy(kit_file, device / kit_file.name)
    tflite = converted("litert-int8")
    for path in (tflite, engines.metadata_path(tflite)):
        shutil.copy(path, device / path.name.replace("litert-int8", "model.int8"))
    kit.save_samples(device / "samples.npz", inputs=test[:32], outputs=reference(model, test[:32]), task="classify")

    def run(*args):
        return subprocess.run(
            [str(python), "-I", *map(str, args)], capture_output=True, text=True, cwd=device, timeout=300
        )

    probe = "import importlib.util as u; print([n for n in ('numpy', 'ai_edge_litert', 'torch', 'edgenas', 'onnxruntime') if u.find_spec(n)])"
    assert run("-c", probe).stdout.strip() == "['numpy', 'ai_edge_litert']"

    # check: INT8 logits differ from PyTorch's by design; top-1 agreement is what is held
    check = run(
        "edgenas_kit.py",
        "check",
        ".",
        "--runtime",
        "litert-int8",
        "--threads",
        "1",
        "--max-abs-diff",
        "inf",
        "--min-agreement",
        "90%",
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "litert-int8" in check.stdout and "PASS" in check.stdout
    bench = run("edgenas_kit.py", "bench", "model.int8.tflite", "--threads", "1", "--runs", "20", "--json", "b.json")
    assert bench.returncode == 0, bench.stderr
    record = kit.read_bench(device / "b.json")
    assert record["runtime"] == "litert-int8" and record["input_shape"] == [1, 1, 8, 8] and record["threads"] == 1

    (device / "token").write_text("litert-token-0123456789\n")
    server = subprocess.Popen(
        [str(python), "-I", "edgenas_kit.py", "serve", "--port", "0", "--token-file", "token", "--threads", "1"],
        cwd=device,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = server.stdout.readline()
        assert "listening on http://127.0.0.1:" in line, line + server.stderr.read()
        port = int(line.split("127.0.0.1:")[1].split()[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        auth = {"Authorization": "Bearer litert-token-0123456789"}
        conn.request("GET", "/status", headers=auth)
        status = json.loads(conn.getresponse().read())
        assert {"litert-cpu", "litert-int8"} <= set(status["runtimes"]) and status["versions"]["ai-edge-litert"]
        conn.request(
            "POST",
            "/bench?runtime=litert-int8&layout=NHWC&runs=10&name=model.int8.tflite",
            body=tflite.read_bytes(),
            headers=auth,
        )
        response = conn.getresponse()
        answer = json.loads(response.read())
        assert response.status == 200, answer
        assert answer["runtime"] == "litert-int8" and answer["input_shape"] == [1, 1, 8, 8] and answer["runs"] == 10
        conn.request("POST", "/bench?runtime=openvino-cpu", body=b"<xml/>", headers=auth)
        response = conn.getresponse()
        assert response.status == 400 and "two files" in json.loads(response.read())["error"]
    finally:
        server.kill()
        server.wait(timeout=30)


# tests/data/profiles/ci.toml's space. The same searches on profiles/demo.toml's space (depths 3-6, widths 8-24) took
# 40.5 s (litert-int8) and 12.1 s (openvino-cpu) on an idle core and passed: run with EDGENAS_DEMO_SPACE=1 (the path
# is the same; the suite keeps the small space). Recorded in docs/lab/runtimes.md.
SEARCH_SPACES = [pytest.param({"depths": (2, 3), "widths": (4, 12), "width_step": 4}, id="ci")]
if os.environ.get("EDGENAS_DEMO_SPACE"):
    SEARCH_SPACES.append(pytest.param({"depths": (3, 6), "widths": (8, 24), "width_step": 4}, id="demo"))


@pytest.mark.parametrize("space", SEARCH_SPACES)
@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["litert-int8", "openvino-cpu"])
def test_a_search_under_a_latency_budget_on_an_edge_runtime_finishes(runtime, space, tmp_path, budgeted_profile):
    """Each candidate (one epoch each) is converted for the runtime and timed there (1 thread); the winner fits
    the budget. On the ci space, and on profiles/demo.toml's (slow)."""
    backend(runtime)
    profile = budgeted_profile(
        tmp_path / "budget.toml", {"max_latency_ms": 5.0, "runtime": runtime, "threads": 1}, **space
    )
    out = tmp_path / "run"
    r = subprocess.run(
        discover_cmd(profile, out),
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    records = [json.loads(line) for line in (out / "latency.jsonl").read_text().splitlines()]
    assert records and all(
        rec["source"]["runtime"] == runtime and rec["source"]["source"] == "measured" and rec["source"]["threads"] == 1
        for rec in records
    )
    winner = json.loads((out / "arch.json").read_text())
    from edgenas.search.space import Arch as _Arch

    assert {rec["key"]: rec["ms"] for rec in records}[str(_Arch.from_dict(winner))] <= 5.0
    assert not (tmp_path / "intel").exists()  # OpenVINO's telemetry stayed off


@pytest.mark.parametrize("runtime", slow_engines_marked(EDGE))
def test_a_relative_output_path_converts(runtime, trained, tmp_path, monkeypatch):
    """`edgenas export runs/x` hands the converters relative paths (pnnx runs in its own folder)."""
    b = backend(runtime)
    monkeypatch.chdir(tmp_path)
    with torch_threads(1):
        path = b.convert(trained[0], out=Path("rel") / f"m{b.suffix}", input_chw=(1, 8, 8), calibration=trained[1][:16])
    assert path == Path("rel") / f"m{b.suffix}" and path.is_file() and engines.metadata_path(path).is_file()
