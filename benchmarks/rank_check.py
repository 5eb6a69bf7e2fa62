#!/usr/bin/env python3
"""Does the fast protocol keep the reference protocol's ranking? Kendall's tau over logged candidates.

    python benchmarks/rank_check.py --epochs-scale 0.25 --noise 0.5 --json rank.json

Takes the candidates of a reference search log (default: the depth and width stages of the
FashionMNIST tiny search, ``tests/data/searchlogs/egnas-fashionmnist-w64.json``: 21 candidates,
depth 10-22 and width 64-48, trained 10-38 epochs), trains each under both protocols (same data,
same initial weights, the log's epochs times ``--epochs-scale``), and reports both rankings by
validation accuracy, Kendall's tau-b between them (``scipy.stats.kendalltau``), the tau of each against the
accuracies in the log (meaningful only on the real dataset at the log's epochs), a tau on
validation loss (finer-grained where accuracies tie), and the wall time and images/s of each
protocol. Without ``--data-dir`` the data are SYNTHETIC images of the dataset's shape, said so;
synthetic classes are easy to tell apart, so ``--noise 0.5`` (Gaussian pixel noise added once)
keeps candidates from all reaching 100 % and tying. ``--max-seconds`` bounds the run: no new
candidate starts after it (each candidate is trained under both protocols before the next).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_data import (
    benchmark_data,
    benchmark_environment,
    data_label,
)
from scipy.stats import kendalltau

from edgenas.config.plan import TrainPlan
from edgenas.search.space import Arch
from edgenas.training.data import Split
from edgenas.training.schedule import schedule_for
from edgenas.training.trainer import select_device, train_candidate

DEFAULT_LOG = Path(__file__).resolve().parents[1] / "tests" / "data" / "searchlogs" / "egnas-fashionmnist-w64.json"
PROTOCOLS = ("reference", "fast")


def kendall_tau(a: list[float], b: list[float]) -> tuple[float, float, str]:
    """(tau-b, two-sided p-value, implementation). NaN when either side is all ties."""
    res = kendalltau(a, b)
    return float(res.statistic), float(res.pvalue), "scipy.stats.kendalltau (tau-b)"


def ranking(values: list[float]) -> list[int]:
    """Candidate positions (0-based, in the given list) from best to worst; ties keep list order."""
    return sorted(range(len(values)), key=lambda i: -values[i] if math.isfinite(values[i]) else math.inf)


def select(log: dict, stages: list[str], limit: int) -> list[tuple[int, dict]]:
    """(index in the log, record) of the candidates of ``stages``; ``limit`` > 0 spreads that many evenly."""
    picked = [(i, c) for i, c in enumerate(log["candidates"]) if c["stage"] in stages]
    if limit and limit < len(picked):
        spots = sorted({round(k * (len(picked) - 1) / (limit - 1)) for k in range(limit)}) if limit > 1 else [0]
        picked = [picked[s] for s in spots]
    return picked


@torch.inference_mode()
def val_loss(model, data, device) -> float:
    """Mean cross-entropy on ``data.val`` (eval mode, same normalisation and precision as ``evaluate``)."""
    model.eval()
    mean = torch.tensor(data.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(data.std, device=device).view(1, -1, 1, 1)
    total = torch.zeros((), device=device)
    for s in range(0, len(data.val), 1024):
        x = ((data.val.x[s : s + 1024].float() / 255.0 - mean) / std).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext():
            logits = model(x)
        total += F.cross_entropy(logits.float(), data.val.y[s : s + 1024], reduction="sum")
    model.train()
    return float(total) / len(data.val)


def add_noise(data, sigma: float, seed: int):
    """``data`` with N(0, sigma) pixel noise (pixel range 1) added once to train and val, rounded and clipped."""
    if sigma == 0:
        return data
    gen = torch.Generator().manual_seed(seed + 7919)

    def noisy(split: Split) -> Split:
        x = split.x.float() + (sigma * 255.0) * torch.randn(split.x.shape, generator=gen)
        return Split(x.round_().clamp_(0, 255).to(torch.uint8), split.y)

    return dataclasses.replace(data, train=noisy(data.train), val=noisy(data.val), test=noisy(data.test))


def images_trained(plan: TrainPlan, n: int, epochs: int) -> int:
    sched = schedule_for(plan, n, epochs)
    return epochs * sum(min(sched.batch_size, n - s) for s in sched.starts)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--log", default=str(DEFAULT_LOG), help="a reference search log (default: FashionMNIST tiny)")
    p.add_argument("--stages", default="depth,width", help="stages of the log to take (default depth,width)")
    p.add_argument(
        "--max-candidates", type=int, default=0, help="at most N candidates, spread evenly (0: all; use >= 8)"
    )
    p.add_argument("--epochs-scale", type=float, default=1.0, help="train round(logged epochs x this), at least 1")
    p.add_argument("--width-scale", type=float, default=1.0, help="train widths x this (only to shrink runs for tests)")
    p.add_argument("--dataset", default=None, help="default: the log's dataset")
    p.add_argument("--data-dir", default=None, help="real data here; without it: synthetic data of the dataset's shape")
    p.add_argument(
        "--data-note",
        default="",
        help="said with the data in the output, e.g. 'files written by benchmarks/synthetic_data.py'",
    )
    p.add_argument("--train-images", type=int, default=None, help="use only the first N training images")
    p.add_argument("--val-images", type=int, default=None, help="use only the first N validation images")
    p.add_argument(
        "--noise",
        type=float,
        default=0.0,
        help="add seeded Gaussian noise of this std (pixel range = 1) to every image once: a harder "
        "synthetic task, so candidates do not all reach 100%% (default 0)",
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when present")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads of torch (default: edgenas's training policy, edgenas/training/threads.py)",
    )
    p.add_argument(
        "--max-seconds", type=float, default=0.0, help="start no new candidate after this many seconds (0: no limit)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--json",
        dest="json_out",
        default=None,
        help="write every figure to this JSON file (rewritten after each candidate from the second on, "
        'with "complete": false until the last)',
    )
    args = p.parse_args(argv)
    if args.epochs_scale <= 0 or args.width_scale <= 0:
        p.error("--epochs-scale and --width-scale must be > 0")
    if args.noise < 0:
        p.error("--noise must be >= 0")
    args.stage_list = [s.strip() for s in args.stages.split(",") if s.strip()]
    args.picked = select(json.loads(Path(args.log).read_text()), args.stage_list, args.max_candidates)
    if len(args.picked) < 2:
        p.error(f"--stages {args.stages} / --max-candidates {args.max_candidates}: fewer than 2 candidates to rank")
    return args


def train_both(rec: dict, i: int, data, plans: dict, device, args) -> dict:
    """One logged candidate trained under every protocol: its row of figures."""
    width = max(1, round(rec["width"] * args.width_scale))
    arch = Arch(rec["depth"], width, tuple(rec["ops"]), tuple(rec["kernels"]))
    epochs = max(1, round(rec["epochs"] * args.epochs_scale))
    row = {
        "log_index": i,
        "stage": rec["stage"],
        "arch": str(arch),
        "epochs": epochs,
        "logged_epochs": rec["epochs"],
        "logged_val_acc": rec["val_acc"],
    }
    for name, plan in plans.items():
        model, res = train_candidate(
            arch, data=data, epochs=epochs, plan=plan, device=device, seed=args.seed + i, threads=args.threads
        )
        row[name] = {
            "val_acc": res.val_acc,
            "val_loss": val_loss(model, data, device) if res.status == "trained" else float("nan"),
            "train_acc": res.train_acc,
            "status": res.status,
            "seconds": res.seconds,
            "images": images_trained(plan, len(data.train), res.epochs),
            "images_per_s": res.images_per_s,
        }
        del model
    print(
        f"  #{i:<3} {row['stage']:6} {arch.depth:>3}x{arch.width:<3} e{epochs:<3} "
        + "  ".join(f"{n} {row[n]['val_acc']:6.2f}% ({row[n]['seconds']:.1f}s)" for n in plans)
        + f"  log {rec['val_acc']:.2f}%",
        flush=True,
    )
    return row


def write_json(path: str, result: dict) -> None:
    """Write to a temp file, then rename: a reader (or a kill) never sees half a file."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    log = json.loads(Path(args.log).read_text())
    dataset = args.dataset or log["args"].get("dataset", "CIFAR10").lower()
    picked = args.picked
    if len(picked) < 8:
        print(f"warning: only {len(picked)} candidates; the issue asks for at least 8", file=sys.stderr)
    device = select_device(args.device)
    data = benchmark_data(
        dataset, data_dir=args.data_dir, train_images=args.train_images, val_images=args.val_images, seed=args.seed
    )
    data = add_noise(data, args.noise, args.seed).to(device)
    plans = {"reference": TrainPlan(), "fast": TrainPlan(protocol="fast")}
    label = data_label(data, args.data_note) + (f", plus pixel noise std {args.noise:g}" if args.noise else "")
    print(
        f"rank_check: {len(picked)} candidates of {Path(args.log).name} ({','.join(args.stage_list)}) on {device}; "
        f"epochs x {args.epochs_scale}, widths x {args.width_scale}; data: {label}",
        flush=True,
    )
    about = {
        "tool": "rank_check",
        "log": str(args.log),
        "stages": args.stage_list,
        "epochs_scale": args.epochs_scale,
        "width_scale": args.width_scale,
        "noise": args.noise,
        "seed": args.seed,
        "env": benchmark_environment(device),
        "data": {
            "dataset": data.name,
            "synthetic": data.synthetic,
            "label": label,
            "train_images": len(data.train),
            "val_images": len(data.val),
        },
        "candidates_selected": len(picked),
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
    }
    rows, started = [], time.perf_counter()
    for i, rec in picked:
        if args.max_seconds and rows and time.perf_counter() - started > args.max_seconds:
            print(f"  --max-seconds {args.max_seconds:g} reached: stopping after {len(rows)} candidates", flush=True)
            break
        rows.append(train_both(rec, i, data, plans, device, args))
        if args.json_out and len(rows) >= 2 and len(rows) < len(picked):
            write_json(
                args.json_out, {**summarize(rows, plans), **about, "complete": False}
            )  # kept if a caller stops us
    result = {**summarize(rows, plans), **about, "complete": True}
    print_report(result)
    if args.json_out:
        write_json(args.json_out, result)
        print(f"wrote {args.json_out}")
    return 0


def summarize(rows: list[dict], plans: dict) -> dict:
    acc = {n: [r[n]["val_acc"] for r in rows] for n in plans}
    neg_loss = {n: [-r[n]["val_loss"] for r in rows] for n in plans}
    logged = [r["logged_val_acc"] for r in rows]
    tau, pvalue, impl = kendall_tau(acc["reference"], acc["fast"])
    taus = {
        "reference_vs_fast": tau,
        "reference_vs_fast_p": pvalue,
        "reference_vs_fast_by_val_loss": kendall_tau(neg_loss["reference"], neg_loss["fast"])[0],
        "reference_vs_log": kendall_tau(acc["reference"], logged)[0],
        "fast_vs_log": kendall_tau(acc["fast"], logged)[0],
    }
    protocols = {}
    for n in plans:
        wall = sum(r[n]["seconds"] for r in rows)
        images = sum(r[n]["images"] for r in rows)
        train_s = sum(r[n]["images"] / r[n]["images_per_s"] for r in rows if r[n]["images_per_s"] > 0)
        protocols[n] = {
            "wall_seconds": wall,
            "images": images,
            "train_images_per_s": images / train_s if train_s else 0.0,
        }
    return {
        "candidates": rows,
        "kendall_tau": taus,
        "kendall_impl": impl,
        "rankings": {n: [rows[k]["log_index"] for k in ranking(acc[n])] for n in plans},
        "protocols": protocols,
        "speedup_wall": protocols["reference"]["wall_seconds"] / protocols["fast"]["wall_seconds"],
        "speedup_images_per_s": protocols["fast"]["train_images_per_s"] / protocols["reference"]["train_images_per_s"],
    }


def fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def print_report(result: dict) -> None:
    t, pr = result["kendall_tau"], result["protocols"]
    print(
        f"\n== rank_check on {result['env']['device_name']} ({result['env']['device']}), torch {result['env']['torch']}"
    )
    print(f"data: {result['data']['label']}")
    print(
        f"{'log#':>4} {'stage':6} {'arch':>9} {'ep':>3} {'ref acc':>8} {'fast acc':>8} {'ref loss':>8} {'fast loss':>9} {'log acc':>8}"
    )
    for r in result["candidates"]:
        ref, fast = r["reference"], r["fast"]
        d, w = r["arch"].split("-")[:2]
        print(
            f"{r['log_index']:>4} {r['stage']:6} {d + '-' + w:>9} {r['epochs']:>3} {ref['val_acc']:>7.2f}% "
            f"{fast['val_acc']:>7.2f}% {ref['val_loss']:>8.4f} {fast['val_loss']:>9.4f} {r['logged_val_acc']:>7.2f}%"
        )
    print(f"ranking (log#, best first) reference: {result['rankings']['reference']}")
    print(f"ranking (log#, best first) fast:      {result['rankings']['fast']}")
    print(
        f"Kendall tau reference vs fast: {fmt(t['reference_vs_fast'])} (p {fmt(t['reference_vs_fast_p'])}; "
        f"{result['kendall_impl']}); by val loss: {fmt(t['reference_vs_fast_by_val_loss'])}"
    )
    note = "" if not result["data"]["synthetic"] else " (SYNTHETIC data: not comparable with the log)"
    print(
        f"Kendall tau vs the logged accuracies: reference {fmt(t['reference_vs_log'])}, fast {fmt(t['fast_vs_log'])}{note}"
    )
    for n, v in pr.items():
        print(
            f"{n:9}: wall {v['wall_seconds']:.1f} s, {v['images']} images, {v['train_images_per_s']:.0f} img/s training"
        )
    print(
        f"fast vs reference: {result['speedup_wall']:.2f}x less wall time, {result['speedup_images_per_s']:.2f}x images/s"
    )


if __name__ == "__main__":
    sys.exit(main())
