"""Memory estimates: a network or a dataset that cannot fit is refused with the estimate (exit 2)
before anything is allocated or written, not by the allocator's traceback."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from conftest import CI_PROFILE

from edgenas.cli import main
from edgenas.errors import DataError
from edgenas.search.space import Arch, activation_count, count_params
from edgenas.training import memory
from edgenas.training.data import load_dataset

GIB = 2**30


def _profile(tmp_path, **sections) -> str:
    """ci.toml with some keys replaced: ``search="max_width = 4096"``."""
    text = CI_PROFILE.read_text()
    for section, line in sections.items():
        key = line.split("=")[0].strip()
        lines = text.splitlines()
        at = lines.index(f"[{section}]")
        rest = [i for i, text_line in enumerate(lines) if i > at and text_line.startswith(f"{key} ")]
        if rest:
            lines[rest[0]] = line
        else:
            lines.insert(at + 1, line)
        text = "\n".join(lines) + "\n"
    path = tmp_path / "p.toml"
    path.write_text(text)
    return str(path)


def test_training_bytes_counts_state_and_saved_activations():
    arch = Arch.plain(3, 8)
    got = memory.training_bytes(arch, in_channels=1, outputs=10, input_size=(8, 8), batch=16)
    assert got == 4 * (3 * count_params(arch, 1, 10) + 3 * 16 * activation_count(arch, 1, (8, 8)))


def test_check_memory_names_the_estimate_and_what_is_available():
    memory.check_memory(GIB, what="x", hint="y", available=2 * GIB)
    with pytest.raises(DataError, match=r"^the images needs about 3.0 GiB of memory, 1.0 GiB is available; shrink$"):
        memory.check_memory(3 * GIB, what="the images", hint="shrink", available=GIB)
    assert memory.available_memory() is None or memory.available_memory() > 0


def test_a_dataset_resized_beyond_memory_is_refused_before_allocating(monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda: 2 * GIB)
    with pytest.raises(DataError, match=r"digits: 1797 images resized to 1x4096x4096 needs about 56.3 GiB"):
        load_dataset("digits", input_size=(4096, 4096))


def test_discover_refuses_a_first_candidate_beyond_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda: 2 * GIB)
    out = tmp_path / "run"
    r = CliRunner().invoke(
        main,
        ["discover", "--profile", _profile(tmp_path, search="max_width = 4096"), "--out", str(out), "--device", "cpu"],
    )
    assert r.exit_code == 2, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("edgenas: error:")]
    assert len(errors) == 1 and "the first candidate d2-w4096" in errors[0], r.output
    assert "GiB of memory, 2.0 GiB is available; lower search.max_width" in errors[0]
    assert not out.exists()  # refused before the run directory was written
