"""edgenas compare: verdicts on synthetic bench results, environment checks, the bootstrap interval,
paired mode on real ONNX models, and the CLI's exit codes."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from edgenas.cli import main
from edgenas.deploy.gate import compare as cmp
from edgenas.device_kit import edgenas_kit as kit
from edgenas.errors import UserInputError
from edgenas.search.space import Arch
from edgenas.training.network import build_model


def record(ms: float = 1.0, n: int = 20, samples: list | None = None, **env) -> dict:
    """A bench JSON whose samples all take ``ms`` (so p50 = p90 = p99 = mean = ms), or ``samples``."""
    samples = samples or [ms] * n
    n = len(samples)
    r = {
        "schema": kit.SCHEMA,
        "model": "m.onnx",
        "model_sha256": "a" * 64,
        "runtime": "onnxruntime-cpu",
        "runtime_version": "1.20",
        "device": "AMD EPYC",
        "host": "ci",
        "threads": 1,
        "batch": 1,
        "input_shape": [1, 3, 32, 32],
        "warmup": 5,
        "runs": n,
        **kit.latency_stats(samples, env.get("batch", 1)),
        "samples_ms": samples,
        "created": "2026-01-01T00:00:00Z",
        "environment": kit.unknown_environment(),
    }
    return r | env


def write(path: Path, r: dict) -> str:
    path.write_text(json.dumps(r))
    return str(path)


# -- verdicts on bench JSONs ---------------------------------------------------------------------
def test_three_percent_passes_a_five_percent_threshold():
    c = cmp.compare(record(1.0), current=record(1.03), max_regression=0.05)
    assert not c.regressed and c.exit_code == 0
    assert c.gate.change == pytest.approx(0.03) and c.gate.verdict == "OK"
    assert c.verdict.startswith("PASS: p50 changed by +3.0%")


def test_ten_percent_fails_with_exit_1():
    c = cmp.compare(record(1.0), current=record(1.10), max_regression=0.05)
    assert c.regressed and c.exit_code == 1 and c.gate.verdict == "REGRESSION"
    assert "FAIL: p50 regressed by +10.0%" in c.verdict


BOUNDARY_PAIRS = [
    (10, 10.5),
    (1, 1.05),
    (2, 2.1),
    (20, 21),
    (4, 4.2),
    (100, 105),
    (0.5, 0.525),
    (3, 3.15),
    (7, 7.35),
    (0.2, 0.21),
    (0.8, 0.84),
]  # exactly +5 % as written; c/b - 1 rounds to either side of 0.05


@pytest.mark.parametrize("base, cur", BOUNDARY_PAIRS)
def test_a_change_equal_to_the_threshold_passes(base, cur):
    c = cmp.compare(record(base), current=record(cur), max_regression=cmp.parse_max_regression("5%"))
    assert not c.regressed and c.exit_code == 0 and c.gate.verdict == "OK"
    assert c.verdict == "PASS: p50 changed by +5.0%, within the 5.0% threshold"


def test_paired_lower_bound_equal_to_the_threshold_passes():
    paired = cmp.PairedResult([1.05] * 3, (1.05, 1.06), 0.95, cmp.parse_max_regression("5%"), record(), record())
    assert paired.exit_code == 0 and "[1.05, 1.06]" in paired.verdict


def test_just_over_and_just_under_never_print_alike():
    under = cmp.compare(record(1.0), current=record(1.049999), max_regression=0.05)
    over = cmp.compare(record(1.0), current=record(1.050001), max_regression=0.05)
    assert under.exit_code == 0 and "+4.9999%" in under.verdict
    assert over.exit_code == 1 and "+5.0001%" in over.verdict
    assert "+4.99%" in cmp.compare(record(1.0), current=record(1.0499)).verdict  # as few digits as tell them apart
    assert "+5.01%" in cmp.compare(record(1.0), current=record(1.0501)).verdict
    assert cmp.compare(record(1.0), current=record(0.9499)).gate.verdict == "FASTER"
    assert cmp.compare(record(1.0), current=record(0.95)).gate.verdict == "OK"
    pass_ = cmp.PairedResult([1.0], (1.0499999, 1.2), 0.95, 0.05, record(), record())
    fail = cmp.PairedResult([1.0], (1.0500001, 1.2), 0.95, 0.05, record(), record())
    assert pass_.exit_code == 0 and "[1.0499999," in pass_.verdict
    assert fail.exit_code == 1 and "[1.0500001," in fail.verdict


def test_faster_passes_and_the_metric_option_picks_the_gate():
    assert cmp.compare(record(1.0), current=record(0.5)).exit_code == 0
    base = record(1.0)
    tail = record(samples=[1.0] * 95 + [1.5] * 5)  # same median, a slower tail
    assert cmp.compare(base, current=tail, metric="p50").exit_code == 0
    c = cmp.compare(base, current=tail, metric="p99")
    assert c.exit_code == 1 and c.gate.metric == "p99"
    with pytest.raises(UserInputError, match="unknown metric 'p75'"):
        cmp.compare(base, current=tail, metric="p75")


@pytest.mark.parametrize(
    "field, value",
    [
        ("runtime", "onnxruntime-cuda"),
        ("device", "Jetson Orin"),
        ("threads", 4),
        ("batch", 8),
        ("input_shape", [1, 3, 64, 64]),
    ],
)
def test_environment_mismatch_names_the_field(field, value):
    with pytest.raises(UserInputError, match=f"different environments: {field} .* vs .*--allow-env-mismatch") as e:
        cmp.compare(record(1.0), current=record(1.0, **{field: value}), names=("base.json", "cur.json"))
    assert "base.json" in str(e.value) and e.value.exit_code == 2
    c = cmp.compare(record(1.0), current=record(1.0, **{field: value}), allow_env_mismatch=True)
    assert c.exit_code == 0 and f"environment mismatch allowed: {field}" in c.verdict


def test_parse_max_regression():
    assert cmp.parse_max_regression("5%") == pytest.approx(0.05)
    assert cmp.parse_max_regression("0.05") == pytest.approx(0.05)
    assert cmp.parse_max_regression("12.5%") == pytest.approx(0.125)
    for bad, message in [("5", "ambiguous: write 5% or 0.05"), ("five", "not a fraction"), ("-3%", ">= 0")]:
        with pytest.raises(UserInputError, match=message):
            cmp.parse_max_regression(bad)


def test_tables_plain_and_markdown():
    c = cmp.compare(record(1.0), current=record(1.2), names=("base.json", "cur.json"))
    plain = c.table()
    assert "p50 (gate)" in plain and "+20.0%" in plain and "REGRESSION" in plain and plain.endswith(c.verdict)
    md = c.table(markdown=True)
    assert md.startswith("| metric | baseline (base.json) |") and "|---|" in md and f"**{c.verdict}**" in md
    assert c.accept_command() == "edgenas compare files base.json cur.json --update-baseline"


def test_schema_errors_are_unusable_input(tmp_path):
    good = write(tmp_path / "good.json", record())
    bad = write(tmp_path / "bad.json", record() | {"schema": "edgenas.bench/0"})
    missing = record()
    del missing["p90_ms"]
    with pytest.raises(UserInputError, match="bad.json: schema is 'edgenas.bench/0'"):
        cmp.compare_files(good, bad)
    with pytest.raises(UserInputError, match="field 'p90_ms' is missing"):
        cmp.compare_files(good, write(tmp_path / "m.json", missing))
    (tmp_path / "torn.json").write_text('{"schema": ')
    with pytest.raises(UserInputError, match="torn.json is not a readable JSON file"):
        cmp.compare_files(good, tmp_path / "torn.json")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"p50_ms": float("nan")}, "field 'p50_ms' is nan, not a positive finite number"),
        ({"p50_ms": 0.0}, "field 'p50_ms' is 0.0, not a positive finite number"),
        ({"p50_ms": -1.0}, "field 'p50_ms' is -1.0, not a positive finite number"),
        ({"p50_ms": 0.5}, "field 'p50_ms' is 0.5 but samples_ms give 1.0: the file contradicts itself"),
        ({"samples_ms": [1.0] * 19 + [float("nan")]}, "samples_ms must be finite"),
    ],
)
def test_garbage_is_unusable_input_and_never_becomes_the_baseline(tmp_path, changes, message):
    base = write(tmp_path / "base.json", record(1.0))
    before = Path(base).read_text()
    garbage = write(tmp_path / "cur.json", record(1.0) | changes)
    for args in ((base, garbage), (garbage, base), (base, garbage, "--update-baseline")):
        r = files(*args)
        assert r.exit_code == 2 and message in r.output, r.output
        assert r.output.startswith("edgenas: error: ") and r.output.count("\n") == 1
    assert Path(base).read_text() == before


def test_update_baseline_writes_current(tmp_path):
    base = write(tmp_path / "base.json", record(1.0))
    cmp.update_baseline(base, record(1.2))
    assert json.loads(Path(base).read_text())["p50_ms"] == pytest.approx(1.2)


# -- paired verdicts ------------------------------------------------------------------------------
def test_paired_verdict_needs_the_whole_interval_above_the_threshold():
    def result(ci):
        return cmp.PairedResult([1.0, 1.1], ci, 0.95, 0.05, record(), record())

    assert result((1.06, 1.2)).exit_code == 1
    assert result((1.04, 1.2)).exit_code == 0  # straddles 1.05: not called
    assert result((0.9, 1.0)).exit_code == 0


# -- paired mode on real models --------------------------------------------------------------------
def export_onnx(path: Path, width: int) -> str:
    torch.manual_seed(0)
    model = build_model(Arch.plain(3, width), 3, 10).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model,
            torch.randn(1, 3, 32, 32),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    return str(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[str, str]:
    d = tmp_path_factory.mktemp("models")
    return export_onnx(d / "w16.onnx", 16), export_onnx(d / "w32.onnx", 32)  # w32: about 2.8x the MACs


PAIRED = dict(runtime="onnxruntime-cpu", rounds=12, threads=1, warmup=3, runs_per_round=15)


def test_paired_model_against_itself_is_not_flagged(models):
    for seed in range(3):
        r = cmp.paired_compare(models[0], models[0], seed=seed, **PAIRED)
        assert not r.regressed and r.exit_code == 0, r.verdict
        assert len(r.ratios) == 12 and r.ci[0] <= r.median_ratio <= r.ci[1]


def test_paired_twice_the_width_is_flagged(models):
    r = cmp.paired_compare(models[0], models[1], **PAIRED)
    assert r.regressed and r.exit_code == 1 and r.ci[0] > 1.05, r.verdict
    assert r.median_ratio > 1.3 and "FAIL: B is slower than A" in r.verdict
    for b in (r.bench_a, r.bench_b):
        kit.validate_bench(b)
        assert b["runs"] == 12 * 15 and b["rounds"] == 12 and b["threads"] == 1
    assert r.bench_b["model"].endswith("w32.onnx")
    # the narrower model against the wider one is not a regression
    assert cmp.paired_compare(models[1], models[0], **PAIRED).exit_code == 0


# -- the CLI ---------------------------------------------------------------------------------------
def invoke(*args):
    return CliRunner().invoke(main, ["compare", *map(str, args)])


def files(*args):
    return invoke("files", *args)


def test_cli_exit_codes(tmp_path):
    base = write(tmp_path / "base.json", record(1.0))
    ok = files(base, write(tmp_path / "ok.json", record(1.03)), "--max-regression", "5%")
    assert ok.exit_code == 0 and "PASS" in ok.output
    slow = write(tmp_path / "slow.json", record(1.10))
    r = files(base, slow, "--max-regression", "0.05")
    assert r.exit_code == 1 and "FAIL: p50 regressed by +10.0%" in r.output
    assert f"edgenas compare files {base} {slow} --update-baseline" in r.output
    r = files(base, write(tmp_path / "t4.json", record(1.0, threads=4)))
    assert r.exit_code == 2 and "threads 1 vs 4" in r.output
    r = files(base, tmp_path / "t4.json", "--allow-env-mismatch", "--markdown")
    assert (
        r.exit_code == 0 and "environment mismatch allowed: threads 1 vs 4" in r.output and "| p50 (gate) |" in r.output
    )
    assert files(base, tmp_path / "absent.json").exit_code == 2
    assert files(base).exit_code == 2
    r = files(base, slow, "--max-regression", "5")
    assert r.exit_code == 2 and "ambiguous" in r.output


def test_cli_update_baseline(tmp_path):
    base = write(tmp_path / "base.json", record(1.0))
    slow = write(tmp_path / "slow.json", record(1.10))
    r = files(base, slow, "--update-baseline")
    assert r.exit_code == 0 and "new baseline" in r.output
    assert files(base, slow).exit_code == 0  # the slower result is now the baseline


def test_cli_paired_mode(models, tmp_path):
    a, b = models
    r = invoke(
        "models",
        a,
        b,
        "--runtime",
        "onnxruntime-cpu",
        "--threads",
        "1",
        "--rounds",
        "10",
        "--runs",
        "15",
        "--warmup",
        "3",
        "--write-baselines",
        tmp_path / "next",
    )
    assert r.exit_code == 1 and "FAIL: B is slower than A" in r.output
    assert kit.read_bench(tmp_path / "next" / "b.json")["model"].endswith("w32.onnx")
    r = invoke("models", a, a, "--threads", "1", "--rounds", "10", "--runs", "15", "--json-b", tmp_path / "b.json")
    assert r.exit_code == 0 and "PASS" in r.output and (tmp_path / "b.json").is_file()
    assert invoke("models", a, b, "x.json").exit_code == 2


@pytest.mark.parametrize("flag", ["--json-a", "--json-b", "--write-baselines"])
def test_cli_unwritable_output_is_refused_before_measuring(tmp_path, flag):
    (tmp_path / "file").write_text("a file, not a directory")
    (tmp_path / "dir").mkdir()
    # the models do not exist: the error about the output shows that it is checked first
    for target, message in [
        (tmp_path / "file" / "out.json", "is not a directory"),
        (tmp_path / ("file" if flag == "--write-baselines" else "dir"), "is a "),
    ]:
        r = invoke("models", tmp_path / "a.onnx", tmp_path / "b.onnx", flag, target)
        assert r.exit_code == 2 and r.output.startswith("edgenas: error: ") and flag in r.output, r.output
        assert message in r.output and r.output.count("\n") == 1


# -- the former one-command form: runs for one release, with a notice on stderr -----------------------
def test_former_form_runs_as_its_subcommand_with_a_one_line_notice(tmp_path):
    base = write(tmp_path / "base.json", record(1.0))
    slow = write(tmp_path / "slow.json", record(1.10))
    for args in ([], ["--markdown"], ["--max-regression", "20%"], ["--metric", "p99", "--allow-env-mismatch"]):
        new, old = files(base, slow, *args), invoke(base, slow, *args)
        assert old.exit_code == new.exit_code and old.stdout == new.stdout, args
        assert new.stderr == "" and old.stderr.count("\n") == 1
        assert "`edgenas compare BASELINE CURRENT` is deprecated" in old.stderr
        assert "run `edgenas compare files BASELINE CURRENT`" in old.stderr
    assert files(base, slow).exit_code == 1 and files(base, slow, "--max-regression", "20%").exit_code == 0
    r = invoke(base, slow, "--update-baseline")
    assert r.exit_code == 0 and "new baseline" in r.stdout and files(base, slow).exit_code == 0

    hist = tmp_path / "history"
    r = invoke("--history", hist, base, "--window", "3")
    assert r.exit_code == 0 and "added" in r.stdout and len(list(hist.glob("*.json"))) == 1
    assert "run `edgenas compare history DIR CURRENT`" in r.stderr
    unwritable = tmp_path / "base.json" / "a.json"  # refused before measuring (the models do not exist)
    r = invoke("models", tmp_path / "a.onnx", tmp_path / "b.onnx", "--json-a", unwritable)
    assert r.exit_code == 2 and "--json-a" in r.stderr and "deprecated" not in r.output
    r = invoke("--models", tmp_path / "a.onnx", tmp_path / "b.onnx", "--json-a", unwritable)
    assert r.exit_code == 2 and "--json-a" in r.stderr and "run `edgenas compare models A B`" in r.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["a.json"], "give BASELINE.json CURRENT.json, --history DIR CURRENT.json, or --models A B"),
        (["--models", "a", "b", "x.json"], "--models A B takes no BASELINE/CURRENT files"),
        (["--history", "h", "a.json", "b.json"], "--history DIR takes one CURRENT.json"),
        (["a.json", "b.json", "--png", "t.png"], "--png draws a history's trend"),
        (["a.json", "b.json", "--device", "http://localhost:1"], "--device URL goes with --models A B"),
        (["a.json", "b.json", "--max-regression", "5"], "is ambiguous"),
    ],
)
def test_former_form_keeps_its_usage_errors(args, message):
    r = invoke(*args)
    assert r.exit_code == 2 and message in r.stderr and r.stderr.count("\n") == 2, r.output
    assert r.stderr.startswith("edgenas: warning: `edgenas compare ")


def test_group_help_typos_and_no_command(tmp_path):
    r = invoke("--help")
    assert r.exit_code == 0 and all(name in r.output for name in ("files", "history", "models"))
    assert "(former form)" not in r.output
    r = invoke("file", "a.json", "b.json")  # no file named "file": a typo of the subcommand, not the former form
    assert r.exit_code == 2 and "files" in r.stderr and "deprecated" not in r.stderr
    r = invoke()
    assert r.exit_code in (0, 2) and "Commands:" in r.output and "edgenas: error" not in r.output
    for sub, absent in [("files", "--window"), ("history", "--update-baseline"), ("models", "--metric")]:
        assert absent not in invoke(sub, "--help").output, sub  # each subcommand has only its own options
