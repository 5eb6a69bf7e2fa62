"""Shared fixtures and the gpu / tensorrt / ray markers' skips."""

import dataclasses
import importlib.util
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from edgenas.device_kit import edgenas_kit as kit

TESTS = Path(__file__).parent
BENCHMARKS = TESTS.parent / "benchmarks"  # measurement tools and their helpers (on sys.path: setup.cfg's pythonpath)
TOOLS = TESTS.parent / "tools"  # tools a user runs (on sys.path too)
SEARCHLOGS = sorted((TESTS / "data" / "searchlogs").glob("*.json"))
CI_PROFILE = TESTS / "data" / "profiles" / "ci.toml"


def pytest_collection_modifyitems(config, items):
    import torch

    skips = {
        "gpu": (not torch.cuda.is_available(), "needs a CUDA GPU"),
        "tensorrt": (importlib.util.find_spec("tensorrt") is None, "needs TensorRT (pip install tensorrt)"),
        "ray": (importlib.util.find_spec("ray") is None, "needs Ray (pip install 'edgenas[ray]')"),
    }
    for item in items:
        for marker, (missing, reason) in skips.items():
            if missing and marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


MAX_WORKERS = 4  # each pytest-xdist worker loads torch and the edge runtimes: a many-core machine's memory


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    """``pytest -n auto``: a worker per core this process may use (its CPU affinity, which psutil's count of
    the machine's cores ignores), at most ``MAX_WORKERS``; PYTEST_XDIST_AUTO_NUM_WORKERS still decides."""
    import os

    from edgenas.training.threads import available_cores

    return None if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS") else min(available_cores(), MAX_WORKERS)


# Engines whose conversion goes through torch.export: 5-60 s a network on a shared 2-core machine.
SLOW_ENGINES = ("executorch", "litert")


def slow_engines_marked(runtimes) -> list:
    """``runtimes`` as parameters, those converted through torch.export marked ``slow`` (out of the fast loop)."""
    return [pytest.param(r, marks=pytest.mark.slow) if r.split("-")[0] in SLOW_ENGINES else r for r in runtimes]


@pytest.fixture
def ci_profile() -> Path:
    return CI_PROFILE


@contextmanager
def torch_threads(n: int):
    """Run with ``n`` intra-op threads, restored after. These nets are tiny: on a shared 2-core
    machine two OpenMP threads competing with other processes make them 10-100x slower, one does not."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_thread():
    with torch_threads(1):
        yield


def _budgeted_profile_text(
    budget: dict,
    *,
    depths=(3, 4),
    widths=(8, 24),
    width_step: int = 8,
    input_size=None,
    description: str = "a budgeted test search",
) -> str:
    """A seconds-long search on digits under ``budget`` (the ``[budget]`` table: ``{"max_latency_ms": 2.0, ...}``):
    one epoch per candidate, no patience, one micro kernel; the space ``depths`` x ``widths`` (min, max) in steps
    of ``width_step``; ``input_size``: the images resized to (H, W)."""

    def value(v):
        return f'"{v}"' if isinstance(v, str) else str(list(v)) if isinstance(v, (tuple, list)) else repr(v)

    lines = [
        f'description = "{description}"',
        "[search]",
        f"min_depth = {depths[0]}",
        f"max_depth = {depths[1]}",
        f"min_width = {widths[0]}",
        f"max_width = {widths[1]}",
        f"width_step = {width_step}",
        "epochs = 1",
        "add_epochs_depth = 0",
        "add_epochs_width = 0",
        "depth_patience = 0",
        "width_patience = 0",
        "micro_epochs = 1",
        "micro_kernels = [5]",
        "[train]",
        "batch_size = 128",
        "lr = 0.05",
        "crop_padding = 1",
        "cutout = 0",
        "[budget]",
        *(f"{k} = {value(v)}" for k, v in budget.items()),
        "[data]",
        'dataset = "digits"',
        *([f"input_size = {value(input_size)}"] if input_size else []),
    ]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def budgeted_profile():
    """Writes ``_budgeted_profile_text(budget, **space)`` to ``path`` and returns ``path``: the budgeted search
    profile of the budget tests (latency, INT8 latency, edge runtimes, microcontroller memory)."""

    def write(path: Path, budget: dict, **space) -> Path:
        path = Path(path)
        path.write_text(_budgeted_profile_text(budget, **space))
        return path

    return write


def subset_train(data, n: int):
    """``data`` with only the first ``n`` training images."""
    from edgenas.training.data import Split

    return dataclasses.replace(data, train=Split(data.train.x[:n], data.train.y[:n]))


def make_meta(
    profile="tiny",
    *,
    data=None,
    task: str | None = None,
    dataset: str = "digits",
    seed: int = 0,
    in_channels: int = 1,
    num_classes: int = 10,
    input_size=(8, 8),
):
    """A ``RunMeta`` as discover writes it: of ``data`` (an ImageData), or of a dataset of the given shape."""
    from types import SimpleNamespace

    from edgenas.config.profile import Profile, load_profile
    from edgenas.run.meta import run_meta

    profile = profile if isinstance(profile, Profile) else load_profile(profile)
    if task:
        profile = dataclasses.replace(profile, task=task)
    if data is None:
        data = SimpleNamespace(
            in_channels=in_channels,
            num_classes=num_classes,
            input_size=tuple(input_size),
            mean=(0.5,) * in_channels,
            std=(0.25,) * in_channels,
            class_names=tuple(f"c{i}" for i in range(num_classes)),
        )
    return run_meta(
        profile, task=profile.task, dataset=dataset, data_dir=None, data=data, extra={}, seed=seed, device="cpu"
    )


def discover_cmd(profile, out, *extra: str, device: str = "cpu") -> list[str]:
    """The command line of ``edgenas discover`` in this Python, for a test that runs it in its own process."""
    return [
        sys.executable,
        "-m",
        "edgenas.cli",
        "discover",
        "--profile",
        str(profile),
        "--out",
        str(out),
        "--device",
        device,
        *extra,
    ]


@pytest.fixture(scope="session")
def budget_run(tmp_path_factory):
    """A finished search of the CI profile under a parameter budget (one candidate is skipped), made
    by the CLI with stderr on a pipe: (run directory, stderr). Shared by the report, pareto and
    progress tests."""
    import subprocess

    folder = tmp_path_factory.mktemp("budget")
    profile = folder / "ci-budget.toml"
    profile.write_text(
        CI_PROFILE.read_text().replace('description = "', 'description = "Under a budget: ')
        + "\n[budget]\nmax_params = 3100\n"
    )
    out = folder / "run"
    cmd = discover_cmd(profile, out)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    return out, r.stderr


def bench_record(ms: float, k: int = 0, **env) -> dict:
    """A bench JSON of 10 runs around ``ms`` (median exactly ``ms``); ``k`` makes it distinct."""
    samples = [ms * f for f in (0.99, 1.0, 1.0, 1.01, 0.98, 1.0, 1.02, 1.0, 0.99, 1.0)]
    r = {
        "schema": kit.SCHEMA,
        "model": "m.onnx",
        "model_sha256": "a" * 64,
        "runtime": "onnxruntime-cpu",
        "runtime_version": "1.20",
        "device": "cpu",
        "host": "ci",
        "threads": 1,
        "batch": 1,
        "input_shape": [1, 3, 32, 32],
        "warmup": 1,
        "runs": 10,
        **kit.latency_stats(samples),
        "samples_ms": samples,
        "created": f"2026-01-01T00:{k // 60:02d}:{k % 60:02d}Z",
        "environment": kit.unknown_environment(),
    }
    return r | env
