import pytest
from click.testing import CliRunner

from edgenas.cli import main
from edgenas.errors import ProfileError
from edgenas.profiles import builtin_names, load_profile, parse_profile, stored_profile
from edgenas.search import EgnasConfig, TrgConfig


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
        ("[search]\nmin_width = 32\nmax_width = 16\n", "search.max_width = 16 is not allowed; it must be >= search.min_width (32)"),
        ("[search]\nmicro_kernels = [4]\n", "search.micro_kernels"),
        ("strategy = 'random'\n", "strategy = 'random' is not allowed; choose one of egnas, trg"),
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
