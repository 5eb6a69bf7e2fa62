#!/usr/bin/env python3
"""One command for a GPU machine: the gpu-marked tests, bench_train, rank_check and a time-boxed tiny search.

Each step is a subprocess with its own time box; its figures go to OUT/STEP.json, all of them to OUT/summary.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"  # the measurement tools it runs
DEFAULT_BUDGET_S = 480  # the 9 minutes on an H100, less start-up, minimum boxes and the last stop grace
QUICK_BUDGET_S = 300  # a few shared CPU cores can be slow; the run itself takes under a minute when idle
MIN_BOX_S = 30  # no step gets less: starting Python and importing torch can take seconds on a loaded machine
STOP_GRACE_S = 15  # after SIGINT, seconds before SIGKILL
SEARCH_LIMIT_S = 600  # the target: the FashionMNIST-shaped tiny search in <= 10 minutes
QUICK_NOTE = "; --quick: tiny sizes, not the scale of the targets (verdicts n/a)"
TOOL_STEPS = ("bench_cifar10", "bench_fashionmnist", "rank_check")  # these tools write OUT/STEP.json themselves
ENV_PROBE = """import json, os, platform, torch
cuda = torch.cuda.is_available()
print(json.dumps({
    "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": cuda,
    "device_name": torch.cuda.get_device_name(0) if cuda else (platform.processor() or platform.machine()),
    "cudnn": torch.backends.cudnn.version() if cuda else None, "host_cpus": os.cpu_count()}))"""
# The --quick search: FashionMNIST-shaped, depth 2, width 4 (2-4 in the micro stages), one epoch per candidate.
QUICK_PROFILE = """description = "gpu_check --quick: a seconds-long search"
[search]
min_depth = 2
max_depth = 2
min_width = 4
max_width = 4
width_step = 4
epochs = 1
add_epochs_depth = 0
add_epochs_width = 0
micro_epochs = 1
[train]
crop_padding = 1
cutout = 0
final_epochs = 1
[data]
dataset = "fashionmnist"
val_fraction = 0.2
"""


@dataclass(frozen=True)
class Scale:
    """Sizes of every step: the GPU run of the issue, or --quick (seconds on a CPU)."""

    bench_epochs: int
    bench_archs: dict  # step name -> (dataset, arch)
    bench_extra: tuple  # more bench_train.py arguments
    rank_args: tuple  # rank_check.py arguments (with --max-seconds set from the time box)
    synth_images: tuple  # (train, test) images of the synthetic FashionMNIST
    label_noise: float  # share of synthetic labels replaced at random
    workers: tuple  # --workers of the two searches
    quick: bool


FULL = Scale(
    bench_epochs=2,
    bench_archs={"bench_cifar10": ("cifar10", "d20-w64"), "bench_fashionmnist": ("fashionmnist", "d18-w46")},
    bench_extra=(),
    rank_args=("--max-candidates", "8", "--epochs-scale", "0.25", "--noise", "0.5"),
    synth_images=(60000, 10000),
    label_noise=0.08,
    workers=(1, 4),
    quick=False,
)
QUICK = Scale(
    bench_epochs=1,
    bench_archs={"bench_cifar10": ("cifar10", "d4-w8"), "bench_fashionmnist": ("fashionmnist", "d4-w8")},
    bench_extra=("--train-images", "256", "--val-images", "64", "--threads", "1"),
    rank_args=(
        "--max-candidates",
        "8",
        "--epochs-scale",
        "0.05",
        "--width-scale",
        "0.125",
        "--train-images",
        "192",
        "--val-images",
        "64",
        "--threads",
        "1",
    ),
    synth_images=(300, 100),
    label_noise=0.08,
    workers=(1, 2),
    quick=True,
)


@dataclass
class Context:
    out: Path
    work: Path  # temporary: synthetic data and the --quick profile
    device: str
    scale: Scale
    search_profile: str


@dataclass(frozen=True)
class Step:
    name: str
    share: float  # of the time budget
    command: Callable  # (Context, box_s) -> argv, or a str: why the step is skipped
    figures: Callable  # (Context, record) -> dict of figures


# --- running one step ---------------------------------------------------------------------------------


def signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:  # the whole group has exited
        pass


def stop_group(proc: subprocess.Popen, grace_s: float) -> int:
    """SIGINT to the step's process group (its workers too), SIGKILL after ``grace_s``; the exit code."""
    signal_group(proc.pid, signal.SIGINT)
    try:
        code = proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        signal_group(proc.pid, signal.SIGKILL)
        code = proc.wait()
    signal_group(proc.pid, signal.SIGKILL)  # stragglers (DataLoader or search workers) of the group this tool started
    return code


def run_boxed(
    argv: list[str], *, box_s: float, log: Path, env: dict | None = None, grace_s: float = STOP_GRACE_S
) -> dict:
    """Run ``argv`` in its own process group with stdout and stderr to ``log``; stop it after ``box_s`` seconds."""
    started = time.monotonic()
    with open(log, "w") as out:
        # SIGINT back to its default in the step: a caller started in the background (nohup, `&`)
        # ignores it, and a step that inherits that would never see the stop asked of it
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        timed_out = False
        try:
            code = proc.wait(timeout=box_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            code = stop_group(proc, grace_s)
        except KeyboardInterrupt:
            stop_group(proc, grace_s)
            raise
    return {
        "command": shlex.join(argv),
        "exit_code": code,
        "wall_s": round(time.monotonic() - started, 3),
        "time_box_s": round(box_s, 1),
        "timed_out": timed_out,
        "log": log.name,
    }


def child_env(ctx: Context) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if ctx.device == "cpu":
        env["OMP_NUM_THREADS"] = "1"  # tiny nets on a few shared cores: one thread each is fastest
    return env


def run_step(step: Step, ctx: Context, box_s: float) -> dict:
    """The step's record: command, exit code, wall seconds, status (ok, failed, timed_out, skipped) and figures."""
    argv = step.command(ctx, box_s)
    if isinstance(argv, str):
        record = {
            "command": None,
            "exit_code": None,
            "wall_s": 0.0,
            "time_box_s": 0.0,
            "timed_out": False,
            "status": "skipped",
            "reason": argv,
            "figures": {},
        }
        print(f"[{step.name}] skipped: {argv}", flush=True)
    else:
        print(f"[{step.name}] {shlex.join(argv)}  (time box {box_s:.0f} s)", flush=True)
        record = run_boxed(argv, box_s=box_s, log=ctx.out / f"{step.name}.log", env=child_env(ctx))
        record["status"] = "timed_out" if record["timed_out"] else "ok" if record["exit_code"] == 0 else "failed"
        record["figures"] = step.figures(ctx, record)
        print(
            f"[{step.name}] {record['status']}, exit code {record['exit_code']}, {record['wall_s']:.1f} s", flush=True
        )
    if step.name not in TOOL_STEPS or not record["figures"]:
        note = (
            {"skipped": record["reason"]}
            if record["status"] == "skipped"
            else {"missing": f"no figures: see {step.name}.log"}
        )
        write_json(ctx.out / f"{step.name}.json", record["figures"] or note)
    return record


def write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    tmp.replace(path)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# --- the steps ------------------------------------------------------------------------------------------


def pytest_command(ctx: Context, box_s: float):
    if ctx.device != "cuda":
        return "needs CUDA: the gpu-marked tests run with --device cuda"
    return [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-rs",
        "-m",
        "gpu",
        "-p",
        "no:cacheprovider",
        f"--junitxml={ctx.out / 'pytest_gpu.xml'}",
        "tests",
    ]


def pytest_figures(ctx: Context, record: dict) -> dict:
    """Counts and the names (with the first message line) of failed and skipped tests, from the JUnit XML."""
    try:
        root = ET.parse(ctx.out / "pytest_gpu.xml").getroot()
    except (OSError, ET.ParseError):
        return {"junit": "missing (pytest did not finish)"}
    cases, figures = list(root.iter("testcase")), {"failed": [], "skipped": [], "passed": []}
    for case in cases:
        name = f"{case.get('classname')}::{case.get('name')}"
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        kind = "failed" if bad is not None else "skipped" if case.find("skipped") is not None else "passed"
        why = bad if bad is not None else case.find("skipped")
        first_line = next(iter((why.get("message") or "").splitlines()), "") if why is not None else ""
        figures[kind].append(f"{name}: {first_line[:200]}" if first_line else name)
    return {"tests": len(cases), **{f"n_{k}": len(v) for k, v in figures.items()}, **figures}


def bench_command(name: str):
    def command(ctx: Context, box_s: float):
        dataset, arch = ctx.scale.bench_archs[name]
        return [
            sys.executable,
            str(BENCHMARKS / "bench_train.py"),
            "--arch",
            arch,
            "--dataset",
            dataset,
            "--epochs",
            str(ctx.scale.bench_epochs),
            "--device",
            ctx.device,
            *ctx.scale.bench_extra,
            "--json",
            str(ctx.out / f"{name}.json"),
        ]

    return command


def tool_figures(name: str):
    return lambda ctx, record: read_json(ctx.out / f"{name}.json")


def rank_command(ctx: Context, box_s: float):
    # no new candidate after 60 % of the box: a candidate under both protocols must still fit
    return [
        sys.executable,
        str(BENCHMARKS / "rank_check.py"),
        *ctx.scale.rank_args,
        "--max-seconds",
        f"{0.6 * box_s:.0f}",
        "--device",
        ctx.device,
        "--json",
        str(ctx.out / "rank_check.json"),
    ]


def synth_command(ctx: Context, box_s: float):
    train, test = ctx.scale.synth_images
    return [
        sys.executable,
        str(BENCHMARKS / "synthetic_data.py"),
        "fashionmnist",
        str(ctx.work / "fashionmnist"),
        "--train",
        str(train),
        "--test",
        str(test),
        "--label-noise",
        str(ctx.scale.label_noise),
    ]


def synth_figures(ctx: Context, record: dict) -> dict:
    train, test = ctx.scale.synth_images
    return {
        "dataset": "fashionmnist",
        "synthetic": True,
        "train_images": train,
        "test_images": test,
        "label_noise": ctx.scale.label_noise,
        "dir": str(ctx.work / "fashionmnist"),
        "written": record["status"] == "ok",
    }


def edgenas_cli() -> str | None:
    """The ``edgenas`` console script of this interpreter's environment, else the one on PATH."""
    beside = Path(sys.executable).parent / "edgenas"
    return str(beside) if beside.exists() else shutil.which("edgenas")


def search_command(slot: int):
    def command(ctx: Context, box_s: float):
        cli = edgenas_cli()
        if cli is None:
            return "the edgenas command is not installed: pip install --no-deps -e ."
        if not read_json(ctx.out / "synthetic_data.json").get("written"):
            return "no synthetic data: the synthetic_data step did not write it"
        return [
            cli,
            "discover",
            "--profile",
            ctx.search_profile,
            "--dataset",
            "fashionmnist",
            "--data-dir",
            str(ctx.work / "fashionmnist"),
            "--device",
            ctx.device,
            "--workers",
            str(ctx.scale.workers[slot]),
            "--out",
            str(ctx.out / "runs" / f"search_w{ctx.scale.workers[slot]}"),
        ]

    return command


def read_journal(path: Path) -> list[dict]:
    """Whole JSON lines of a run's journal.jsonl (a torn last line from a kill is left out)."""
    records = []
    for line in path.read_text().splitlines(keepends=True) if path.exists() else []:
        if not line.endswith("\n"):
            break
        try:
            records.append(json.loads(line))
        except ValueError:
            break
    return records


def requests_answered(log: Path) -> int | None:
    """How many of the strategy's requests the search answered: the highest N of discover's
    ``[stage #N] ARCH eE: <answer>`` log lines (progress lines, ``: epoch ...``, do not count)."""
    text = log.read_text(errors="replace") if log.exists() else ""
    numbers = [int(n) for n in re.findall(r"^\[\w+ #(\d+)\] \S+ e\d+: (?!epoch )", text, flags=re.MULTILINE)]
    return max(numbers) if numbers else None


def search_figures_of(run_dir: Path, log: Path, record: dict) -> dict:
    """Candidates per hour over the discover process's whole wall time (start-up and data loading included)."""
    journal = read_journal(run_dir / "journal.jsonl")
    trained = [r for r in journal if r.get("status") != "skipped"]
    requests = requests_answered(log)
    summary = read_json(run_dir / "summary.json")
    hours = record["wall_s"] / 3600
    figures = {
        "run_dir": str(run_dir),
        "finished": bool(summary),
        "wall_s": record["wall_s"],
        "stopped_at_time_box": record["timed_out"],
        "time_box_s": record["time_box_s"],
        "journal_records": len(journal),
        "candidates_trained": len(trained),
        "candidates_trained_speculatively": sum(bool(r.get("speculative")) for r in trained),
        "candidates_skipped": len(journal) - len(trained),
        "requests_answered": requests,
        "candidate_train_seconds": sum(r.get("seconds", 0.0) for r in trained),
        "candidates_trained_per_hour": len(trained) / hours if hours else None,
        "requests_answered_per_hour": requests / hours if hours and requests is not None else None,
        "rate_note": "counts (journal.jsonl; requests from the log's [stage #N] lines) / wall time of the whole "
        "discover process; speculative candidates are trained but not (yet) asked for",
    }
    if summary:
        figures["summary"] = {
            k: summary.get(k)
            for k in (
                "arch_str",
                "params",
                "macs",
                "candidates",
                "candidates_trained",
                "search_seconds",
                "final_train_seconds",
                "val_acc",
                "test_acc",
                "profile",
                "device",
            )
        }
    return figures


def search_figures(slot: int):
    def figures(ctx: Context, record: dict) -> dict:
        workers = ctx.scale.workers[slot]
        run_dir, log = ctx.out / "runs" / f"search_w{workers}", ctx.out / f"search_w{workers}.log"
        return {"profile": Path(ctx.search_profile).stem, "workers": workers, **search_figures_of(run_dir, log, record)}

    return figures


def steps(scale: Scale) -> list[Step]:
    w1, w2 = scale.workers
    return [
        Step("pytest_gpu", 0.14, pytest_command, pytest_figures),
        Step("bench_cifar10", 0.16, bench_command("bench_cifar10"), tool_figures("bench_cifar10")),
        Step("bench_fashionmnist", 0.12, bench_command("bench_fashionmnist"), tool_figures("bench_fashionmnist")),
        Step("rank_check", 0.20, rank_command, tool_figures("rank_check")),
        Step("synthetic_data", 0.04, synth_command, synth_figures),
        Step(f"search_w{w1}", 0.17, search_command(0), search_figures(0)),
        Step(f"search_w{w2}", 0.17, search_command(1), search_figures(1)),
    ]


# --- the targets ------------------------------------------------------------------------------------------


def two_se(a: float, b: float, n: int) -> float:
    """Two binomial standard errors (percentage points) of the difference of two accuracies on ``n`` images."""
    pa, pb = a / 100, b / 100
    return 200 * math.sqrt((pa * (1 - pa) + pb * (1 - pb)) / n) if n else math.inf


def target(what: str, measured: str = "not measured", met: bool | None = None, step: str = "") -> dict:
    return {"target": what, "measured": measured, "met": met, "step": step}


def short_arch(bench: dict, default: str) -> str:
    return "-".join(bench.get("arch", default).split("-")[:2])


def bench_targets(name: str, bench: dict) -> list[dict]:
    """Trainer (batch 64) >= 5x and fast protocol >= 20x the reference loop's steady images/s, at one shape."""
    runs, shape = bench.get("runs", {}), f"{name.removeprefix('bench_')} {short_arch(bench, '?')}"
    base, rows = runs.get("reference_loop"), []
    for run, need, what in (("edgenas_reference", 5, "trainer, batch 64"), ("edgenas_fast", 20, "fast protocol")):
        label, r = f"{what} >= {need}x reference loop ({shape})", runs.get(run)
        if not (base and r):
            rows.append(target(label, step=name))
            continue
        ratio = r["steady_images_per_s"] / base["steady_images_per_s"]
        measured, met = f"{ratio:.2f}x", ratio >= need
        if run == "edgenas_reference":  # same accuracy within noise: two binomial standard errors of the gap
            gap = abs(r["val_acc"] - base["val_acc"])
            allowed = two_se(r["val_acc"], base["val_acc"], bench["data"]["val_images"])
            measured += f"; val acc {r['val_acc']:.2f}% vs {base['val_acc']:.2f}%, gap {gap:.2f} (2 SE {allowed:.2f})"
            met = met and gap <= allowed
        rows.append(target(label, measured, met, name))
    return rows


def tau_target(rank: dict) -> dict:
    label, tau = "fast protocol Kendall tau >= 0.7 vs reference", rank.get("kendall_tau", {}).get("reference_vs_fast")
    if tau is None or not math.isfinite(tau):
        return target(label, step="rank_check")
    return target(label, f"{tau:.3f} over {len(rank['candidates'])} candidates", tau >= 0.7, "rank_check")


def floor_target(bench: dict) -> dict:
    """The best edgenas run's steady epoch over the floor bench_train prints, at CIFAR-10 shape."""
    label = f"epoch <= 3x floor (cifar10 {short_arch(bench, 'd20-w64')})"
    runs = {n: r for n, r in bench.get("runs", {}).items() if n.startswith("edgenas")}
    if not runs:
        return target(label, step="bench_cifar10")
    best = min(r["x_floor"] for r in runs.values())
    measured = ", ".join(f"{n.removeprefix('edgenas_')} {r['x_floor']:.1f}x" for n, r in runs.items())
    return target(label, f"{measured} (floor {bench['floor']['seconds_per_epoch']:.3f} s)", best <= 3, "bench_cifar10")


def search_target(name: str, fig: dict) -> dict:
    label = f"{fig.get('profile', 'tiny')} search <= {SEARCH_LIMIT_S // 60} min (--workers {fig.get('workers', '?')})"
    if fig.get("candidates_trained_per_hour") is None:
        return target(label, step=name)
    requests = fig["requests_answered_per_hour"]
    rate = (
        f"{fig['candidates_trained']} trained ({fig['candidates_trained_per_hour']:.0f}/h), "
        f"{fig['requests_answered']} requests answered ({'?' if requests is None else f'{requests:.0f}'}/h)"
    )
    if fig["finished"]:
        return target(label, f"finished in {fig['wall_s']:.0f} s; {rate}", fig["wall_s"] <= SEARCH_LIMIT_S, name)
    return target(label, f"not finished, stopped at {fig['wall_s']:.0f} s; {rate}", None, name)


def targets(results: dict, quick: bool) -> list[dict]:
    """Each target of the issue: what was measured, whether it was met (None: not measured, or --quick) and a verdict."""
    figures = {name: r["figures"] for name, r in results.items()}
    rows = bench_targets("bench_cifar10", figures.get("bench_cifar10", {}))
    rows += bench_targets("bench_fashionmnist", figures.get("bench_fashionmnist", {}))
    rows += [tau_target(figures.get("rank_check", {})), floor_target(figures.get("bench_cifar10", {}))]
    searches = [n for n in results if n.startswith("search_w")] or ["search_w1", "search_w4"]
    rows += [search_target(n, figures.get(n, {})) for n in searches]
    for row in rows:
        row["verdict"] = "not measured" if row["met"] is None else "met" if row["met"] else "NOT met"
        if quick and row["met"] is not None:  # tiny sizes: the figure exists but says nothing about the target
            row["met"], row["verdict"] = None, "quick: n/a"
    return rows


def print_tables(summary: dict) -> None:
    env = summary["environment"]
    print(
        f"\n== gpu_check on {env.get('device_name')} (--device {summary['device']}), torch {env.get('torch')} "
        f"(CUDA build {env.get('cuda')}){QUICK_NOTE if summary['quick'] else ''}"
    )
    print(f"{'step':20} {'status':10} {'exit':>4} {'wall s':>7} {'box s':>6}  reason")
    for name, r in summary["steps"].items():
        code = "-" if r["exit_code"] is None else str(r["exit_code"])
        print(
            f"{name:20} {r['status']:10} {code:>4} {r['wall_s']:>7.1f} {r['time_box_s']:>6.0f}  {r.get('reason', '')}"
        )
    print(f"\n{'target':60} {'verdict':13} measured")
    for row in summary["targets"]:
        print(f"{row['target']:60} {row['verdict']:13} {row['measured']}")
    print(f"\nfigures: {summary['out']}/summary.json and one JSON file per step")


# --- main ---------------------------------------------------------------------------------------------------


def probe_environment() -> dict:
    """Python, torch, CUDA and device name, asked of a child process (this one never initialises CUDA)."""
    try:
        r = subprocess.run([sys.executable, "-c", ENV_PROBE], capture_output=True, text=True, timeout=180, cwd=ROOT)
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, ValueError, IndexError) as e:
        return {"error": f"the environment probe failed: {e}"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="On a GPU machine: pip install --no-deps -e . && python tools/gpu_check.py --out gpu-figures",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("gpu-figures"),
        help="folder for the figures (new or empty; default gpu-figures)",
    )
    p.add_argument(
        "--device", choices=["cuda", "cpu"], default=None, help="default: cuda when present; cpu implies --quick"
    )
    p.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help=f"seconds for all steps, shared out by step; time a step leaves unused goes to the next "
        f"(default {DEFAULT_BUDGET_S}, {QUICK_BUDGET_S} with --quick)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes everywhere (a smoke test; figures are not at the targets' scale)",
    )
    p.add_argument("--steps", default=None, help="comma-separated subset of the steps (default: all)")
    p.add_argument(
        "--search-profile",
        default="tiny",
        help="profile of the searches (default tiny; e.g. tiny-fast); ignored with --quick",
    )
    args = p.parse_args(argv)
    if args.budget_s is not None and args.budget_s <= 0:
        p.error("--budget-s must be > 0")
    if (args.out / "summary.json").exists() or (args.out / "runs").exists():
        p.error(f"--out {args.out} already holds figures; choose another folder")
    names = list(dict.fromkeys(s.name for scale in (FULL, QUICK) for s in steps(scale)))
    args.step_list = names if not args.steps else [s.strip() for s in args.steps.split(",") if s.strip()]
    if set(args.step_list) - set(names):
        p.error(
            f"--steps: unknown {', '.join(sorted(set(args.step_list) - set(names)))}; choose from {', '.join(names)}"
        )
    return args


def choose(scale: Scale, names: list[str]) -> list[Step]:
    """The named steps in their order, with synthetic_data before any search (the searches read its files)."""
    all_steps = steps(scale)
    searching = any(n.startswith("search_w") for n in names)
    return [s for s in all_steps if s.name in names or (s.name == "synthetic_data" and searching)]


def run_all(ctx: Context, chosen: list[Step], budget_s: float) -> dict:
    """Run the steps in order; each gets its share of what is left of the budget (skipped steps give theirs back),
    and at least MIN_BOX_S."""
    results, deadline = {}, time.monotonic() + budget_s
    for k, step in enumerate(chosen):
        left = max(deadline - time.monotonic(), 1.0)
        box = max(left * step.share / sum(s.share for s in chosen[k:]), MIN_BOX_S)
        results[step.name] = run_step(step, ctx, box)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = probe_environment()
    device = args.device or ("cuda" if env.get("cuda_available") else "cpu")
    if device == "cuda" and not env.get("cuda_available"):
        print(f"gpu_check: --device cuda: no CUDA device is visible here ({env}); use --device cpu", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    scale = QUICK if args.quick or device == "cpu" else FULL
    budget = args.budget_s or (QUICK_BUDGET_S if scale.quick else DEFAULT_BUDGET_S)
    chosen = choose(scale, args.step_list)
    if args.steps and set(args.step_list) - {s.name for s in chosen}:
        print(
            f"gpu_check: not steps of this run ({'quick' if scale.quick else 'full'} sizes): "
            f"{', '.join(sorted(set(args.step_list) - {s.name for s in chosen}))}",
            file=sys.stderr,
        )
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as work:
        ctx = Context(args.out, Path(work), device, scale, args.search_profile)
        if scale.quick:
            ctx.search_profile = str(ctx.work / "quick.toml")
            Path(ctx.search_profile).write_text(QUICK_PROFILE)
        print(f"gpu_check: {len(chosen)} steps on {device}, budget {budget:.0f} s, figures to {args.out}", flush=True)
        results = run_all(ctx, chosen, budget)
    summary = {
        "tool": "gpu_check",
        "device": device,
        "quick": scale.quick,
        "budget_s": budget,
        "out": str(args.out),
        "environment": env,
        "steps": results,
        "targets": targets(results, scale.quick),
    }
    write_json(args.out / "summary.json", summary)
    print_tables(summary)
    # a search stopped at its time box is expected (its figures are a rate); any other stop or failure is not
    bad = [
        n for n, r in results.items() if r["status"] == "failed" or (r["timed_out"] and not n.startswith("search_w"))
    ]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
