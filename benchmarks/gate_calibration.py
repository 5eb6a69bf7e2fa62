#!/usr/bin/env python3
"""Does paired mode's gate keep its error rate? Simulated gates, no real timing.

    python benchmarks/gate_calibration.py [--gates 2000] [--rounds 10 15 20 30] [--methods wilcoxon hs sign bootstrap]

Simulates ``edgenas compare models A B`` as it runs: per round, one block of ``--runs`` timed
runs of each model, A then B in even rounds and B then A in odd ones, and the ratio of the blocks'
medians. B's true latency is ``ratio`` times A's. Machines (all noise multiplicative):

- ``lognormal``: each run × lognormal(σ 0.10), each block × lognormal(σ 0.03) (the machine's state
  drifts between blocks);
- ``heavy``: Student-t(3) log noise (runs 0.05, blocks 0.03), and 5 % of runs hit by a spike of
  1 + Pareto(1.5) times their latency (preemption, page faults);
- ``drift``: the lognormal machine slowing by 30 % over the gate, with a 5 % wave of period 7
  rounds on top (thermal or a neighbour's load), felt by each run at its own time.

For each machine, number of rounds and interval method it prints the coverage of the true ratio
by the 95 % interval, the false-failure rate (the build fails although the true slowdown equals
the threshold: nominal 2.5 %, one tail of the interval) and the power (it fails at twice the
threshold). ``--json`` writes the table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from edgenas.deploy.gate.intervals import METHODS

MACHINES = ("lognormal", "heavy", "drift")
RUNS = 20  # timed runs per block, as `edgenas compare models --runs` defaults
THRESHOLD = 0.05


def _log_noise(rng, machine: str, shape: tuple) -> np.ndarray:
    """Log of the multiplicative noise of each run, blocks' shared state included."""
    blocks = shape[:-1] + (1,)
    if machine == "heavy":
        runs = 0.05 * rng.standard_t(3, size=shape)
        spikes = np.where(rng.random(shape) < 0.05, np.log1p(rng.pareto(1.5, size=shape) + 1), 0.0)
        return runs + spikes + 0.03 * rng.standard_t(3, size=blocks)
    return rng.normal(0, 0.10, size=shape) + rng.normal(0, 0.03, size=blocks)


def _drift(rounds: int, runs: int) -> np.ndarray:
    """Log of the machine's slow-down at each run's time: shape (rounds, 2 blocks, runs)."""
    t = (np.arange(rounds * 2 * runs).reshape(rounds, 2, runs)) / (rounds * 2 * runs)  # 0..1 over the gate
    return np.log(1 + 0.3 * t) + np.log(1 + 0.05 * np.sin(2 * np.pi * t * rounds / 7))


def simulate_ratios(
    machine: str, *, gates: int, rounds: int, ratio: float, runs: int = RUNS, seed: int = 0
) -> np.ndarray:
    """Per-round ratios median(B) / median(A) of ``gates`` simulated gates: shape (gates, rounds)."""
    if machine not in MACHINES:
        raise ValueError(f"unknown machine {machine!r}: choose one of {', '.join(MACHINES)}")
    rng = np.random.default_rng(seed)
    logs = _log_noise(rng, machine, (gates, rounds, 2, runs))  # block 0 runs first in its round
    if machine == "drift":
        logs = logs + _drift(rounds, runs)
    b_first = np.arange(rounds) % 2 == 1  # A B, B A, A B, ...
    logs[:, b_first, 0] += np.log(ratio)
    logs[:, ~b_first, 1] += np.log(ratio)
    med = np.median(np.exp(logs), axis=3)  # (gates, rounds, 2 blocks)
    a = np.where(b_first, med[:, :, 1], med[:, :, 0])
    b = np.where(b_first, med[:, :, 0], med[:, :, 1])
    return b / a


def calibrate(
    method: str, *, machine: str, gates: int, rounds: int, threshold: float = THRESHOLD, seed: int = 0
) -> dict:
    """Coverage, false-failure rate at a true slowdown equal to the threshold, and power at twice it."""
    interval = METHODS[method]
    at = simulate_ratios(machine, gates=gates, rounds=rounds, ratio=1 + threshold, seed=seed)
    lo, hi = interval(at)
    far = simulate_ratios(machine, gates=gates, rounds=rounds, ratio=1 + 2 * threshold, seed=seed + 1)
    lo2, _ = interval(far)
    return {
        "method": method,
        "machine": machine,
        "rounds": rounds,
        "gates": gates,
        "coverage": float(np.mean((lo <= 1 + threshold) & (1 + threshold <= hi))),
        "false_failure": float(np.mean(lo > 1 + threshold)),
        "power": float(np.mean(lo2 > 1 + threshold)),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gates", type=int, default=2000, help="simulated gates per row")
    p.add_argument("--rounds", type=int, nargs="+", default=[10, 15, 20, 30])
    p.add_argument("--machines", nargs="+", choices=MACHINES, default=list(MACHINES))
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", dest="json_out", help="write the rows here")
    args = p.parse_args(argv)
    start, rows = time.perf_counter(), []
    print(f"{'machine':10} {'rounds':>6} {'method':10} {'coverage':>9} {'false fail':>10} {'power@2t':>9}")
    for machine in args.machines:
        for rounds in args.rounds:
            for method in args.methods:
                r = calibrate(method, machine=machine, gates=args.gates, rounds=rounds, seed=args.seed)
                rows.append(r)
                print(
                    f"{machine:10} {rounds:6d} {method:10} {r['coverage']:9.1%} {r['false_failure']:10.2%} "
                    f"{r['power']:9.1%}",
                    flush=True,
                )
    print(
        f"{args.gates} gates per row, threshold {THRESHOLD:.0%}, nominal: coverage 95 %, false failures 2.5 %; "
        f"{time.perf_counter() - start:.0f} s"
    )
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
