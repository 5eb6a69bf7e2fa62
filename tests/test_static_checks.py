"""Static checks of edgenas/ and export/ (configured in pyproject.toml): ruff's lint, ruff's formatter,
mypy, and the house rule on keyword-only parameters, which ruff's PLR0917 only approximates."""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ("edgenas", "export")
MAX_PARAMS_ALL_POSITIONAL = 3  # a function with more parameters takes only its first positionally


def tool(name: str) -> list[str]:
    if importlib.util.find_spec(name) is None:
        pytest.skip(f"{name} is not installed: pip install -e '.[test]'")
    return [sys.executable, "-m", name]


def run(command: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900)


def test_ruff_check_is_clean():
    result = run([*tool("ruff"), "check", "--no-cache", *CHECKED])
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_leaves_the_code_as_it_is():
    result = run([*tool("ruff"), "format", "--check", "--no-cache", *CHECKED])
    assert result.returncode == 0, "run `ruff format edgenas export`:\n" + result.stdout + result.stderr


@pytest.mark.slow
def test_mypy_is_clean():
    result = run([*tool("mypy")])  # files, strictness and third-party stubs: [tool.mypy] in pyproject.toml
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_reads_the_project_rules(tmp_path):
    """The configuration is in force: a function with four positional parameters is refused."""
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    (tmp_path / "bad.py").write_text("def f(a, b, c, d):\n    return a + b + c + d\n")
    result = run([*tool("ruff"), "check", "--no-cache", "--output-format", "json", "bad.py"], cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert [f["code"] for f in json.loads(result.stdout)] == ["PLR0917"]


def positional_overflow(source: str, filename: str = "<source>") -> list[str]:
    """Functions with more than three parameters that take more than their first positionally
    (``self``/``cls`` of a method not counted; ``*args``/``**kwargs`` not counted)."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        for fn in body:
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            positional = [*fn.args.posonlyargs, *fn.args.args]
            static = any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in fn.decorator_list)
            if isinstance(node, ast.ClassDef) and not static:
                positional = positional[1:]
            total = len(positional) + len(fn.args.kwonlyargs)
            if total > MAX_PARAMS_ALL_POSITIONAL and len(positional) > 1 and not _exempt(source, fn):
                found.append(f"{filename}:{fn.lineno} {fn.name}: {len(positional)} positional of {total}")
    return found


def _exempt(source: str, fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """``# noqa: PLR0917`` on the def line: a signature fixed by its caller (a library's callback)."""
    return "noqa: PLR0917" in source.splitlines()[fn.lineno - 1]


def test_keyword_only_after_the_first_parameter():
    found = [
        v
        for folder in CHECKED
        for path in sorted((ROOT / folder).rglob("*.py"))
        for v in positional_overflow(path.read_text(), str(path.relative_to(ROOT)))
    ]
    assert not found, "make the parameters after the first keyword-only (`*,`):\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("source", "bad"),
    [
        ("def f(a, b, c): ...", False),
        ("def f(a, *, b, c, d): ...", False),
        ("def f(a, b, *, c, d): ...", True),
        ("class C:\n    def m(self, a, *, b, c, d): ...", False),
        ("class C:\n    def m(self, a, b, c, d): ...", True),
        ("class C:\n    @staticmethod\n    def m(a, b, c, d): ...", True),
        ("def outer():\n    def inner(a, b, c, d): ...", True),
    ],
)
def test_the_keyword_only_rule_itself(source, bad):
    assert bool(positional_overflow(source)) == bad
