"""The package's layers: import-linter's contracts hold, no import cycle, and the config layer runs without torch."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp

from edgenas.config.runtimes import RUNTIMES
from edgenas.device_kit import edgenas_kit as kit

ROOT = Path(__file__).resolve().parents[1]
LINT = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    """import-linter's ``lint-imports`` (by its module, so a venv without the script works too)."""
    return subprocess.run(
        [sys.executable, "-c", LINT, "--config", str(cwd / "setup.cfg")],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_import_contracts_are_kept():
    r = _lint(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 kept, 0 broken" in r.stdout


def test_an_upward_import_breaks_the_contracts(tmp_path):
    """The check can fail: the config layer importing the CLI is reported."""
    for name in ("edgenas", "export"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "setup.cfg", tmp_path / "setup.cfg")
    with open(tmp_path / "edgenas" / "config" / "plan.py", "a") as f:
        f.write("\nfrom edgenas.cli import main  # noqa: E402\n")
    r = _lint(tmp_path)
    assert r.returncode == 1 and "BROKEN" in r.stdout and "edgenas.config.plan -> edgenas.cli" in r.stdout, r.stdout


def test_no_module_imports_itself_back():
    """No import cycle, also through function-level imports and inside one layer."""
    graph = grimp.build_graph("edgenas")
    cycles = [
        (m, n)
        for m in sorted(graph.modules)
        for n in sorted(graph.find_modules_directly_imported_by(m))
        if n != m and graph.chain_exists(importer=n, imported=m)
    ]
    assert cycles == []


CHECK_NO_TORCH = """
import sys
sys.modules["torch"] = None  # importing torch now raises ImportError
from click.testing import CliRunner
from edgenas.config.profile import list_profiles, load_profile
from edgenas.cli import main
assert len(list_profiles()) >= 8 and load_profile("mobile").budget.runtime
for args in (["profiles"], ["profiles", "mobile"]):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
print("no torch:", "torch" not in {m for m, mod in sys.modules.items() if mod is not None})
"""


def test_profiles_and_the_config_layer_never_import_torch():
    r = subprocess.run([sys.executable, "-c", CHECK_NO_TORCH], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "no torch: True" in r.stdout, r.stdout + r.stderr


def test_the_kits_runtime_table_agrees_with_edgenas():
    for name, (engine, suffix, needs_gpu) in kit.RUNTIMES.items():
        assert (RUNTIMES[name].engine, RUNTIMES[name].suffix, RUNTIMES[name].needs_gpu) == (engine, suffix, needs_gpu)


def test_the_kits_export_layout_agrees_with_edgenas():
    """The kit finds the files `edgenas export` writes: its default model per runtime and its own file names."""
    from edgenas.deploy.export import layout
    from edgenas.deploy.export.formats import file_for_runtime

    assert kit.LAYOUT == {"onnx": layout.ONNX, "samples": layout.SAMPLES, "parity": layout.PARITY}
    for runtime in kit.RUNTIMES:
        assert kit.DEFAULT_MODELS.get(runtime, kit.LAYOUT["onnx"]) == file_for_runtime(runtime), runtime
    assert layout.KIT in layout.KIT_FILES and all((ROOT / "export" / name).is_file() for name in layout.KIT_FILES)


def test_the_python_api_takes_keywords_after_the_first_argument():
    import inspect

    from edgenas.deploy.gate.compare import paired_compare
    from edgenas.run.discover import discover
    from edgenas.run.final import train_final

    for fn, first in ((discover, ["profile"]), (train_final, ["target"]), (paired_compare, ["model_a", "model_b"])):
        positional = [
            p.name
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        assert positional == first, (fn.__name__, positional)
