#!/usr/bin/env python3
"""CPU cost of speculative scheduling per request, with training made instant (docs/benchmarks.md).

    python benchmarks/bench_scheduling.py --requests 100 300 500 --slots 8

An egnas search on a deterministic accuracy oracle, its depth range chosen so that it makes about
the asked number of requests, driven sequentially and through ``drive_speculative`` with a pool
whose candidates finish at once: all the speculative run's CPU time is scheduling (guessing and
bookkeeping). Prints one JSON line per size; exits 1 if the two paths' requests differ.
"""

import argparse
import concurrent.futures as cf
import hashlib
import json
import sys
import time

from edgenas.config.strategies import EgnasConfig
from edgenas.search.replay import MemoryEvaluator
from edgenas.search.speculation import drive_speculative
from edgenas.search.strategies import Outcome, drive, egnas


def _jitter(key: str) -> float:
    """A stable pseudo-random number in [0, 1) per candidate."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 2**32


def oracle(cand) -> Outcome:
    """Deeper always pays; narrower pays down to width 40; one micro change in eight pays."""
    a = cand.arch
    if cand.stage == "depth":
        return Outcome(20.0 + 0.2 * a.depth, 50.0)
    base = 20.0 + 0.2 * a.depth
    if cand.stage == "width":
        return Outcome(base if a.width >= 40 else base - 1.0, 50.0)
    return Outcome(base + (0.05 if _jitter(cand.key()) < 0.125 else -0.05) * (1 + sum(a.ops)), 50.0)


class InstantPool:
    """The pool protocol of ``drive_speculative``; every submitted candidate is already trained."""

    def __init__(self):
        self.trained = 0

    def submit(self, cand, seed: int, tag: str) -> cf.Future:
        self.trained += 1
        out = oracle(cand)
        fut: cf.Future = cf.Future()
        fut.set_result({"status": "trained", "val_acc": out.acc, "train_acc": out.train_acc, "seconds": 0.0})
        return fut

    def cancel(self, cand, future) -> None:
        pass

    def uncancel(self, cand) -> None:
        pass

    def result(self, cand, future):
        return future.result()

    def close(self) -> None:
        pass


def measure(requests: int, slots: int) -> dict:
    depth = max(11, round((requests - 7) / 3))  # depth stage + 15 widths + ops + kernels = 3 D + 7
    cfg = EgnasConfig(max_depth=depth)

    def factory():
        return egnas(cfg, 3, 10)

    t0 = time.process_time()
    seq = drive(factory(), oracle)
    t1 = time.process_time()
    pool = InstantPool()
    spec = drive_speculative(factory, evaluator=MemoryEvaluator(), pool=pool, slots=slots, seed_of=lambda key: 0)
    t2 = time.process_time()
    same = [c for c, _ in seq.history] == [c for c, _ in spec.history] and seq.arch == spec.arch
    return {
        "requests": seq.candidates,
        "slots": slots,
        "max_depth": depth,
        "same_requests": same,
        "sequential_cpu_s": round(t1 - t0, 3),
        "speculative_cpu_s": round(t2 - t1, 3),
        "scheduling_cpu_ms_per_request": round(1000 * (t2 - t1 - (t1 - t0)) / seq.candidates, 3),
        "candidates_started": pool.trained,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, nargs="+", default=[100, 300, 500])
    parser.add_argument("--slots", type=int, default=8)
    args = parser.parse_args(argv)
    ok = True
    for n in args.requests:
        row = measure(n, args.slots)
        print(json.dumps(row), flush=True)
        ok &= row["same_requests"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
