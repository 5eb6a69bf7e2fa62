"""TensorFlow Lite Micro: the footprint model against TFLM's measured arena, and ``export --format tflm``.

Tests that run TFLM or convert a network skip with a reason where tflite-micro or litert-torch is missing
(``pip install 'edgenas[tflm]'``).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess

import numpy as np
import pytest

from edgenas.config.memory_targets import KB, MEMORY_TARGETS
from edgenas.config.profile import load_profile
from edgenas.deploy.evaluate import evaluate_run
from edgenas.deploy.export.exporter import export_run
from edgenas.deploy.export.firmware import (
    BUNDLE_DIR,
    HEADER,
    MODEL,
    README,
    SOURCE,
    c_array,
)
from edgenas.errors import ParamError
from edgenas.run.discover import discover
from edgenas.run.rundir import RunDir
from edgenas.search.footprint import footprint
from edgenas.search.space import Arch

HAS_TFLM = all(importlib.util.find_spec(m) is not None for m in ("tflite_micro", "litert_torch", "ai_edge_litert"))
needs_tflm = pytest.mark.skipif(
    not HAS_TFLM, reason="needs tflite-micro, litert-torch and ai-edge-litert (pip install 'edgenas[tflm]')"
)
TFLM = MEMORY_TARGETS["tflm-int8"]


def test_mcu_profile_range_fits_its_sram_and_flash_binds():
    p = load_profile("mcu")
    s, b = p.search, p.budget
    assert b.memory_target == "tflm-int8" and p.data.input_size == (32, 32)

    def fp(arch):
        return footprint(arch, in_channels=1, input_size=(32, 32), outputs=10, target=TFLM)

    # the macro stages' candidates fit the SRAM budget; the widest is at it (the stem's 2x width channels
    # and the first depthwise output at full resolution), so the range is as wide as the board allows
    widest = fp(Arch.plain(s.max_depth, s.max_width))
    assert widest.activations == b.max_peak_memory_kb * KB
    assert fp(Arch.plain(s.max_depth, s.max_width + s.width_step)).activations > b.max_peak_memory_kb * KB
    # the op and kernel stages can reach networks over the flash budget (convolutions with large kernels)
    heavy = Arch(s.max_depth, s.max_width, (1,) * s.max_depth, (max(s.micro_kernels),) * s.max_depth)
    assert fp(heavy).flash > b.max_flash_kb * KB > widest.flash


def test_c_array_holds_the_bytes():
    data = bytes(range(30))
    text = c_array(data)
    assert [int(v, 16) for v in text.replace(",", " ").split()] == list(data)


def test_max_images_is_an_option_of_the_tflm_format(tmp_path):
    with pytest.raises(ParamError, match="max_images"):
        export_run(tmp_path, formats="onnx", max_images=10)  # an option of the tflm format only


@needs_tflm
@pytest.mark.slow
def test_estimate_equals_tflm_on_random_networks():
    from edgenas.runtime.backend import backend_of
    from edgenas.runtime.memory_check import check_memory

    config = load_profile("demo").search
    report = check_memory(
        config, input_chw=(1, 8, 8), outputs=10, convert=backend_of("tflm-int8").convert, samples=2, seed=3
    )
    assert report["activations_exact"] == 1.0 and report["activations_below"] == 0
    assert report["persistent_max_abs_error_pct"] <= 10.0
    for n in report["networks"]:
        assert n["measured"]["arena_bytes"] <= n["measured"]["peak_memory_bytes"] + n["measured"]["persistent_bytes"]


@pytest.fixture(scope="module")
def tflm_run(tmp_path_factory, budgeted_profile):
    """A search under a memory budget between two candidates' figures, its winner exported for TFLM."""
    if not HAS_TFLM:
        pytest.skip("needs tflite-micro, litert-torch and ai-edge-litert (pip install 'edgenas[tflm]')")
    import torch

    tmp = tmp_path_factory.mktemp("tflm")
    peaks = {
        w: footprint(Arch.plain(3, w), in_channels=1, input_size=(8, 8), outputs=10, target=TFLM).activations
        for w in (16, 24)
    }
    budget = peaks[16] // KB
    assert peaks[16] <= budget * KB < peaks[24]
    budgeted_profile(tmp / "p.toml", {"max_peak_memory_kb": budget}, depths=(3, 3))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        discover(str(tmp / "p.toml"), out=tmp / "run", device="cpu", log=lambda m: None)
        report = export_run(tmp / "run", formats="onnx,tflm", max_images=120)
    finally:
        torch.set_num_threads(before)
    return RunDir.open(tmp / "run"), report, budget


@needs_tflm
@pytest.mark.slow
def test_winner_export_fits_the_budget_and_the_estimate_is_exact(tflm_run):
    run, report, budget = tflm_run
    out = run.path / "export" / BUNDLE_DIR
    memory = json.loads((out / "memory.json").read_text())
    assert memory["measured"]["peak_memory_bytes"] <= budget * KB
    assert memory["estimate"]["peak_memory_bytes"] == memory["measured"]["peak_memory_bytes"]
    assert json.loads((run.path / RunDir.SUMMARY).read_text())["memory"]["measured"] == memory["measured"]
    assert report.parity["tflm"]["accuracy_gate"]["images"] == 120
    for name in (MODEL, HEADER, SOURCE, README):
        assert (out / name).is_file()
    header = (out / HEADER).read_text()
    assert f"kTensorArenaSize = {memory['measured']['arena_bytes'] + 15 & ~15}" in header
    source = (out / SOURCE).read_text()
    assert f"g_model_data_len = {(out / MODEL).stat().st_size}" in source
    if shutil.which("g++"):
        subprocess.run(["g++", "-std=c++17", "-fsyntax-only", str(out / SOURCE)], check=True)


@needs_tflm
@pytest.mark.slow
def test_tflm_computes_what_litert_reference_kernels_compute(tflm_run):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from edgenas.run.loading import load_run_data
    from edgenas.runtime.tflm import TflmRunner
    from edgenas.training.augment import normalize

    run, _, _ = tflm_run
    path = run.path / "export" / BUNDLE_DIR / MODEL
    result = evaluate_run(run.path, model=path, runtime="tflm-int8", max_images=60)
    assert result["images"] == 60 and result["test_images"] > 60 and result["runtime"] == "tflm-int8"
    data = load_run_data(run)
    x = normalize(data.test.x[:60], data.mean, data.std).numpy()
    with TflmRunner(path) as tflm:
        ours = tflm(x)
        out_scale, _ = tflm._scale(tflm.output)
        scale, zero = tflm._scale(tflm.input)
    litert = Interpreter(model_path=str(path), num_threads=1, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    litert.allocate_tensors()
    i, o = litert.get_input_details()[0], litert.get_output_details()[0]
    theirs = []
    for image in np.clip(np.round(x.transpose(0, 2, 3, 1) / scale) + zero, -128, 127).astype(np.int8):
        litert.set_tensor(i["index"], image[None])
        litert.invoke()
        theirs.append((litert.get_tensor(o["index"]).astype(np.float32) - o["quantization"][1]) * o["quantization"][0])
    theirs = np.concatenate(theirs)
    # the same reference arithmetic: logits at most one int8 step apart (measured: 358 of 359 digits test
    # images identical), the same predictions; LiteRT's optimised kernels differ by up to 2 steps (docs/benchmarks.md)
    assert np.abs(ours - theirs).max() <= out_scale * 1.001
    assert (ours.argmax(1) == theirs.argmax(1)).mean() >= 0.98


def test_cli_refuses_what_memory_check_and_export_cannot_do(tmp_path):
    from click.testing import CliRunner

    from edgenas.cli import main

    face = tmp_path / "face.toml"
    face.write_text('task = "face"\n')
    result = CliRunner().invoke(main, ["memory-check", "--profile", str(face)])
    assert result.exit_code == 2 and "memory-check models classifiers" in result.output
    result = CliRunner().invoke(main, ["export", str(tmp_path), "--max-images", "5"])
    assert result.exit_code == 2 and "--max-images 5: applies to the tflm format only" in result.output
