"""LiteRT: NHWC against NCHW input, fp32, on one architecture (d4-w16, random weights) at 8x8x1 and at 32x32x3.

Both files of a pair come from the same network (litert-torch; NCHW is the module as it is, NHWC
wraps it with ``to_channel_last_io``) and are timed in interleaved rounds at 1 thread, batch 1.
Prints the p50 of each and the NHWC/NCHW ratio of the medians, through the kit's runner (which takes
NCHW and transposes for an NHWC file, as a caller with NCHW arrays must) and for the interpreter
alone (``invoke`` on an input already in the file's layout, as a camera pipeline feeding NHWC has it).

    OMP_NUM_THREADS=1 python benchmarks/bench_litert_layout.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from edgenas.device_kit import edgenas_engines as engines
from edgenas.device_kit import edgenas_kit as kit
from edgenas.runtime.conversion import quiet
from edgenas.runtime.litert import BACKENDS, _no_progress
from edgenas.search.space import Arch
from edgenas.training.network import build_model

NETWORKS = {  # name -> (arch, input C, H, W)
    "d4-w16 8x8x1": (Arch(4, 16, (0, 1, 0, 1), (3, 5, 3, 3)), (1, 8, 8)),
    "d4-w16 32x32x3": (Arch(4, 16, (0, 1, 0, 1), (3, 5, 3, 3)), (3, 32, 32)),
}


def nchw_copy(backend, model, out: Path, input_chw) -> Path:
    """The same conversion as ``backend.convert`` without the NHWC wrapper (fp32 only, for timing)."""
    import litert_torch

    with quiet(), _no_progress():
        litert_torch.convert(model.eval(), (torch.zeros(1, *input_chw),)).export(str(out))
    engines.write_metadata(out, {"runtime": backend.name, "layout": "NCHW", "input_chw": list(input_chw)})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--runs", type=int, default=200)
    args = p.parse_args()
    torch.set_num_threads(1)
    fp32 = next(b for b in BACKENDS if b.precision == "fp32")
    print(
        f"machine: {kit.cpu_name()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; "
        f"ai-edge-litert {fp32.version()}; {args.rounds} rounds x {args.runs} runs, 1 thread"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name, (arch, chw) in NETWORKS.items():
            torch.manual_seed(0)
            model = build_model(arch, chw[0], 10).eval()
            nhwc = fp32.convert(model, out=Path(tmp) / f"{chw[1]}.nhwc.tflite", input_chw=chw)
            nchw = nchw_copy(fp32, model, Path(tmp) / f"{chw[1]}.nchw.tflite", chw)
            x = kit.bench_input(chw, 1)
            with fp32.open(nhwc, threads=1) as a, fp32.open(nchw, threads=1) as b:
                for what, call in (("kit runner (NCHW in)", lambda r: lambda: r(x)), ("interpreter alone", invoke)):  # noqa: B023 (x of this iteration)
                    sa, sb, ratios = interleaved(call(a), call(b), rounds=args.rounds, runs=args.runs)
                    print(
                        f"{name}, {what}: fp32 NHWC p50 {np.median(sa) * 1e3:.1f} us, NCHW p50 "
                        f"{np.median(sb) * 1e3:.1f} us, NHWC/NCHW median of round ratios {np.median(ratios):.3f} "
                        f"(range {min(ratios):.3f}-{max(ratios):.3f})"
                    )


def invoke(runner):
    """The interpreter's invoke on an input already in the file's layout (nothing converted per call)."""
    it, index = runner.interpreter, runner.input["index"]
    it.set_tensor(index, np.zeros(runner.input["shape"], np.float32))
    return it.invoke


def interleaved(fa, fb, *, rounds: int, runs: int):
    sa, sb, ratios = [], [], []
    for k in range(rounds):
        a = b = None
        for which in "ab" if k % 2 == 0 else "ba":
            if which == "a":
                a = kit.measure(fa, warmup=20, runs=runs)
            else:
                b = kit.measure(fb, warmup=20, runs=runs)
        sa, sb = sa + a, sb + b
        ratios.append(float(np.median(a) / np.median(b)))
    return sa, sb, ratios


if __name__ == "__main__":
    main()
