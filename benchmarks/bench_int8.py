#!/usr/bin/env python3
"""FP32 against ONNX Runtime INT8 for one run: p50 latency (interleaved rounds) and accuracy on the whole test split.

Exports ``model.onnx`` and ``model.int8.onnx`` (``edgenas export --format onnx-int8``) when missing,
then times both on ``onnxruntime-cpu`` with ``--threads`` threads in alternating rounds (a busy
spell on a shared machine hits both alike) and evaluates both with ``edgenas evaluate``'s code.

    python benchmarks/bench_int8.py runs/demo-digits --threads 1 --json int8.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from edgenas.deploy.evaluate import evaluate_run
from edgenas.deploy.export.exporter import export_run
from edgenas.device_kit import edgenas_kit as kit
from edgenas.errors import AccuracyDropError
from edgenas.run.rundir import RunDir


def interleaved_p50(files: dict[str, Path], *, threads: int, rounds: int, runs: int, warmup: int) -> dict:
    """Per file: p50 over all timed runs (ms) and the p50 of each round."""
    runners = {name: kit.open_runner(path, "onnxruntime-cpu", threads) for name, path in files.items()}
    samples: dict[str, list[list[float]]] = {name: [] for name in files}
    try:
        for _ in range(rounds):
            for name, runner in runners.items():
                x = kit.bench_input(runner.input_chw, 1)
                samples[name].append(kit.measure(lambda r=runner, x=x: r(x), warmup=warmup, runs=runs))
    finally:
        for runner in runners.values():
            runner.close()
    return {
        name: {"p50_ms": float(np.median(np.concatenate(s))), "round_p50_ms": [float(np.median(r)) for r in s]}
        for name, s in samples.items()
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--runs", type=int, default=300, help="timed runs per model and round")
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--calibration-images", type=int, default=512)
    p.add_argument("--json", dest="json_out", type=Path)
    a = p.parse_args(argv)
    run = RunDir.open(a.run_dir)
    out = run.path / "export"
    files = {"fp32": out / "model.onnx", "int8": out / "model.int8.onnx"}
    if not all(f.is_file() for f in files.values()):
        try:
            export_run(run.path, formats=("onnx", "onnx-int8"), calibration_images=a.calibration_images)
        except AccuracyDropError as e:
            print(f"note: {e}", file=sys.stderr)  # the files stay; their figures are reported below
    load_before = os.getloadavg()[0]
    latency = interleaved_p50(files, threads=a.threads, rounds=a.rounds, runs=a.runs, warmup=a.warmup)
    load_after = os.getloadavg()[0]
    acc = {name: evaluate_run(run.path, model=path, threads=a.threads) for name, path in files.items()}
    key = "top1" if run.meta.task == "classify" else "accuracy"
    result = {
        "run_dir": str(run.path),
        "arch": str(run.arch()),
        "input_chw": list(run.meta.data.input_chw),
        "dataset": run.meta.dataset.name,
        "test_images": acc["fp32"]["images"],
        "threads": a.threads,
        "cpu": kit.cpu_name(),
        "load_1min": [load_before, load_after],
        "latency": latency,
        "accuracy": {"pytorch": acc["fp32"]["pytorch"][key], **{n: acc[n]["artifact"][key] for n in files}},
        "metric": acc["fp32"]["metric"],
        "calibration": json.loads((out / "parity.json").read_text())["formats"].get("onnx-int8", {}).get("calibration"),
    }
    f, i = latency["fp32"]["p50_ms"], latency["int8"]["p50_ms"]
    print(
        f"{result['arch']} {'x'.join(map(str, result['input_chw']))} on {result['cpu']}, {a.threads} thread(s), "
        f"load {load_before:.1f} -> {load_after:.1f}"
    )
    print(f"| fp32 p50 | int8 p50 | int8 speed-up | PyTorch {key} | fp32 ONNX {key} | int8 {key} |")
    print(
        f"| {f:.4f} ms | {i:.4f} ms | {f / i:.2f}x | {result['accuracy']['pytorch']:.2f}% | "
        f"{result['accuracy']['fp32']:.2f}% | {result['accuracy']['int8']:.2f}% |"
    )
    print(
        "round p50s (ms): fp32 "
        + " ".join(f"{x:.4f}" for x in latency["fp32"]["round_p50_ms"])
        + " | int8 "
        + " ".join(f"{x:.4f}" for x in latency["int8"]["round_p50_ms"])
    )
    if a.json_out:
        a.json_out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {a.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
