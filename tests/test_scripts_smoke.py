"""Every script in benchmarks/ and tools/ imports and prints its --help (a new script is picked up by itself).

The measurement tools run end to end in their own tests: test_speed_tools.py (bench_train, rank_check),
test_bench_search_tool.py, test_intervals.py (gate_calibration), test_synthetic_tool.py,
test_clear_errors.py (serve_load), test_gpu_check.py, test_search.py (replay_searchlog).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

import pytest
from conftest import BENCHMARKS, TOOLS

HELPERS = {"bench_data", "synthetic"}  # modules the scripts import, with no command line of their own
SCRIPTS = sorted(p for folder in (BENCHMARKS, TOOLS) for p in folder.glob("*.py") if p.stem not in HELPERS)


def test_the_measurement_helpers_are_not_in_the_package():
    for helper in HELPERS:
        assert importlib.util.find_spec(f"edgenas.training.{helper}") is None, helper
    assert {p.stem for p in SCRIPTS} >= {"bench_train", "bench_search", "gpu_check", "replay_searchlog"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_script_imports_and_prints_its_help(script, monkeypatch, capsys):
    module = importlib.import_module(script.stem)
    monkeypatch.setattr(sys, "argv", [script.name, "--help"])  # for a main() that reads sys.argv
    with pytest.raises(SystemExit) as stop:
        module.main(["--help"]) if module.main.__code__.co_argcount else module.main()
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ") and script.name in out.splitlines()[0], out[:200]
