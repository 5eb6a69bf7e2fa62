#!/usr/bin/env python3
"""Training throughput of one architecture: the reference loop against edgenas's trainer, and the floor.

    python benchmarks/bench_train.py --arch d20-w64 --dataset cifar10 --epochs 3 --json bench.json

Trains the same network (same initial weights) for N epochs on one device, several ways:

- ``reference_loop``: a faithful rebuild of the reference training loop: torchvision PIL transforms
  per sample (RandomCrop with padding 4, RandomHorizontalFlip where the dataset uses it, ToTensor,
  Normalize, Cutout 16 as in DARTS), a DataLoader with 2 workers and pinned memory, batch 64, fp32,
  SGD lr 0.025 momentum 0.9 wd 3e-4 cosine, clip 5, and the per-step ``loss.item()`` and accuracy
  bookkeeping of the DARTS-style loop;
- ``edgenas_reference``: edgenas's trainer, reference protocol (batch 64, same schedule); on CUDA
  bf16 autocast, channels_last, on-device augmentation, each step a replayed CUDA graph;
- ``edgenas_reference_eager`` (CUDA only): the same without CUDA graphs, to show what they bring;
- ``edgenas_fast``: edgenas's trainer, fast protocol (batch 512, scaled lr, warm-up, see TrainPlan).

For each: images/s over all epochs and in the steady state (median epoch after the first, which
pays for worker start-up, cuDNN autotuning and graph capture), the ratio to the reference loop, and
the validation accuracy reached (top-1, %).

The floor, a lower bound on the seconds per epoch of this architecture on this device:

    per image  max( 3 x MACs x 2 flop / R ,  3 x A x b / B )

MACs = forward multiply-accumulates per image (``space.count_macs``); training costs ~3 forward
passes (forward, gradient w.r.t. inputs, gradient w.r.t. weights). R = the device's measured dense
matrix-multiply rate (bf16 8192^3 on CUDA, fp32 on CPU). A = elements of every layer's output per
image (``space.activation_count``), each written once forward, read once backward, and its gradient
written once (k = 3), at b bytes each (2 under bf16 on CUDA, 4 in fp32 on CPU); B = the measured
device-memory copy bandwidth (bytes read + written per second). It ignores depthwise convolutions'
low arithmetic intensity, BatchNorm/ReLU passes, the optimizer and augmentation, so real epochs
sit above it; ``x_floor`` says by how much.

Without ``--data-dir`` the data are SYNTHETIC images of the dataset's shape and size
(``benchmarks/synthetic.py``), and the output says so. ``--json OUT`` writes every figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from bench_data import (
    benchmark_data,
    benchmark_environment,
    data_label,
)
from torch import nn

from edgenas.config.plan import TrainPlan
from edgenas.search.space import Arch, activation_count, count_macs, load_arch
from edgenas.training.data import (
    ImageData,
    Split,
)
from edgenas.training.network import build_model
from edgenas.training.schedule import schedule_for
from edgenas.training.trainer import accuracy, fit, select_device

RUNS = ("reference_loop", "edgenas_reference", "edgenas_reference_eager", "edgenas_fast")
FLOOR_MODEL = (
    "floor per image = max(3 x MACs x 2 / matmul rate, 3 x activations x bytes / copy bandwidth): "
    "training ~ 3 forward passes of arithmetic at the dense matmul rate; every layer output "
    "written forward, read backward and its gradient written (k = 3) at the copy bandwidth"
)


# --- architecture and data ---------------------------------------------------------------------


def parse_arch(text: str) -> Arch:
    """``d20-w64`` (all separable 3x3), ``d4-w16-sccs-3553`` (``str(Arch)``), or an arch.json path."""
    if text.endswith(".json") or Path(text).is_file():
        return load_arch(text)
    parts = text.split("-")
    try:
        depth, width = int(parts[0].removeprefix("d")), int(parts[1].removeprefix("w"))
        if len(parts) == 2:
            return Arch.plain(depth, width)
        if set(parts[2]) - {"s", "c"}:
            raise ValueError("ops are letters s (separable) and c (conv)")
        return Arch(depth, width, tuple(int(c == "c") for c in parts[2]), tuple(int(k) for k in parts[3]))
    except (ValueError, IndexError) as e:
        raise SystemExit(
            f"--arch {text!r}: give d<depth>-w<width>, a full d-w-ops-kernels string, or an arch.json ({e})"
        ) from None


# --- the floor -----------------------------------------------------------------------------------


def _timed(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of ``fn()`` after one warm-up call, with device synchronisation."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_device(device: torch.device) -> dict:
    """Dense matmul rate (flop/s; bf16 on CUDA, fp32 on CPU) and copy bandwidth (bytes read+written per s)."""
    if device.type == "cuda":
        n, dtype, copy_elems = 8192, torch.bfloat16, 256 * 2**20  # 1 GiB of float32
    else:
        n, dtype, copy_elems = 1024, torch.float32, 16 * 2**20  # 64 MiB of float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    mm = _timed(lambda: torch.matmul(a, b, out=out), device, 10 if device.type == "cuda" else 3)
    src = torch.ones(copy_elems, device=device)
    dst = torch.empty_like(src)
    cp = _timed(lambda: dst.copy_(src), device, 10 if device.type == "cuda" else 3)
    return {
        "matmul_flop_per_s": 2 * n**3 / mm,
        "matmul_dtype": str(dtype).removeprefix("torch."),
        "matmul_n": n,
        "copy_bytes_per_s": 2 * copy_elems * 4 / cp,
    }


def floor(arch: Arch, data: ImageData, device: torch.device, rates: dict) -> dict:
    macs = count_macs(arch, in_channels=data.in_channels, num_classes=data.num_classes, input_size=data.input_size)
    acts = activation_count(arch, data.in_channels, data.input_size)
    bytes_per = 2 if device.type == "cuda" else 4
    compute = 3 * macs * 2 / rates["matmul_flop_per_s"]
    memory = 3 * acts * bytes_per / rates["copy_bytes_per_s"]
    n = len(data.train)
    return {
        "macs_per_image": macs,
        "activations_per_image": acts,
        "bytes_per_activation": bytes_per,
        "activation_bytes_per_image": acts * bytes_per,
        "matmul_tflop_per_s": rates["matmul_flop_per_s"] / 1e12,
        "matmul_dtype": rates["matmul_dtype"],
        "copy_gb_per_s": rates["copy_bytes_per_s"] / 1e9,
        "compute_seconds_per_epoch": compute * n,
        "memory_seconds_per_epoch": memory * n,
        "seconds_per_epoch": max(compute, memory) * n,
        "bound": "compute" if compute >= memory else "memory",
        "epoch_images": n,
        "model": FLOOR_MODEL,
    }


# --- (a) the reference loop, rebuilt ----------------------------------------------------------------


class Cutout:
    """DARTS's cutout: one ``length`` x ``length`` square, centre uniform over the image, clipped, zeroed."""

    def __init__(self, length: int):
        self.length = length

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.size(1), img.size(2)
        mask = np.ones((h, w), np.float32)
        y, x = np.random.randint(h), np.random.randint(w)
        y1, y2 = np.clip(y - self.length // 2, 0, h), np.clip(y + self.length // 2, 0, h)
        x1, x2 = np.clip(x - self.length // 2, 0, w), np.clip(x + self.length // 2, 0, w)
        mask[y1:y2, x1:x2] = 0.0
        return img * torch.from_numpy(mask).expand_as(img)


class PILImages(torch.utils.data.Dataset):
    """uint8 images held as torchvision datasets hold them (HWC or HW numpy), one PIL image per sample."""

    def __init__(self, split: Split, transform):
        x = split.x.numpy()
        self.images = x[:, 0] if x.shape[1] == 1 else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        self.labels = split.y.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def reference_transform(data: ImageData, plan: TrainPlan):
    from torchvision import transforms

    steps = []
    if plan.crop_padding:
        steps.append(transforms.RandomCrop(data.input_size, padding=plan.crop_padding))
    if data.flip:
        steps.append(transforms.RandomHorizontalFlip())
    steps += [transforms.ToTensor(), transforms.Normalize(data.mean, data.std)]
    if plan.cutout and plan.cutout < min(data.input_size):
        steps.append(Cutout(plan.cutout))
    return transforms.Compose(steps)


@torch.no_grad()
def evaluate_fp32(model: nn.Module, split: Split, data: ImageData, device: torch.device) -> float:
    """Top-1 (%) in fp32, NCHW, as the reference evaluated (ToTensor then Normalize)."""
    model.eval()
    mean = torch.tensor(data.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(data.std, device=device).view(1, -1, 1, 1)
    correct = 0
    for s in range(0, len(split), 1024):
        x = (split.x[s : s + 1024].to(device).float() / 255.0 - mean) / std
        correct += int((model(x).argmax(1) == split.y[s : s + 1024].to(device)).sum())
    model.train()
    return 100.0 * correct / len(split)


def run_reference_loop(arch: Arch, data: ImageData, epochs: int, device: torch.device, seed: int, workers: int) -> dict:
    plan = TrainPlan()
    torch.manual_seed(seed)
    np.random.seed(seed)
    model = build_model(arch, data.in_channels, data.num_classes).to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    optimizer = torch.optim.SGD(model.parameters(), plan.lr, momentum=plan.momentum, weight_decay=plan.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs, eta_min=0.0)
    # fork, as the reference ran (Linux, Python 3.6-3.11): workers start without pickling the images
    context = "fork" if workers and sys.platform == "linux" else None
    queue = torch.utils.data.DataLoader(
        PILImages(data.train, reference_transform(data, plan)),
        batch_size=plan.batch_size,
        shuffle=True,
        pin_memory=device.type == "cuda",
        num_workers=workers,
        multiprocessing_context=context,
    )
    model.train()
    epoch_seconds, images, loss_avg, acc_avg = [], 0, float("nan"), 0.0
    for _ in range(epochs):
        t0 = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        for x, y in queue:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            optimizer.zero_grad()
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), plan.grad_clip)
            optimizer.step()
            n = x.size(0)  # the reference's AvgrageMeter updates: a device sync per step
            loss_sum += loss.item() * n
            correct += int((logits.argmax(1) == y).sum().item())
            seen += n
        scheduler.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        epoch_seconds.append(time.perf_counter() - t0)
        images += seen
        loss_avg, acc_avg = loss_sum / seen, 100.0 * correct / seen
    val = evaluate_fp32(model, data.val, data, device) if len(data.val) else float("nan")
    return summarize("reference_loop", plan, plan.batch_size, epoch_seconds, images, val, acc_avg, loss_avg, False)


# --- (b, c) edgenas's trainer ----------------------------------------------------------------------


def run_edgenas(
    name: str, plan: TrainPlan, arch: Arch, data: ImageData, epochs: int, device: torch.device, seed: int
) -> dict:
    torch.manual_seed(seed)
    model = build_model(arch, data.in_channels, data.num_classes)
    stamps = []
    fitted = fit(
        model,
        data=data,
        epochs=epochs,
        plan=plan,
        device=device,
        seed=seed,
        on_epoch=lambda e, n, loss, acc, s: stamps.append(s),
    )
    epoch_seconds = [b - a for a, b in zip([0.0] + stamps, stamps)]
    sched = schedule_for(plan, len(data.train), epochs)
    images = fitted.epochs * sum(min(sched.batch_size, sched.n - s) for s in sched.starts)
    val = (
        accuracy(model, split=data.val, data=data, device=device)
        if len(data.val) and fitted.status == "trained"
        else float("nan")
    )
    return summarize(
        name,
        plan,
        sched.batch_size,
        epoch_seconds,
        images,
        val,
        fitted.train_acc,
        fitted.loss,
        fitted.graphed,
        peak_lr=sched.peak_lr,
        warmup_steps=sched.warmup_steps,
        status=fitted.status,
    )


def summarize(name, plan, batch_size, epoch_seconds, images, val, train_acc, loss, graphed, **extra) -> dict:
    seconds = sum(epoch_seconds)
    per_epoch = images / len(epoch_seconds)
    steady = statistics.median(epoch_seconds[1:]) if len(epoch_seconds) > 1 else epoch_seconds[0]
    return {
        "name": name,
        "protocol": plan.protocol,
        "batch_size": batch_size,
        "epochs": len(epoch_seconds),
        "images": images,
        "seconds": seconds,
        "epoch_seconds": epoch_seconds,
        "images_per_s": images / seconds,
        "steady_epoch_seconds": steady,
        "steady_images_per_s": per_epoch / steady,
        "val_acc": val,
        "train_acc": train_acc,
        "loss": loss,
        "graphed": graphed,
        **extra,
    }


# --- the report ----------------------------------------------------------------------------------


def print_report(result: dict) -> None:
    f, runs = result["floor"], result["runs"]
    print(
        f"\n== bench_train: {result['arch']} on {result['env']['device_name']} ({result['env']['device']}), "
        f"torch {result['env']['torch']}"
    )
    print(f"data: {result['data']['label']}; {result['epochs']} epoch(s)")
    print(
        f"floor: {f['macs_per_image'] / 1e6:.2f} M MACs and {f['activations_per_image'] / 1e6:.3f} M activations "
        f"({f['activation_bytes_per_image'] / 1e6:.2f} MB at {f['bytes_per_activation']} B) per image; "
        f"measured {f['matmul_tflop_per_s']:.1f} TFLOP/s {f['matmul_dtype']} matmul, {f['copy_gb_per_s']:.0f} GB/s copy"
    )
    print(
        f"       compute {f['compute_seconds_per_epoch']:.3f} s, memory {f['memory_seconds_per_epoch']:.3f} s "
        f"-> floor {f['seconds_per_epoch']:.3f} s per epoch of {f['epoch_images']} images ({f['bound']}-bound)"
    )
    print(f"       model: {f['model']}")
    base = runs.get("reference_loop")
    print(
        f"{'run':26} {'batch':>5} {'img/s':>10} {'steady img/s':>13} {'x ref loop':>10} {'epoch s':>8} "
        f"{'x floor':>8} {'val acc':>8}  graphs"
    )
    for r in runs.values():
        ratio = f"{r['steady_images_per_s'] / base['steady_images_per_s']:.2f}" if base else "-"
        print(
            f"{r['name']:26} {r['batch_size']:>5} {r['images_per_s']:>10.0f} {r['steady_images_per_s']:>13.0f} "
            f"{ratio:>10} {r['epoch_equivalent_seconds']:>8.3f} {r['x_floor']:>8.1f} {r['val_acc']:>7.2f}%  "
            f"{'yes' if r['graphed'] else 'no'}"
        )
    for key, value in result["ratios"].items():
        print(f"ratio {key}: {value:.2f}")
    print(
        "(steady = median epoch after the first; epoch s = steady seconds per epoch of the training split; "
        "x floor = epoch s / floor)"
    )


def ratios_of(results: dict) -> dict:
    """Steady and overall images/s of each edgenas run over the reference loop, and graphs over eager."""
    ratios = {}
    if "reference_loop" in results:
        base = results["reference_loop"]
        for name, r in results.items():
            if name != "reference_loop":
                ratios[f"{name}/reference_loop steady"] = r["steady_images_per_s"] / base["steady_images_per_s"]
                ratios[f"{name}/reference_loop overall"] = r["images_per_s"] / base["images_per_s"]
    if "edgenas_reference" in results and "edgenas_reference_eager" in results:
        ratios["edgenas_reference/edgenas_reference_eager steady"] = (
            results["edgenas_reference"]["steady_images_per_s"]
            / results["edgenas_reference_eager"]["steady_images_per_s"]
        )
    return ratios


def write_json(path: str, result: dict) -> None:
    """Write to a temp file, then rename: a reader (or a kill) never sees half a file."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=float))
    tmp.replace(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--arch", default="d20-w64", help="d<depth>-w<width>, a str(Arch), or an arch.json (default d20-w64)"
    )
    p.add_argument("--dataset", default="cifar10", help="dataset name (default cifar10)")
    p.add_argument("--data-dir", default=None, help="real data here; without it: synthetic data of the dataset's shape")
    p.add_argument(
        "--data-note",
        default="",
        help="said with the data in the output, e.g. 'files written by benchmarks/synthetic_data.py'",
    )
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-images", type=int, default=None, help="use only the first N training images")
    p.add_argument("--val-images", type=int, default=None, help="use only the first N validation images")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when present")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference loop (default 2)")
    p.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated subset of {','.join(RUNS)}")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of torch (default: torch's own choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--json",
        dest="json_out",
        default=None,
        help='write every figure to this JSON file (rewritten after each run, with "complete": false until the last)',
    )
    args = p.parse_args(argv)
    args.runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = sorted(set(args.runs) - set(RUNS))
    if unknown or args.epochs < 1:
        p.error(
            f"--runs: unknown {', '.join(unknown)}; choose from {', '.join(RUNS)}"
            if unknown
            else "--epochs must be >= 1"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs = args.runs
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    if device.type != "cuda" and "edgenas_reference_eager" in runs:
        runs.remove("edgenas_reference_eager")  # on the CPU it is edgenas_reference itself
    arch = parse_arch(args.arch)
    data = benchmark_data(
        args.dataset, data_dir=args.data_dir, train_images=args.train_images, val_images=args.val_images, seed=args.seed
    )
    print(f"bench_train: {arch} on {device}; data: {data_label(data, args.data_note)}", flush=True)
    rates = measure_device(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    fl = floor(arch, data, device, rates)
    results = {}
    result = {
        "tool": "bench_train",
        "arch": str(arch),
        "arch_dict": arch.to_dict(),
        "epochs": args.epochs,
        "seed": args.seed,
        "env": benchmark_environment(device),
        "data": {
            "dataset": data.name,
            "synthetic": data.synthetic,
            "label": data_label(data, args.data_note),
            "train_images": len(data.train),
            "val_images": len(data.val),
        },
        "floor": fl,
        "runs": results,
        "ratios": {},
        "complete": False,
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
    }
    plans = {
        "edgenas_reference": TrainPlan(),
        "edgenas_reference_eager": TrainPlan(cuda_graphs=False),
        "edgenas_fast": TrainPlan(protocol="fast"),
    }
    for name in runs:
        print(f"  training {name} ...", flush=True)
        if name == "reference_loop":
            r = run_reference_loop(arch, data, args.epochs, device, args.seed, args.workers)
        else:
            r = run_edgenas(name, plans[name], arch, data, args.epochs, device, args.seed)
        r["epoch_equivalent_seconds"] = len(data.train) / r["steady_images_per_s"]
        r["x_floor"] = r["epoch_equivalent_seconds"] / fl["seconds_per_epoch"]
        results[name] = r
        result["ratios"] = ratios_of(results)
        print(f"    {r['steady_images_per_s']:.0f} img/s steady, val acc {r['val_acc']:.2f}%", flush=True)
        if args.json_out and name != runs[-1]:
            write_json(args.json_out, result)  # a time-boxed caller that stops this run keeps the runs so far
    result["complete"] = True
    print_report(result)
    if args.json_out:
        write_json(args.json_out, result)
        print(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
