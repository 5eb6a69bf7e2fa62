"""Shared fixtures and the gpu / tensorrt / ray markers' skips."""

import dataclasses
import importlib.util
from contextlib import contextmanager
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
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


def subset_train(data, n: int):
    """``data`` with only the first ``n`` training images."""
    from edgenas.data import Split

    return dataclasses.replace(data, train=Split(data.train.x[:n], data.train.y[:n]))


@pytest.fixture(scope="session")
def budget_run(tmp_path_factory):
    """A finished search of the CI profile under a parameter budget (one candidate is skipped), made
    by the CLI with stderr on a pipe: (run directory, stderr). Shared by the report, pareto and
    progress tests."""
    import subprocess
    import sys

    folder = tmp_path_factory.mktemp("budget")
    profile = folder / "ci-budget.toml"
    profile.write_text(CI_PROFILE.read_text().replace('description = "', 'description = "Under a budget: ')
                       + "\n[budget]\nmax_params = 3100\n")
    out = folder / "run"
    cmd = [sys.executable, "-m", "edgenas.cli", "discover", "--profile", str(profile), "--out", str(out), "--device", "cpu"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    return out, r.stderr
