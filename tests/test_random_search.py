"""The ``random`` strategy: uniform draws at a fixed cost, budgets screened, best on validation;
resumable and speculable like the others, and run end to end by ``discover``."""

import dataclasses
import json
import zlib

import pytest

from edgenas.config.profile import Budget, parse_profile
from edgenas.config.strategies import RandomConfig
from edgenas.errors import ProfileError, SearchError
from edgenas.run.evaluator import check_budget
from edgenas.search.registry import make_strategy
from edgenas.search.space import count_macs, count_params, width_grid
from edgenas.search.speculation import likely_next
from edgenas.search.strategies import Outcome, drive

CFG = RandomConfig(min_depth=2, max_depth=6, min_width=4, max_width=16, width_step=4, epochs=3, candidates=12)


def acc_of(c):  # deterministic per network
    return Outcome(
        50.0 + c.arch.depth + c.arch.width / 10 + 0.3 * sum(c.arch.ops) + (zlib.crc32(str(c.arch).encode()) % 7) / 100,
        60.0,
    )


def test_draws_are_uniform_over_the_space_distinct_and_seeded():
    result = drive(make_strategy("random", config=CFG, in_channels=1, num_classes=10, seed=3), acc_of)
    archs = [c.arch for c, _ in result.history]
    assert len(archs) == 12 == len(set(archs)) and all(c.epochs == 3 and c.stage == "random" for c, _ in result.history)
    assert all(2 <= a.depth <= 6 and a.width in width_grid(CFG) for a in archs)
    assert [
        c.arch
        for c, _ in drive(make_strategy("random", config=CFG, in_channels=1, num_classes=10, seed=3), acc_of).history
    ] == archs
    assert [
        c.arch
        for c, _ in drive(make_strategy("random", config=CFG, in_channels=1, num_classes=10, seed=4), acc_of).history
    ] != archs
    best = max(archs, key=lambda a: acc_of(type("C", (), {"arch": a})).acc)
    assert result.arch == best and result.epochs is None
    many = drive(
        make_strategy(
            "random", config=dataclasses.replace(CFG, candidates=60, max_depth=3), in_channels=1, num_classes=10, seed=0
        ),
        acc_of,
    )
    depths = [c.arch.depth for c, _ in many.history]
    assert 15 <= depths.count(2) <= 45  # depth uniform over 2-3 (binomial, sd 3.9; repeats are redrawn)


def test_cost_in_candidate_epochs():
    cfg = dataclasses.replace(CFG, candidate_epochs=20)  # 20 // 3 = 6 candidates
    assert cfg.budget_candidates == 6
    assert drive(make_strategy("random", config=cfg, in_channels=1, num_classes=10, seed=0), acc_of).candidates == 6
    with pytest.raises(ProfileError, match=r"search.candidate_epochs = 2 is not allowed; it must be 0"):
        parse_profile('strategy = "random"\n[search]\nepochs = 3\ncandidate_epochs = 2\n', "p", "p.toml")
    p = parse_profile('strategy = "random"\n[search]\nmin_depth = 2\nmax_depth = 4\ncandidates = 5\n', "p", "p.toml")
    assert isinstance(p.search, RandomConfig) and p.search.candidates == 5


def test_over_budget_draws_cost_nothing_and_failed_ones_count():
    budget = Budget(max_params=2000)

    def answer(c):
        size = (count_params(c.arch, 1, 10), count_macs(c.arch, in_channels=1, num_classes=10, input_size=(8, 8)))
        if check_budget(c.arch, size=size, budget=budget, latency_of=lambda a: 0.0).reason:
            return Outcome(0.0, 0.0, "skipped", "over")
        return Outcome(0.0, 0.0, "failed") if c.arch.depth == 2 else acc_of(c)

    result = drive(make_strategy("random", config=CFG, in_channels=1, num_classes=10, seed=1), answer)
    statuses = [o.status for _, o in result.history]
    assert "skipped" in statuses and statuses.count("trained") + statuses.count("failed") == 12
    assert count_params(result.arch, 1, 10) <= 2000 and result.arch.depth != 2


def test_nothing_fits_raises_one_line():
    cfg = dataclasses.replace(CFG, max_draws=50)
    with pytest.raises(
        SearchError, match=r"random search: no candidate fitted the budget and trained \(50 of 50 drawn"
    ):
        drive(
            make_strategy("random", config=cfg, in_channels=1, num_classes=10),
            lambda c: Outcome(0.0, 0.0, "skipped", "over"),
        )


def test_fork_and_speculation_see_the_same_draws():
    strategy = make_strategy("random", config=CFG, in_channels=1, num_classes=10, seed=2)
    first = next(strategy)
    ahead = likely_next(None, answers=[], guess=50.0, k=3, at=strategy)
    twin = strategy.fork()
    assert strategy.send(acc_of(first)) == twin.send(acc_of(first)) == ahead[0]


@pytest.mark.slow
def test_discover_runs_a_random_search_end_to_end_and_resumes(tmp_path, ci_profile, one_thread):
    from edgenas.run.discover import discover
    from edgenas.run.rundir import RunDir

    text = ci_profile.read_text().replace('strategy = "egnas"', 'strategy = "random"')
    search = "[search]\nmin_depth = 2\nmax_depth = 3\nmin_width = 4\nmax_width = 12\nwidth_step = 4\nepochs = 1\ncandidates = 3\n"
    text = text[: text.index("[search]")] + search + text[text.index("[train]") :] + "\n[budget]\nmax_params = 3100\n"
    profile = tmp_path / "random.toml"
    profile.write_text(text)
    summary = discover(str(profile), out=tmp_path / "run", device="cpu", seed=5, log=lambda m: None)
    journal = RunDir(tmp_path / "run").journal()
    trained = [r for r in journal if r["status"] != "skipped"]
    assert len(trained) == 3 and all(r["stage"] == "random" and r["epochs"] == 1 for r in journal)
    best = max((r for r in trained if r["status"] == "trained"), key=lambda r: r["acc"])
    assert summary["arch_str"] == best["key"].split(":")[1] and summary["params"] <= 3100
    assert summary["test_from"] == "search.epochs (1)" and summary["over_budget"]["rule"] == "redraw"
    from edgenas.deploy.report import pareto
    from edgenas.deploy.report.run_report import write_report

    front = pareto.front_rows(journal, "params")
    assert front and all(r["stage"] == "random" for r in front)
    assert "random search:" in write_report(tmp_path / "run", out=tmp_path / "r.html")[0].read_text()
    # a resumed run answers from the journal and trains nothing again
    (tmp_path / "run" / "summary.json").unlink()
    again = discover(str(profile), out=tmp_path / "run", device="cpu", seed=5, resume=True, log=lambda m: None)
    assert RunDir(tmp_path / "run").journal() == journal and again["arch_str"] == summary["arch_str"]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["candidates"] == len(journal)
