#!/usr/bin/env python3
"""Which static-quantisation recipe suits ONNX Runtime's CPU provider: p50 latency (1 thread) and test accuracy.

Compares the TensorRT-style graph edgenas builds engines from (symmetric INT8, convolutions only,
stem in float) with ONNX Runtime recipes: QUInt8 or QInt8 activations, per-channel or per-tensor
weights, all operators or convolutions only, with and without ``quant_pre_process``. Calibration:
minmax on 512 training images of RUN_DIR (its test split gives the accuracy), or, with ``--random
DEPTH WIDTH``, a randomly initialised all-separable network on 3x32x32 random images (latency only).

    python benchmarks/int8_configs.py runs/demo-digits
    python benchmarks/int8_configs.py --random 10 32
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from onnxruntime.quantization import (
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from edgenas.device_kit import edgenas_kit as kit
from edgenas.run.loading import load_run_data
from edgenas.run.rundir import RunDir
from edgenas.runtime.onnx import quantize_int8, timing_onnx
from edgenas.runtime.onnx_quantize import _quiet, _reader, calibration_images
from edgenas.search.space import Arch
from edgenas.training.augment import normalize
from edgenas.training.network import build_network

U8, S8 = QuantType.QUInt8, QuantType.QInt8
RECIPES = {  # name: (activations, per-channel weights, op types (None: all ORT quantises), symmetric activations, prep)
    "u8s8-all-pc +prep (edgenas)": (U8, True, None, False, True),
    "u8s8-conv-pc +prep": (U8, True, ["Conv"], False, True),
    "u8s8-all-pt +prep": (U8, False, None, False, True),
    "s8s8-all-pc +prep": (S8, True, None, False, True),
    "s8s8sym-all-pc +prep": (S8, True, None, True, True),
    "u8s8-all-pc, no prep": (U8, True, None, False, False),
}


def quantise(src: Path, dst: Path, calibration: np.ndarray, recipe) -> Path:
    activations, per_channel, ops, symmetric, prep = recipe
    with _quiet():
        if prep:
            quant_pre_process(str(src), str(dst.with_suffix(".prep.onnx")), skip_symbolic_shape=True)
            src = dst.with_suffix(".prep.onnx")
        quantize_static(
            str(src),
            str(dst),
            _reader(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=activations,
            weight_type=S8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True},
            **({} if ops is None else {"op_types_to_quantize": ops}),
        )
    return dst


def p50(path: Path, runs: int) -> float:
    with kit.open_runner(path, "onnxruntime-cpu", 1) as runner:
        x = kit.bench_input(runner.input_chw, 1)
        return float(np.median(kit.measure(lambda: runner(x), warmup=50, runs=runs)))


def accuracy(path: Path, x, y) -> str:
    if x is None:
        return "-"
    with kit.open_runner(path, "onnxruntime-cpu", 1) as runner:
        return f"{100 * float(np.mean(kit.run_batched(runner, x).argmax(1) == y)):.2f}%"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", nargs="?", type=Path)
    p.add_argument("--random", nargs=2, type=int, metavar=("DEPTH", "WIDTH"))
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds (the median of their p50s is shown)")
    p.add_argument("--runs", type=int, default=200, help="timed runs per file and round")
    a = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="edgenas-int8-configs-"))
    if a.random:
        torch.manual_seed(0)
        model = build_network(Arch.plain(*a.random), task="classify", in_channels=3, outputs=10).eval()
        fp32 = timing_onnx(model, tmp / "fp32.onnx", (3, 32, 32))
        calibration, x, y = np.random.default_rng(0).standard_normal((64, 3, 32, 32), dtype=np.float32), None, None
    else:
        run = RunDir.open(a.run_dir)
        data = load_run_data(run)
        fp32, calibration = run.path / "export" / "model.onnx", calibration_images(data, 512)
        x, y = normalize(data.test.x, data.mean, data.std).numpy(), data.test.y.numpy()
    files = {
        "fp32": fp32,
        "TensorRT-style (s8 sym, conv, stem fp32)": quantize_int8(
            fp32, out_path=tmp / "trt.onnx", calibration=calibration
        ),
    }
    files |= {name: quantise(fp32, tmp / f"r{i}.onnx", calibration, r) for i, (name, r) in enumerate(RECIPES.items())}
    times = {name: [] for name in files}
    for _ in range(a.rounds):  # interleaved: a busy spell on a shared machine hits every file alike
        for name, path in files.items():
            times[name].append(p50(path, a.runs))
    print(f"{kit.cpu_name()}, 1 thread; median of {a.rounds} interleaved rounds' p50 ({a.runs} runs each)")
    print("| recipe | p50 | rounds' p50 range | test accuracy |\n|---|---|---|---|")
    for name, path in files.items():
        t = times[name]
        print(f"| {name} | {np.median(t):.4f} ms | {min(t):.4f}–{max(t):.4f} | {accuracy(path, x, y)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
