"""Issue 24, part 4: where a traceback or misleading words came, one clear line (and the right exit code)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from edgenas.cli import main
from edgenas.config.profile import load_profile
from edgenas.errors import ProfileError

BOM = "\ufeff"


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _error_line(r) -> str:
    lines = r.output.strip().splitlines()
    assert lines and lines[-1].startswith("edgenas: error: "), r.output
    return lines[-1]


# -- profiles and pairs files ----------------------------------------------------------------------
def test_a_directory_given_as_profile_is_called_a_directory(tmp_path):
    folder = tmp_path / "profiles"
    folder.mkdir()
    with pytest.raises(ProfileError) as e:
        load_profile(str(folder))
    assert f"profile {folder} is a directory, not a profile file" in str(e.value) and "does not exist" not in str(e.value)
    r = _cli("discover", "--profile", folder, "--out", tmp_path / "run")
    assert r.exit_code == 2 and "is a directory" in _error_line(r)


def test_a_profile_with_a_byte_order_mark_is_read(tmp_path, ci_profile):
    path = tmp_path / "bom.toml"
    path.write_text(BOM + ci_profile.read_text(), encoding="utf-8")
    assert load_profile(path).search == load_profile(ci_profile).search


def test_a_pairs_file_with_a_byte_order_mark_is_read(tmp_path):
    from edgenas.training.verification import read_pairs_file

    text = "2\nann 1 2\nbob 1 2\nann 1 bob 1\nann 2 bob 2\n"
    plain, marked = tmp_path / "plain.txt", tmp_path / "marked.txt"
    plain.write_text(text, encoding="utf-8")
    marked.write_text(BOM + text, encoding="utf-8")
    assert read_pairs_file(marked) == read_pairs_file(plain)


def test_an_input_size_beyond_memory_is_refused_on_digits(tmp_path, ci_profile):
    """The memory check counted the resized uint8 images only; resizing also holds float32 copies
    (51.8 GB at 3000x3000 on digits on main: a traceback). The child believes it has 20 GiB and may
    not map more than 40 GiB, so on main it fails at the allocation, never by swapping."""
    profile = tmp_path / "big.toml"
    profile.write_text(ci_profile.read_text().replace("[data]\n", "[data]\ninput_size = [3000, 3000]\n"))
    child = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (40 * 2 ** 30, resource.RLIM_INFINITY))
        import edgenas.training.memory as memory
        memory.available_memory = lambda: 20 * 2 ** 30
        from edgenas.cli import main
        main(["discover", "--profile", {str(profile)!r}, "--out", {str(tmp_path / "run")!r}, "--device", "cpu"])
    """)
    r = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=300)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-2000:]
    assert "digits: 1797 images resized to 1x3000x3000 needs about 30.4 GiB of memory, 20.0 GiB is available" in lines[0]
    assert "data.input_size" in lines[0] and not (tmp_path / "run").exists()


# -- resuming: a changed seed, a deleted run.json ----------------------------------------------------
def test_a_changed_seed_on_resume_is_called_a_seed(tmp_path):
    from conftest import make_meta

    from edgenas.errors import RunDirError
    from edgenas.run.rundir import RunDir

    RunDir.start(tmp_path / "r", make_meta(seed=0), resume=False)
    with pytest.raises(RunDirError) as e:
        RunDir.start(tmp_path / "r", make_meta(seed=1), resume=True)
    assert "was started with a different seed (0, now 1)" in str(e.value) and "data" not in str(e.value), str(e.value)


def test_a_run_without_run_json_is_not_sent_back_and_forth(tmp_path, ci_profile):
    """On main, --resume said "start one without --resume" and the plain command "continue it with --resume"."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "journal.jsonl").write_text(json.dumps({"key": "d2-w4-ss-33", "status": "trained", "acc": 50.0,
                                                   "train_acc": 50.0, "seconds": 1.0}) + "\n")
    lines = []
    for extra in ([], ["--resume"]):
        r = _cli("discover", "--profile", ci_profile, "--out", out, "--device", "cpu", *extra)
        assert r.exit_code == 2, r.output
        lines.append(_error_line(r))
    assert lines[0] == lines[1], lines
    assert "journal.jsonl but no run.json" in lines[0] and "put its run.json back to resume it" in lines[0]
    assert "another directory" in lines[0] and sorted(p.name for p in out.iterdir()) == ["journal.jsonl"]


# -- image folders -----------------------------------------------------------------------------------
@pytest.mark.parametrize("only", ["train", "test"])
def test_an_image_folder_with_train_but_no_test_says_so(tmp_path, only):
    import numpy as np
    from PIL import Image

    from edgenas.errors import DataError
    from edgenas.training.data import load_dataset

    for cls in ("cat", "dog"):
        (tmp_path / only / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / only / cls / f"{i}.png")
    with pytest.raises(DataError) as e:
        load_dataset("imagefolder", tmp_path)
    other = "test" if only == "train" else "train"
    assert f"{tmp_path} has {only}/ but no {other}/" in str(e.value) and "class folder(s)" not in str(e.value)


# -- the device server under plain concurrent clients -----------------------------------------------
def _serve_load():
    """tools/serve_load.py, the load tool whose figures docs/benchmarks.md records."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "serve_load.py"
    spec = importlib.util.spec_from_file_location("serve_load", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_twenty_plain_clients_each_get_an_answer(tmp_path):
    """On main 2-7 of 20 simultaneous plain clients had their connection reset (a listen backlog of 5)."""
    serve_load = _serve_load()

    r = serve_load.load_test(clients=20, max_queue=None, runs=100)
    assert r["ends"] == {"200": 20} and r["server_alive"], r


def test_a_full_queue_answers_503_with_retry_after(tmp_path):
    """20 plain clients while the server times a long request, its queue 4: 4 are timed, the rest get a
    503 that says when to come back; none is reset."""
    serve_load = _serve_load()

    r = serve_load.load_test(clients=20, max_queue=4, runs=100, busy_runs=50_000)
    assert r["answered"] == 20 and r["server_alive"], r
    assert set(r["ends"]) <= {"200", "503 with Retry-After"} and r["ends"].get("503 with Retry-After", 0) >= 1, r
    assert 1 <= r["ends"].get("200", 0) <= 4 + 1, r  # the queue's 4 (one more if the long request ended early)
