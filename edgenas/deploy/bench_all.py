"""``edgenas bench RUN_DIR --runtime all``: which runtime is fastest here, on the run's exported network.

Every CPU runtime (and GPU runtime where a GPU is there) whose file the export folder holds and whose
package is installed is opened at once and timed in interleaved rounds: each round warms up and
times every runtime in turn, the order rotating from round to round, so a change of the machine's
load falls on all of them alike. One table (p50, p90, size on disk, test accuracy where
``edgenas evaluate`` wrote it) and a JSON file.
"""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path

from edgenas.config.runtimes import RUNTIMES
from edgenas.deploy.evaluate import HEADLINE
from edgenas.deploy.export import layout
from edgenas.deploy.export.formats import file_for_runtime
from edgenas.device_kit import edgenas_engines as engines
from edgenas.device_kit import edgenas_kit as kit
from edgenas.errors import MissingDependency, ParamError, UserInputError
from edgenas.run.loading import load_run_model
from edgenas.run.rundir import RunDir, write_json_atomic
from edgenas.runtime.backend import backend_of
from edgenas.runtime.runners import TorchRunner, kit_errors
from edgenas.version import __version__

ALL = "all"  # the --runtime value
SCHEMA = "edgenas.bench-all/1"
DEFAULT_ROUNDS, DEFAULT_WARMUP, DEFAULT_RUNS = 10, 5, 20  # per runtime and round: 200 timed runs each


def size_on_disk(path: Path) -> int:
    """Bytes a device stores for ``path``: the file and its weights beside it (an IR's .bin, ncnn's .ncnn.bin)."""
    return engines.size_on_disk(path)


def accuracy_of(path: Path) -> tuple[float | None, str | None]:
    """The headline test figure ``edgenas evaluate`` recorded for ``path`` (top-1 %, faces: verification
    accuracy %) and its name; (None, None) when it has not been evaluated, or not this file."""
    try:
        record = json.loads(layout.evaluate_json(path).read_text())
        if record.get("sha256") != kit.file_sha256(path):
            return None, None  # figures of an earlier file
        key, name = HEADLINE[record["task"]]
        return float(record["artifact"][key]), name
    except (OSError, ValueError, KeyError, TypeError):
        return None, None


def candidates(run: RunDir) -> tuple[dict[str, Path], dict[str, str]]:
    """runtime -> the file it runs (torch-cpu: model.pt), and runtime -> why it is left out."""
    found, skipped = {}, {}
    for name, rt in RUNTIMES.items():
        if not rt.timed:
            skipped[name] = rt.not_timed
            continue
        if rt.engine == "torch":
            if rt.needs_gpu:
                skipped[name] = "PyTorch on the GPU: time it alone with --runtime torch-cuda"
            else:
                found[name] = run.path / RunDir.WEIGHTS
            continue
        path = layout.export_dir(run.path) / file_for_runtime(name)
        try:
            backend_of(name).available()
        except MissingDependency as e:
            skipped[name] = str(e)
            continue
        if not path.is_file():
            skipped[name] = f"no {layout.EXPORT_DIR}/{path.name}: `edgenas export {run.path} --format ...` writes it"
            continue
        found[name] = path
    return found, skipped


def _open(run: RunDir, *, runtime: str, path: Path, threads: int, model):
    if RUNTIMES[runtime].engine == "torch":
        return TorchRunner(model, runtime=runtime, input_chw=run.meta.data.input_chw, model_path=path, threads=threads)
    return backend_of(runtime).open(path, threads=threads)


def bench_all(
    run_dir: str | Path,
    *,
    threads: int = 1,
    batch: int = 1,
    rounds: int = DEFAULT_ROUNDS,
    warmup: int = DEFAULT_WARMUP,
    runs: int = DEFAULT_RUNS,
    runtimes: list[str] | None = None,
) -> dict:
    """Time every installed runtime on the run's export in ``rounds`` interleaved rounds (``warmup``
    untimed and ``runs`` timed calls per runtime and round) with ``threads`` CPU threads; the record
    ``write``/``format_table`` take. ``runtimes``: only these (default: every one available)."""
    for name, value, low in (
        ("threads", threads, 1),
        ("batch", batch, 1),
        ("rounds", rounds, 1),
        ("warmup", warmup, 0),
        ("runs", runs, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ParamError(name, value, f"give an integer >= {low}")
    run = RunDir.open(run_dir)
    found, skipped = candidates(run)
    if runtimes is not None:
        found = {n: p for n, p in found.items() if n in runtimes}
    if not found:
        raise UserInputError(f"{run.path}: nothing to time ({'; '.join(f'{n}: {why}' for n, why in skipped.items())})")
    model = load_run_model(run, "cpu")
    x = kit.bench_input(run.meta.data.input_chw, batch)
    runners: dict[str, kit.Runner] = {}
    samples: dict[str, list[float]] = {name: [] for name in found}
    with kit_errors():
        try:
            for name, path in found.items():
                runners[name] = _open(run, runtime=name, path=path, threads=threads, model=model)
            before = kit.probe()
            order = list(runners)
            for k in range(rounds):
                for name in order[k % len(order) :] + order[: k % len(order)]:
                    runner = runners[name]
                    samples[name] += kit.measure(lambda runner=runner: runner(x), warmup=warmup, runs=runs)
            environment = kit.conditions.environment(before, kit.probe())
            rows = [
                _row(name, path=found[name], runner=runners[name], samples=samples[name], batch=batch)
                for name in runners
            ]
        finally:
            for runner in reversed(list(runners.values())):
                runner.close()
    rows.sort(key=lambda r: r["p50_ms"])
    return {
        "schema": SCHEMA,
        "run_dir": str(run.path),
        "host": platform.node(),
        "device": kit.cpu_name(),
        "threads": threads,
        "batch": batch,
        "input_shape": [batch, *run.meta.data.input_chw],
        "rounds": rounds,
        "warmup": warmup,
        "runs": runs,
        "rows": rows,
        "skipped": skipped,
        "environment": environment,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tool": f"edgenas {__version__}",
    }


def _row(name: str, *, path: Path, runner, samples: list[float], batch: int) -> dict:
    stats = kit.latency_stats(samples, batch)
    accuracy, metric = accuracy_of(path)
    return {
        "runtime": name,
        "engine": RUNTIMES[name].engine,
        "precision": RUNTIMES[name].precision,
        "runtime_version": str(runner.runtime_version),
        "file": path.name,
        "size_bytes": size_on_disk(path),
        "p50_ms": stats["p50_ms"],
        "p90_ms": stats["p90_ms"],
        "mean_ms": stats["mean_ms"],
        "accuracy": accuracy,
        "metric": metric,
        "samples": len(samples),
    }


def default_json(run_dir: str | Path) -> Path:
    return layout.export_dir(run_dir) / layout.BENCH_ALL


def write(path: str | Path, record: dict) -> None:
    write_json_atomic(Path(path), record)


def read(path: str | Path) -> dict | None:
    """A ``--runtime all`` record, or None when there is none (or not one of this schema)."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("schema") == SCHEMA else None


def format_table(record: dict, *, markdown: bool = False) -> str:
    """The record as one table, fastest first (``markdown``: a Markdown table)."""
    head = ("runtime", "precision", "version", "file", "size", "p50 ms", "p90 ms", "accuracy")
    body = []
    for r in record["rows"]:
        size = f"{r['size_bytes'] / 1024:.1f} KiB"
        accuracy = f"{r['accuracy']:.2f} %" if r.get("accuracy") is not None else "-"
        body.append(
            (
                r["runtime"],
                r["precision"],
                r["runtime_version"],
                r["file"],
                size,
                f"{r['p50_ms']:.4f}",
                f"{r['p90_ms']:.4f}",
                accuracy,
            )
        )
    threads = record["threads"]
    title = (
        f"{record['run_dir']} on {record['device']}, {threads} thread{'s' if threads != 1 else ''}, "
        f"input {'x'.join(map(str, record['input_shape']))}: {record['rounds']} interleaved rounds of "
        f"{record['warmup']} warm-up + {record['runs']} timed runs per runtime"
    )
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
    else:
        widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]
        lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in (head, *body)]
    skipped = [f"  {name}: {why}" for name, why in record.get("skipped", {}).items()]
    return "\n".join([title, *lines, *(["left out:", *skipped] if skipped else [])])
