"""Issue 24, part 3: inputs that used to give a wrong result with exit 0 now refuse or say so."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgenas.cli import main
from edgenas.errors import UserInputError
from edgenas.runtime.latency_table import FEATURES, SCHEMA, read_table, table_from_dict
from edgenas.runtime.table_build import Target, local_built_for
from edgenas.search.space import Arch


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _error_line(r) -> str:
    lines = r.output.strip().splitlines()
    assert lines and lines[-1].startswith("edgenas: error: "), r.output
    return lines[-1]


# -- latency tables with NaN, infinite or negative figures -----------------------------------------
def _table(**change) -> dict:
    built_for = local_built_for(Target("classify", (1, 8, 8), 10, "onnxruntime-cpu"))
    coef = [1.0 if f.endswith("_layers") else 0.0 for f in FEATURES]
    return {"schema": SCHEMA, "model": "regression", "built_for": built_for, "space": {}, "entries": {},
            "coef": coef, "build_seconds": 0.0, **change}


def _lookup(**change) -> dict:
    return _table(**{"model": "lookup", "coef": [], "entries": {"stem:1>8@8x8": 0.1, "head:8>10@8x8": 0.1}, **change})


NAN, INF = float("nan"), float("inf")
BAD_TABLES = {
    "NaN coefficient": (_table(coef=[NAN] * len(FEATURES)), "coef[0] is nan"),
    "NaN entry": (_lookup(entries={"stem:1>8@8x8": NAN}), "entry 'stem:1>8@8x8' is nan"),
    "negative entry": (_lookup(entries={"stem:1>8@8x8": -0.5}), "entry 'stem:1>8@8x8' is -0.5"),
    "NaN scale": (_lookup(scale=NAN), "scale is nan"),
    "infinite scale": (_lookup(scale=INF), "scale is inf"),
    "negative scale": (_lookup(scale=-1.0), "scale is -1.0"),
    "NaN overhead": (_lookup(overhead_ms=NAN), "overhead_ms is nan"),
    "infinite overhead": (_lookup(overhead_ms=-INF), "overhead_ms is -inf"),
    "a string": (_lookup(scale="1.0"), "scale is '1.0', not a number"),
}


@pytest.mark.parametrize("case", BAD_TABLES)
def test_a_table_with_a_figure_that_is_not_a_latency_is_refused(tmp_path, case):
    table, needle = BAD_TABLES[case]
    path = tmp_path / "t.json"
    path.write_text(json.dumps(table))  # json writes NaN and Infinity, and reads them back
    with pytest.raises(UserInputError) as e:
        read_table(path)
    assert needle in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)


def test_a_prediction_that_is_not_a_latency_is_refused():
    """Finite coefficients can still predict a negative latency, which every budget would let through."""
    table = table_from_dict(_table(coef=[-5.0 if f == "one" else 0.0 for f in FEATURES]), "t")
    with pytest.raises(UserInputError, match="predicts -5.0 ms"):
        table.predict_ms(Arch.plain(2, 4))


def test_a_search_refuses_a_nan_table_before_anything_is_written(tmp_path, ci_profile):
    """On main every prediction was NaN, the budget never bound and the search exited 0 with a winner."""
    (tmp_path / "table.json").write_text(json.dumps(_table(coef=[NAN] * len(FEATURES))))
    profile = tmp_path / "p.toml"
    profile.write_text(ci_profile.read_text() + f'\n[budget]\nmax_latency_ms = 2.5\n'
                                                 f'latency_table = "{tmp_path / "table.json"}"\n')
    r = _cli("discover", "--profile", profile, "--out", tmp_path / "run", "--device", "cpu")
    assert r.exit_code == 2, r.output
    line = _error_line(r)
    assert "budget.latency_table" in line and "coef[0] is nan" in line, line
    assert not (tmp_path / "run").exists()


def test_latency_check_refuses_a_nan_table_instead_of_printing_nan(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps(_table(coef=[NAN] * len(FEATURES))))
    r = _cli("latency-check", path, "--quick", "--samples", "2", "--profile", "demo")
    assert r.exit_code == 2, r.output
    assert "nan %" not in r.output and "coef[0] is nan" in _error_line(r)
