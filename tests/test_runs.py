import dataclasses
import json

import pytest
from conftest import make_meta

from edgenas.errors import RunDirError, UserInputError
from edgenas.run.rundir import RunDir, read_jsonl, write_json_atomic

META = make_meta()


def rec(key: str, acc: float = 50.0) -> dict:
    """A journal record as the evaluator writes it (the fields the search reads back)."""
    return {"key": key, "status": "trained", "acc": acc, "train_acc": acc, "seconds": 1.0}


def test_torn_last_line_is_not_trusted_and_is_trimmed_on_resume(tmp_path):
    run = RunDir.start(tmp_path / "r", META, resume=False)
    run.record(rec("a"))
    run.record(rec("b"))
    with open(run.path / RunDir.JOURNAL, "ab") as f:
        f.write(b'{"key": "c", "ac')  # a kill in the middle of a write
    assert [r["key"] for r in run.journal()] == ["a", "b"]
    run = RunDir.start(tmp_path / "r", META, resume=True)
    run.record(rec("d"))
    assert [r["key"] for r in run.journal()] == ["a", "b", "d"]


@pytest.mark.parametrize(
    "bad,why",
    [
        (b"not json", "not JSON"),
        (b"{}", "no valid 'key'"),
        (b"[1,2]", "list instead of a record"),
        (b"null", "NoneType instead of a record"),
        (b'{"key": "x", "acc": "high"}', "no valid 'status'"),
        (b"\xff\xfe\x00garbage", "not JSON"),
    ],
)
def test_a_damaged_line_in_the_middle_is_an_error_with_its_line_number(tmp_path, bad, why):
    run = RunDir.start(tmp_path / "r", META, resume=False)
    run.record(rec("a"))
    with open(run.path / RunDir.JOURNAL, "ab") as f:
        f.write(bad + b"\n")
    run.record(rec("c"))
    before = (run.path / RunDir.JOURNAL).read_bytes()
    with pytest.raises(RunDirError, match=rf"journal.jsonl, line 2, is damaged: .*{why}.*fix or delete that line") as e:
        RunDir.start(tmp_path / "r", META, resume=True)
    assert "\n" not in str(e.value)
    assert (run.path / RunDir.JOURNAL).read_bytes() == before  # nothing cut off


def test_blank_lines_are_ignored(tmp_path):
    p = tmp_path / "j.jsonl"
    p.write_text(json.dumps(rec("a")) + "\n\n  \n" + json.dumps(rec("b")) + "\n")
    assert [r["key"] for r in read_jsonl(p, {"key": str})] == ["a", "b"]


def test_taken_directory_is_refused(tmp_path):
    RunDir.start(tmp_path / "r", META, resume=False)
    with pytest.raises(
        UserInputError, match="out=.*: already holds a search; continue it with resume, or choose another out"
    ):
        RunDir.start(tmp_path / "r", META, resume=False)


def test_resume_needs_a_run_and_the_same_settings(tmp_path):
    with pytest.raises(UserInputError, match="holds no search to resume"):
        RunDir.start(tmp_path / "none", META, resume=True)
    RunDir.start(tmp_path / "r", META, resume=False)
    with pytest.raises(RunDirError, match="different seed"):
        RunDir.start(tmp_path / "r", dataclasses.replace(META, seed=1), resume=True)


def test_atomic_write_leaves_no_temp_files(tmp_path):
    write_json_atomic(tmp_path / "a.json", {"k": [1, 2]})
    assert json.loads((tmp_path / "a.json").read_text()) == {"k": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_open_requires_a_run(tmp_path):
    with pytest.raises(RunDirError, match="not an edgenas run directory"):
        RunDir.open(tmp_path)


@pytest.fixture(scope="module")
def digits():
    from edgenas.training.data import load_dataset

    return load_dataset("digits", data_dir=None, val_fraction=0.15, seed=0)


def test_run_json_records_the_data_and_resume_refuses_other_data(tmp_path, digits):
    from conftest import subset_train

    meta = make_meta(data=digits)
    ds = meta.to_dict()["dataset"]
    assert ds["sizes"] == {"train": len(digits.train), "val": len(digits.val), "test": len(digits.test)}
    assert ds["fingerprint"].startswith("sha256:") and make_meta(data=digits).dataset.fingerprint == ds["fingerprint"]
    RunDir.start(tmp_path / "r", meta, resume=False)
    assert RunDir(tmp_path / "r").meta == meta  # round trip
    RunDir.start(tmp_path / "r", make_meta(data=digits), resume=True)  # the same data: fine
    with pytest.raises(RunDirError, match="searched on other data: the dataset's split sizes changed"):
        RunDir.start(tmp_path / "r", make_meta(data=subset_train(digits, 100)), resume=True)
    x = digits.train.x.clone()
    x[0, 0, 0, 0] ^= 1  # one pixel of one image
    changed = dataclasses.replace(digits, train=dataclasses.replace(digits.train, x=x))
    with pytest.raises(RunDirError, match="dataset's images changed"):
        RunDir.start(tmp_path / "r", make_meta(data=changed), resume=True)
    extra = dataclasses.replace(digits, num_classes=11, class_names=digits.class_names + ("new",))
    with pytest.raises(
        RunDirError, match=r"classes, image shape or pixel statistics changed \(num_classes 10, now 11\)"
    ):
        RunDir.start(tmp_path / "r", make_meta(data=extra), resume=True)


def test_a_run_json_without_sizes_and_fingerprint_is_still_read_and_resumed(tmp_path, digits):
    run = RunDir.start(tmp_path / "r", make_meta(data=digits), resume=False)
    old = json.loads((run.path / RunDir.META).read_text())
    del old["dataset"]["sizes"], old["dataset"]["fingerprint"]
    (run.path / RunDir.META).write_text(json.dumps(old))
    assert run.meta.dataset.fingerprint is None
    RunDir.start(tmp_path / "r", make_meta(data=digits), resume=True)


def test_output_files_honour_the_umask(tmp_path):
    import os

    before = os.umask(0o027)
    try:
        run = RunDir.start(tmp_path / "r", META, resume=False)
        run.record(rec("a"))
        run.write(RunDir.ARCH, {"depth": 2})
        run.save_weights(__import__("torch").nn.Linear(2, 2))
    finally:
        os.umask(before)
    for name in (RunDir.META, RunDir.JOURNAL, RunDir.ARCH, RunDir.WEIGHTS):
        assert (run.path / name).stat().st_mode & 0o777 == 0o640, name


def test_one_process_per_run_directory(tmp_path):
    run = RunDir(tmp_path / "r")
    with run.lock("discover"):
        with pytest.raises(RunDirError, match=r"r is in use by `edgenas discover` \(pid \d+ on .*, since .*\); wait"):
            with RunDir(tmp_path / "r").lock("train"):
                pass
    assert not run.path.exists()  # made for the lock and left empty: removed again
    run.path.mkdir()
    with RunDir(tmp_path / "r").lock("train"):  # released with the block
        assert (run.path / ".lock.holder").is_file()
    assert [p.name for p in run.path.iterdir()] == [".lock"]


def test_resume_default_is_the_unfinished_run_written_last(tmp_path):
    import os

    from edgenas.config.profile import load_profile
    from edgenas.run.discover import default_out

    profile = load_profile("tiny")
    base = tmp_path / "runs" / "tiny-digits"
    paths = [base, base.with_name("tiny-digits-2"), base.with_name("tiny-digits-3")]
    for i, path in enumerate(paths):
        RunDir.start(path, META, resume=False)
        os.utime(path / RunDir.META, (1000 + i, 1000 + i))
    (paths[2] / RunDir.SUMMARY).write_text("{}")  # the newest is finished
    assert default_out(profile, dataset="digits", resume=True, root=tmp_path / "runs") == paths[1]
    RunDir(paths[0]).record(rec("a"))  # the oldest run was written to last
    assert default_out(profile, dataset="digits", resume=True, root=tmp_path / "runs") == paths[0]
    assert default_out(profile, dataset="digits", resume=False, root=tmp_path / "runs") == base.with_name(
        "tiny-digits-4"
    )


def _image_class(root, name: str, n: int = 10, seed: int = 0) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / name).mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / name / f"{i}.png")


def test_resume_refuses_an_image_folder_that_changed(tmp_path, ci_profile):
    from click.testing import CliRunner

    from edgenas.cli import main
    from edgenas.config.profile import load_profile
    from edgenas.run.meta import run_meta
    from edgenas.training.tasks import task_for

    images, out = tmp_path / "images", tmp_path / "run"
    for i, name in enumerate("abc"):
        _image_class(images, name, seed=i)
    profile = load_profile(str(ci_profile))
    data = task_for("classify").load_data("imagefolder", data_dir=str(images), profile=profile, seed=0, download=False)
    RunDir.start(
        out,
        run_meta(
            profile,
            task="classify",
            dataset="imagefolder",
            data_dir=str(images),
            data=data,
            extra={},
            seed=0,
            device="cpu",
        ),
        resume=False,
    )
    resume = [
        "discover",
        "--profile",
        str(ci_profile),
        "--dataset",
        "imagefolder",
        "--data-dir",
        str(images),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--resume",
    ]
    _image_class(images, "d", seed=3)  # a class folder was added
    r = CliRunner().invoke(main, resume)
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert (
        "searched on other data: the dataset's classes, image shape or pixel statistics changed (num_classes 3, now 4)"
        in r.output
    )
    for f in (images / "d").iterdir():
        f.unlink()
    (images / "d").rmdir()
    _image_class(tmp_path / "other", "a", n=1, seed=9)  # one image replaced by another
    (tmp_path / "other" / "a" / "0.png").replace(images / "a" / "0.png")
    r = CliRunner().invoke(main, resume)
    assert r.exit_code == 2 and "searched on other data" in r.output, r.output
    assert not (out / RunDir.JOURNAL).exists()
