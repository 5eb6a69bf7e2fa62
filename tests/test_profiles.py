import pytest
from click.testing import CliRunner

from edgenas.cli import main
from edgenas.config.profile import (
    builtin_names,
    load_profile,
    parse_profile,
    stored_profile,
)
from edgenas.config.strategies import EgnasConfig, TrgConfig
from edgenas.errors import ProfileError


def test_builtin_profiles_exist():
    assert {"tiny", "mobile", "paper-trg", "demo"} <= set(builtin_names())


@pytest.mark.parametrize("name", builtin_names())
def test_every_builtin_profile_loads_and_round_trips(name):
    p = load_profile(name)
    assert p.name == name and p.description
    assert stored_profile(p.to_dict()) == p


def test_reference_defaults():
    tiny, mobile, trg = load_profile("tiny"), load_profile("mobile"), load_profile("paper-trg")
    assert tiny.search == EgnasConfig(max_width=64)
    assert mobile.search == EgnasConfig(max_width=128)
    assert trg.search == TrgConfig()
    assert tiny.train.batch_size == 64 and tiny.train.lr == 0.025 and tiny.train.weight_decay == 3e-4


def test_load_by_path(ci_profile):
    p = load_profile(str(ci_profile))
    assert p.name == "ci" and p.search.max_depth == 3


@pytest.mark.parametrize(
    "text,needle",
    [
        ("[search]\nmax_widht = 3\n", "unknown key search.max_widht"),
        ("[search]\nmax_width = 'wide'\n", "search.max_width: must be an integer"),
        (
            "[search]\nmin_width = 32\nmax_width = 16\n",
            "search.max_width = 16 is not allowed; it must be >= search.min_width (32)",
        ),
        ("[search]\nmicro_kernels = [4]\n", "search.micro_kernels"),
        ("strategy = 'greedy'\n", "strategy = 'greedy' is not allowed; choose one of egnas, trg, random"),
        ("[train]\nprotocol = 'turbo'\n", "train.protocol"),
        ("[budget]\nruntime = 'tflite'\n", "budget.runtime = 'tflite' is not allowed; choose one of"),
        ("[budget]\nmax_params = -1\n", "budget.max_params"),
        ("[data]\nval_fraction = 0.9\n", "data.val_fraction"),
        ("colour = 'red'\n", "unknown key colour"),
        ("[search\n", "not valid TOML"),
        ("strategy = 'trg'\n[search]\nmicro_epochs = 2\n", "unknown key search.micro_epochs; allowed in [search]"),
    ],
)
def test_bad_profiles_give_one_line_naming_file_and_key(text, needle):
    with pytest.raises(ProfileError) as e:
        parse_profile(text, "bad", "bad.toml")
    message = str(e.value)
    assert needle in message and message.startswith("bad.toml")
    assert "\n" not in message and e.value.exit_code == 2


def test_cli_bad_profile_exit_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[search]\nmax_depth = 'deep'\n")
    r = CliRunner().invoke(main, ["discover", "--profile", str(bad), "--out", str(tmp_path / "run")])
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == [f"edgenas: error: {bad}: search.max_depth: must be an integer, got 'deep'"]
    assert not (tmp_path / "run").exists()


def test_cli_unknown_profile_name():
    r = CliRunner().invoke(main, ["discover", "--profile", "huge"])
    assert r.exit_code == 2 and "unknown profile 'huge'; built-in profiles:" in r.output


def test_cli_profiles_lists_and_shows():
    r = CliRunner().invoke(main, ["profiles"])
    assert r.exit_code == 0 and "tiny" in r.output and "paper-trg" in r.output
    r = CliRunner().invoke(main, ["profiles", "mobile"])
    assert r.exit_code == 0 and '"max_width": 128' in r.output


# -- every setting's bounds, checked once in the profile ----------------------------------------------
def _bad_values(rules: dict, tp) -> list:
    """Values just outside the declared range (and NaN/inf for numbers)."""
    if "choices" in rules:
        return ["not-a-choice" if tp is str else 2]
    if "items" in rules:
        return [[4]]
    if "item_ge" in rules:
        return [[rules["item_ge"] - 1, 8], [rules["item_le"] + 1, 8]]
    out = []
    for key, step in (("ge", -1), ("gt", 0), ("le", 1), ("lt", 0)):
        if key in rules:
            edge = rules[key]
            value = edge + step if tp is int else (edge + step * max(1.0, abs(edge)) if step else edge)
            out.append(int(value) if tp is int else float(value))
    if tp is float:
        out += [float("nan"), float("inf"), float("-inf")]
    return out


def _cases():
    import dataclasses
    import typing

    from edgenas.config.plan import TrainPlan
    from edgenas.config.profile import Budget, DataConfig, FaceConfig

    for section, cls, strategy in (
        ("search", EgnasConfig, "egnas"),
        ("search", TrgConfig, "trg"),
        ("train", TrainPlan, "egnas"),
        ("budget", Budget, "egnas"),
        ("data", DataConfig, "egnas"),
        ("face", FaceConfig, "egnas"),
    ):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            rules = f.metadata.get("rules")
            if not rules:
                continue
            tp = hints[f.name]
            tp = (
                next((a for a in typing.get_args(tp) if a is not type(None)), tp)
                if typing.get_origin(tp) is typing.Union
                else tp
            )
            for value in _bad_values(rules, tp):
                yield strategy, section, f.name, value


def _toml(value) -> str:
    if isinstance(value, float):
        return (
            "nan" if value != value else ("inf" if value > 0 else "-inf") if abs(value) == float("inf") else repr(value)
        )
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


CASES = list(_cases())


@pytest.mark.parametrize("strategy,section,key,value", CASES, ids=[f"{c[0]}-{c[1]}.{c[2]}={c[3]!r}" for c in CASES])
def test_every_out_of_range_setting_is_one_line_exit_2_before_anything_is_written(
    tmp_path, strategy, section, key, value
):
    path = tmp_path / "bad.toml"
    path.write_text(f'strategy = "{strategy}"\n[{section}]\n{key} = {_toml(value)}\n')
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["discover", "--profile", str(path), "--out", str(out), "--device", "cpu"])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgenas: error: ") and f"{section}.{key}" in lines[0], r.output
    assert str(path) in lines[0] and "Traceback" not in r.output
    assert not out.exists()


def test_count_of_checked_settings_covers_every_bounded_key():
    keys = {(s, k) for _, s, k, _ in CASES}
    assert ("face", "margin") in keys and ("search", "width_drop") in keys and ("search", "micro_gain") in keys
    assert len(keys) >= 40


def test_arcface_margin_of_1_58_is_refused_in_the_profile(tmp_path):
    """ArcFace needs m < pi/2 = 1.5708: the profile says so, before data or a run directory exist."""
    path = tmp_path / "face.toml"
    path.write_text('task = "face"\n[face]\nmargin = 1.58\n')
    r = CliRunner().invoke(main, ["discover", "--profile", str(path), "--out", str(tmp_path / "run")])
    assert (
        r.exit_code == 2
        and "face.margin = 1.58 is not allowed; it must be a finite number >= 0 and < 1.5708" in r.output
    )
    assert not (tmp_path / "run").exists()


def test_a_directory_named_like_a_builtin_does_not_hide_it(tmp_path, monkeypatch):
    (tmp_path / "demo").mkdir()
    monkeypatch.chdir(tmp_path)
    assert load_profile("demo").source == "profiles/demo.toml"
    with pytest.raises(ProfileError, match="demo is a directory, not a profile file"):
        load_profile("./demo")


def test_a_profile_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('description = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ProfileError, match="not UTF-8 text"):
        load_profile(str(path))
