"""CPU training with 1 thread against every core, without and with 2 busy processes beside it.

Two workloads: the demo search end to end (``edgenas discover --profile demo --threads T``, wall
time) and training steps of a tiny-space network on 32x32x3 images (median seconds per step, and
the step's MACs, which is what ``edgenas/training/threads.py``'s policy reads). "idle" means no
load of this tool's own; the load average beside each figure says what else the machine was doing.

    python benchmarks/bench_threads.py                      # both workloads, both loads
    python benchmarks/bench_threads.py --skip-demo --epochs 2
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from synthetic import synthetic_dataset

from edgenas.config.plan import TrainPlan
from edgenas.search.space import Arch, count_macs
from edgenas.training.network import build_model
from edgenas.training.threads import available_cores, step_macs
from edgenas.training.trainer import fit

BATCH = 64
STEPS_PER_EPOCH = 4

BUSY = "while True: pass"


@contextmanager
def busy_processes(n: int):
    """``n`` processes spinning on a core each, ended (by their ids) after the block."""
    procs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(n)]
    try:
        time.sleep(1.0)  # let them take their cores
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def load_average() -> float:
    return os.getloadavg()[0]


def demo_seconds(threads: int, timeout: float) -> float | None:
    """Wall seconds of a whole demo search with ``threads``; None when it ran past ``timeout``."""
    with tempfile.TemporaryDirectory(prefix="bench-threads-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "edgenas.cli",
            "discover",
            "--profile",
            "demo",
            "--device",
            "cpu",
            "--threads",
            str(threads),
            "--out",
            str(Path(tmp) / "run"),
            "-q",
        ]
        t0 = time.perf_counter()
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return time.perf_counter() - t0


def step_seconds(arch: Arch, threads: int, epochs: int) -> float:
    """Median seconds of one training step of ``arch`` (the trainer's own loop, reference protocol, batch 64)
    on synthetic CIFAR-10-shaped images (32x32x3): per epoch of 4 steps, the first epoch left out (warm-up)."""
    data = synthetic_dataset("cifar10", n_train=BATCH * STEPS_PER_EPOCH, n_test=10, val_fraction=0.0)
    marks: list[float] = []
    torch.manual_seed(0)
    model = build_model(arch, 3, 10)
    fit(
        model,
        data=data,
        epochs=epochs + 1,
        plan=TrainPlan(batch_size=BATCH),
        device=torch.device("cpu"),
        seed=0,
        on_epoch=lambda epoch, total, loss, acc, seconds: marks.append(seconds),
        threads=threads,
    )
    return statistics.median(b - a for a, b in zip(marks, marks[1:])) / STEPS_PER_EPOCH


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4, help=f"timed epochs of {STEPS_PER_EPOCH} steps per figure")
    ap.add_argument("--skip-demo", action="store_true", help="only the tiny-space steps")
    ap.add_argument("--demo-timeout", type=float, default=600.0, help="seconds before a demo search is stopped")
    ap.add_argument("--load", type=int, default=2, help="busy processes of the loaded case")
    ap.add_argument("--only", choices=["idle", "loaded"], default=None, help="only one of the two cases")
    ap.add_argument("--max-depth", type=int, default=20, help="leave out the step networks deeper than this")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))  # the busy processes end with us
    cores = available_cores()
    counts = sorted({1, cores})
    archs = [a for a in (Arch.plain(10, 16), Arch.plain(10, 64), Arch.plain(20, 64)) if a.depth <= args.max_depth]
    print(f"cores {cores}; torch {torch.__version__}; load averages are 1-minute figures before each run")
    for loaded in [c == "loaded" for c in ("idle", "loaded") if args.only in (None, c)]:
        label = f"{args.load} busy" if loaded else "no load of ours"
        with busy_processes(args.load if loaded else 0):
            for arch in archs:
                macs = step_macs(count_macs(arch, in_channels=3, num_classes=10, input_size=(32, 32)), BATCH)
                for t in counts:
                    la = load_average()
                    s = step_seconds(arch, t, args.epochs)
                    print(
                        f"step  {str(arch):24} {macs / 1e9:6.2f} GMAC  {label:16} threads {t}: {s * 1000:8.1f} ms/step"
                        f"  (load avg {la:.1f})",
                        flush=True,
                    )
            if args.skip_demo:
                continue
            for t in counts:
                la = load_average()
                s = demo_seconds(t, args.demo_timeout)
                figure = f"{s:7.1f} s" if s is not None else f"> {args.demo_timeout:.0f} s (stopped)"
                print(
                    f"demo  discover --profile demo  {label:16} threads {t}: {figure}  (load avg {la:.1f})", flush=True
                )


if __name__ == "__main__":
    main()
