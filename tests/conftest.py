"""Shared fixtures and the gpu / tensorrt / ray markers' skips."""

import importlib.util
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
