"""The documentation site: `mkdocs build --strict` passes offline, every nav page exists, and the
generated CLI reference names every command and option of the click group."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

for _module in ("mkdocs", "material", "mkdocs_click", "mkdocstrings", "mkdocstrings_handlers.python"):
    pytest.importorskip(_module, reason="needs the docs extra: pip install -e '.[docs]'")

import yaml  # noqa: E402  (mkdocs depends on PyYAML)

ROOT = Path(__file__).resolve().parents[1]
# A proxy that refuses every connection: a plugin or extension that downloads at build time fails the build.
NO_NETWORK = {
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "ALL_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "",
    "NO_MKDOCS_2_WARNING": "1",
}


def build(config: Path, site: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, **NO_NETWORK}
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("docs") / "site"
    result = build(ROOT / "mkdocs.yml", out, ROOT)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    assert "WARNING" not in result.stderr, result.stderr
    return out


def nav_files(nav) -> list[str]:
    """Every Markdown file the nav names, in order."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [f for item in nav for f in nav_files(item)]
    if isinstance(nav, dict):
        return [f for value in nav.values() for f in nav_files(value)]
    raise TypeError(f"unexpected nav entry {nav!r}")


def page_text(path: Path) -> str:
    """A built page's visible text, tags removed and entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", path.read_text(encoding="utf-8")))


def test_every_page_is_in_the_nav_and_built(site):
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    docs = ROOT / config["docs_dir"]
    listed = nav_files(config["nav"])
    assert len(listed) == len(set(listed)), "a page is listed twice in the nav"
    missing = [f for f in listed if not (docs / f).is_file()]
    assert not missing, f"nav pages without a file: {missing}"
    on_disk = sorted(str(p.relative_to(docs)) for p in docs.rglob("*.md"))
    assert sorted(listed) == on_disk, f"pages not in the nav: {sorted(set(on_disk) - set(listed))}"
    for f in listed:
        built = site / (f[:-3] + "/index.html" if Path(f).name != "index.md" else f[:-8] + "index.html")
        assert built.is_file(), f"{f} was not built ({built})"


def commands(group: click.Group, prefix: str = "edgenas"):
    """(full command name, command) for the group and every visible command under it, recursively."""
    yield prefix, group
    for name, command in sorted(group.commands.items()):
        if command.hidden:
            continue
        if isinstance(command, click.Group):
            yield from commands(command, f"{prefix} {name}")
        else:
            yield f"{prefix} {name}", command


def test_the_cli_reference_names_every_command_and_option(site):
    from edgenas.cli import main

    page = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    # mkdocs-click writes one heading per command: <hN id="edgenas-bench">edgenas bench</hN>; split on them.
    headings = list(re.finditer(r'<h([1-6]) id="(edgenas[^"]*)"[^>]*>(.*?)</h\1>', page, flags=re.S))
    sections = {}
    for i, m in enumerate(headings):
        end = headings[i + 1].start() if i + 1 < len(headings) else len(page)
        title = re.sub(r"<[^>]+>", "", html.unescape(m.group(3))).replace("¶", "").strip()
        sections[title] = html.unescape(re.sub(r"<[^>]+>", "", page[m.end() : end]))
    checked = 0
    for name, command in commands(main):
        assert name in sections, f"{name} has no section in the CLI reference (sections: {sorted(sections)})"
        for param in command.params:
            if getattr(param, "hidden", False):
                continue
            for opt in param.opts if isinstance(param, click.Option) else [param.human_readable_name]:
                assert opt in sections[name], f"{name}: {opt} is missing from its section of the CLI reference"
                checked += 1
    assert checked > 100  # every command and option, not a handful


def test_a_broken_link_fails_the_strict_build(tmp_path):
    """The strict build is what catches a dead link: the same site with one bad link does not build."""
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    for name in ("edgenas", "CHANGELOG.md", "profiles", "export"):  # what the API reference and snippets read
        (tmp_path / name).symlink_to(ROOT / name)
    index = tmp_path / "docs" / "index.md"
    index.write_text(index.read_text(encoding="utf-8") + "\nSee [nowhere](no-such-page.md).\n", encoding="utf-8")
    result = build(tmp_path / "mkdocs.yml", tmp_path / "site", tmp_path)
    assert result.returncode != 0
    assert "no-such-page.md" in result.stderr


def test_the_readme_links_only_to_pages_that_exist():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [t for t in targets if not re.match(r"[a-z]+://", t)]
    assert local, "the README links to no documentation page"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README.md links to missing files: {missing}"
