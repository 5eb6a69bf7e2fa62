"""The search under a budget (issue 22): the depth stage goes on at the widest width that fits
(``over_budget = "narrow"``, the default), or ends (``"stop"``); and the micro stages' narrowing."""

import dataclasses

import pytest

from edgenas.config.profile import Budget, parse_profile
from edgenas.config.strategies import EgnasConfig, TrgConfig
from edgenas.errors import ProfileError
from edgenas.run.evaluator import check_budget
from edgenas.search.space import Arch, count_macs, count_params
from edgenas.search.strategies import Outcome, drive, egnas, trg

CFG = EgnasConfig(
    min_depth=3,
    max_depth=8,
    min_width=4,
    max_width=16,
    width_step=4,
    epochs=1,
    depth_patience=1,
    width_patience=1,
    micro_kernels=(5,),
)
SHAPE = (1, 10)  # 1 input channel, 10 classes
SIZE = (28, 28)


def _screened(budget: Budget, acc):
    """Answers as the evaluator does: ``check_budget`` on the real params and MACs, else ``acc(arch)``."""

    def answer(cand):
        size = (
            count_params(cand.arch, *SHAPE),
            count_macs(cand.arch, in_channels=SHAPE[0], num_classes=SHAPE[1], input_size=SIZE),
        )
        reason = check_budget(cand.arch, size=size, budget=budget, latency_of=lambda a: 0.0).reason
        return Outcome(0.0, 0.0, "skipped", reason) if reason else Outcome(acc(cand.arch), 50.0)

    return answer


def deeper_is_better(arch):  # each layer pays 1 %, width a little
    return 50.0 + arch.depth + arch.width / 100


def _fits(budget: Budget, arch: Arch) -> bool:
    return not check_budget(
        arch,
        size=(
            count_params(arch, *SHAPE),
            count_macs(arch, in_channels=SHAPE[0], num_classes=SHAPE[1], input_size=SIZE),
        ),
        budget=budget,
        latency_of=lambda a: 0.0,
    ).reason


@pytest.mark.parametrize("budget", [Budget(max_params=3000), Budget(max_macs=300_000)], ids=["params", "macs"])
def test_a_budget_binding_at_min_depth_and_max_width_still_explores_deeper_networks(budget):
    assert not _fits(budget, Arch.plain(CFG.min_depth, CFG.max_width))  # it binds at the first candidate
    result = drive(egnas(CFG, *SHAPE), _screened(budget, deeper_is_better))
    depth = [(c, o) for c, o in result.history if c.stage == "depth"]
    trained = [c.arch for c, o in depth if o.usable]
    assert max(a.depth for a in trained) > CFG.min_depth + 1  # deeper networks trained, within the budget
    assert all(_fits(budget, a) for a in trained)
    for a in trained:  # each at the widest width of the grid that fits at its depth (deeper never wider)
        wider = a.width + CFG.width_step
        assert (
            wider > CFG.max_width
            or not _fits(budget, Arch.plain(a.depth, wider))
            or any(b.depth < a.depth and b.width == a.width for b in trained)
        )
    assert [a.width for a in trained] == sorted((a.width for a in trained), reverse=True)
    assert result.arch.depth > CFG.min_depth and _fits(budget, result.arch.with_width(result.arch.width))

    stopped = drive(egnas(dataclasses.replace(CFG, over_budget="stop"), *SHAPE), _screened(budget, deeper_is_better))
    assert [c.stage for c, _ in stopped.history].count("depth") == 1  # the old rule: the depth stage ends
    assert stopped.arch.depth == CFG.min_depth
    assert result.arch.depth > stopped.arch.depth


def test_narrowed_depth_candidates_keep_their_epochs_and_the_width_stage_starts_from_the_best():
    cfg, budget = dataclasses.replace(CFG, max_depth=4), Budget(max_params=5000)
    result = drive(egnas(cfg, *SHAPE), _screened(budget, deeper_is_better))
    depth = [c for c, _ in result.history if c.stage == "depth"]
    assert [str(c.arch) for c in depth] == ["d3-w16-sss-333", "d3-w12-sss-333", "d4-w12-ssss-3333", "d4-w8-ssss-3333"]
    for c in depth:  # epochs grow with depth only, as in the published rule
        assert c.epochs == CFG.epochs + (c.arch.depth - CFG.min_depth) * CFG.add_epochs_depth
    best = max((c.arch for c, o in result.history if c.stage == "depth" and o.usable), key=deeper_is_better)
    widths = [c.arch for c, _ in result.history if c.stage == "width"]
    assert best == Arch.plain(4, 8) and widths[0] == best.with_width(4)


def test_nothing_fits_even_at_min_width_ends_the_search_with_the_usual_error():
    from edgenas.errors import SearchError

    with pytest.raises(SearchError, match="no candidate fitted the budget"):
        drive(egnas(CFG, *SHAPE), _screened(Budget(max_params=50), deeper_is_better))


def test_without_a_budget_both_rules_ask_for_the_same_candidates():
    def answer(c):
        return Outcome(60.0 + c.arch.depth * 0.3 - abs(c.arch.width - 8) * 0.2 + 0.05 * sum(c.arch.ops), 50.0)

    narrow = drive(egnas(CFG, *SHAPE), answer)
    stop = drive(egnas(dataclasses.replace(CFG, over_budget="stop"), *SHAPE), answer)
    assert [c for c, _ in narrow.history] == [c for c, _ in stop.history]


def test_trg_narrows_over_budget_depth_candidates_too():
    cfg = TrgConfig(min_depth=3, max_depth=6, min_width=4, max_width=16, width_step=4, epochs=1, micro_kernels=(5,))
    budget = Budget(max_params=3000)
    result = drive(trg(cfg), _screened(budget, deeper_is_better))
    trained = [c.arch for c, o in result.history if c.stage == "depth" and o.usable]
    assert max(a.depth for a in trained) == cfg.max_depth and all(_fits(budget, a) for a in trained)
    stopped = drive(trg(dataclasses.replace(cfg, over_budget="stop")), _screened(budget, deeper_is_better))
    assert [c.stage for c, _ in stopped.history].count("depth") == 1


def test_over_budget_setting_is_validated():
    assert parse_profile("[search]\n", "p", "p.toml").search.over_budget == "narrow"
    assert parse_profile('[search]\nover_budget = "stop"\n', "p", "p.toml").search.over_budget == "stop"
    with pytest.raises(
        ProfileError, match=r"p.toml: search.over_budget = 'shrink' is not allowed; choose one of narrow, stop"
    ):
        parse_profile('[search]\nover_budget = "shrink"\n', "p", "p.toml")


# -- the micro stages' parameter matching ---------------------------------------------------------

MICRO = EgnasConfig(
    min_depth=4, max_depth=4, min_width=8, max_width=8, width_step=4, micro_param_slack=0.0, micro_kernels=(5,)
)


def _every_change_pays(c):
    return Outcome(50.0 + sum(c.arch.ops) + sum(c.arch.kernels) / 10, 50.0)


def test_micro_narrowing_goes_below_min_width_as_the_published_code_does():
    result = drive(egnas(MICRO, 3, 10), _every_change_pays)
    budget = count_params(Arch.plain(4, 8), 3, 10)
    ops = [c.arch for c, _ in result.history if c.stage == "ops"][1:]  # after the macro result retrained
    assert ops and min(a.width for a in ops) < MICRO.min_width  # matched below min_width ...
    for a in ops:  # ... at the widest width from the macro width down that matches, never below width 1
        assert a.width >= 1 and count_params(a, 3, 10) <= budget
        assert a.width == MICRO.max_width or count_params(a.with_width(a.width + 1), 3, 10) > budget
    ops_result = [c.arch for c, o in result.history if c.stage == "ops"][-1]
    kernels = [c.arch for c, _ in result.history if c.stage == "kernels"]
    assert all(1 <= a.width and count_params(a, 3, 10) <= count_params(ops_result, 3, 10) for a in kernels)
    assert result.arch.width < MICRO.min_width and sum(result.arch.ops) >= 1


def test_micro_width_floor_keeps_the_old_floor():
    cfg = dataclasses.replace(MICRO, micro_width_floor=True)
    result = drive(egnas(cfg, 3, 10), _every_change_pays)
    micro = [c.arch for c, _ in result.history if c.stage in ("ops", "kernels")]
    assert all(a.width >= cfg.min_width for a in micro)
    free = drive(egnas(MICRO, 3, 10), _every_change_pays)
    assert len(micro) < len([c for c, _ in free.history if c.stage in ("ops", "kernels")])  # changes not tried
    assert parse_profile("[search]\nmicro_width_floor = true\n", "p", "p.toml").search.micro_width_floor


# -- what the rule did: summary, console, report, profiles ----------------------------------------


def test_budget_rule_note_says_what_each_rule_did():
    from edgenas.search.budget_rule import budget_rule_note

    journal = [
        {"stage": "depth", "depth": 3, "width": 16, "status": "skipped", "reason": "params 5,018 > max_params 3,000"},
        {"stage": "depth", "depth": 3, "width": 12, "status": "trained"},
        {"stage": "depth", "depth": 4, "width": 12, "status": "skipped", "reason": "params"},
        {"stage": "depth", "depth": 4, "width": 8, "status": "trained"},
        {"stage": "width", "depth": 4, "width": 4, "status": "trained"},
    ]
    note = budget_rule_note(CFG, journal, has_budget=True)
    assert note["depth_over_budget"] == 2 and note["depth_trained"] == [(3, 12), (4, 8)]
    assert note["text"] == (
        "over_budget = narrow: 2 depth candidate(s) over the budget were tried narrower; the depth "
        "stage trained depths 3-4 at widths 12-8 (the widest of the grid that fit)"
    )
    stop = budget_rule_note(dataclasses.replace(CFG, over_budget="stop"), journal[:1], has_budget=True)
    assert stop["text"].startswith(
        "over_budget = stop: the depth stage ended at depth 3, where a candidate of width 16"
    )
    assert budget_rule_note(CFG, journal[1:2], has_budget=False)["text"] == "no budget: the published search"


@pytest.mark.slow
def test_a_budgeted_run_says_what_the_rule_did_and_where_test_figures_come_from(budget_run, tmp_path):
    import json

    from edgenas.deploy.report.run_report import write_report

    out, stderr = budget_run
    summary = json.loads((out / "summary.json").read_text())
    rule = summary["over_budget"]
    assert rule["rule"] == "narrow" and rule["text"].startswith("over_budget = narrow") and rule["text"] in stderr
    assert summary["test_from"] == f"discovered epochs ({summary['winner_epochs']})"
    assert summary["final_epochs"] == 2 and f"(after discovered epochs ({summary['winner_epochs']}); " in stderr
    html = write_report(out, out=tmp_path / "r.html")[0].read_text()
    assert "budget rule" in html and "test figures after" in html


def test_profiles_lists_the_rule_of_budgeted_profiles():
    from click.testing import CliRunner

    from edgenas.cli import main

    r = CliRunner().invoke(main, ["profiles"])
    assert r.exit_code == 0
    lines = {line.split()[0]: line for line in r.output.splitlines() if line and not line.startswith(" ")}
    assert "over budget: narrow (deeper at the widest width that fits)" in lines["cpu-1thread"]
    assert "over budget" not in lines["tiny"]
