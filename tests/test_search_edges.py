"""Search edge cases (issue 15): decide as the published code does, and speculation never fails where
the sequential search finishes. Every case is driven sequentially and through ``drive_speculative``."""

import concurrent.futures as cf
import dataclasses
import random

import pytest
from conftest import TESTS
from hypothesis import given, settings
from hypothesis import strategies as hs

from edgenas.config.profile import load_profile, parse_profile, profile_from_dict
from edgenas.config.strategies import CONFIGS, EgnasConfig, TrgConfig
from edgenas.errors import ProfileError
from edgenas.search.registry import make_strategy
from edgenas.search.replay import MemoryEvaluator, replay_log, replay_log_speculative
from edgenas.search.space import count_params
from edgenas.search.speculation import drive_speculative, likely_next
from edgenas.search.strategies import (
    Outcome,
    StrategyRun,
    drive,
    egnas,
    trg,
)

SYNTHETIC_LOGS = sorted((TESTS / "data" / "searchlogs" / "synthetic").glob("*.json"))


class AnswerPool:
    """The pool protocol of ``drive_speculative``; a candidate is 'trained' at once by ``answer``."""

    def __init__(self, answer):
        self.answer, self.trained = answer, []

    def submit(self, cand, seed, tag):
        self.trained.append(cand)
        out = self.answer(cand)
        fut = cf.Future()
        fut.set_result({"status": out.status, "val_acc": out.acc, "train_acc": out.train_acc, "seconds": 0.0})
        return fut

    def cancel(self, cand, future):
        pass

    def uncancel(self, cand):
        pass

    def result(self, cand, future):
        return future.result()

    def close(self):
        pass


class AnswerEvaluator(MemoryEvaluator):
    """``MemoryEvaluator`` whose screen turns away the candidates ``answer`` calls over budget."""

    def __init__(self, answer):
        super().__init__()
        self.answer = answer

    def screen(self, cand):
        out = self.answer(cand)
        if out.status != "skipped":
            return {}, None
        self.done[cand.key()] = out
        return {}, out


def _outcome_of(run):
    """What a drive ended with: its requests and result, or the error it raised (type and message)."""
    try:
        result = run()
    except Exception as e:  # noqa: BLE001 - compared, not hidden
        return ("error", type(e).__name__, str(e))
    return ("ok", [c.key() for c, _ in result.history], result.arch, result.epochs, result.acc)


def both_paths(factory, answer, slots=4):
    """(sequential, speculative) outcomes of one search; ``answer`` must depend on the candidate only."""
    sequential = _outcome_of(lambda: drive(factory(), answer))
    speculative = _outcome_of(
        lambda: drive_speculative(
            factory, evaluator=AnswerEvaluator(answer), pool=AnswerPool(answer), slots=slots, seed_of=lambda key: 0
        )
    )
    return sequential, speculative


def _tiny():
    return load_profile("tiny").search


def _stage_answers(depth, width=lambda c: Outcome(85.0, 84.0), micro=lambda c: Outcome(60.0, 50.0)):
    def answer(c):
        if c.stage == "depth":
            return depth(c.arch.depth)
        return width(c) if c.stage == "width" else micro(c)

    return answer


# -- 1. discovered epochs when no width candidate is accepted -------------------------------------


def test_discovered_epochs_are_the_counter_the_depth_stage_left_when_no_width_is_accepted():
    answer = _stage_answers(lambda d: Outcome(90.0 if d == 10 else 80.0, 85.0))
    seq, spec = both_paths(lambda: egnas(_tiny(), 3, 10), answer)
    assert seq == spec and seq[0] == "ok"
    requests = seq[1]
    assert len(requests) == 28 and sum(k.startswith("width:") for k in requests) == 3
    assert seq[2].depth == 10 and seq[3] == 13  # depth 10 wins; epochs advanced to 13 on the way


def test_discovered_epochs_are_the_accepted_widths_when_one_is():
    answer = _stage_answers(
        lambda d: Outcome(90.0 if d == 10 else 80.0, 85.0),
        width=lambda c: Outcome(90.0 if c.arch.width == 62 else 85.0, 84.0),
    )
    seq, spec = both_paths(lambda: egnas(_tiny(), 3, 10), answer)
    assert seq == spec and seq[3] == 15  # 13 after the depth stage, + 2 for width 62


@pytest.mark.parametrize("path", SYNTHETIC_LOGS, ids=lambda p: p.stem)
def test_synthetic_log_replays_exactly(path):
    for report in (replay_log(path), replay_log_speculative(path, slots=4)):
        assert report.ok, report.error
        assert report.requests_matched == report.records == 28


def test_there_is_a_synthetic_log():
    assert [p.name for p in SYNTHETIC_LOGS] == ["egnas-synthetic-no-width-accepted.json"]


# -- 2. a failed candidate is a poor result, not a budget verdict ---------------------------------


def test_failed_depth_candidate_counts_against_patience():
    def depth(d):
        return {10: Outcome(90.0, 85.0), 11: Outcome(0.0, 0.0, "failed"), 12: Outcome(92.0, 86.0)}.get(
            d, Outcome(80.0, 80.0)
        )

    seq, spec = both_paths(lambda: egnas(_tiny(), 3, 10), _stage_answers(depth))
    assert seq == spec and seq[0] == "ok"
    depths = [k for k in seq[1] if k.startswith("depth:")]
    assert len(depths) == 6  # 10, 11 (failed: one failure), 12 (best: failures reset), 13, 14, 15 (stop)
    assert seq[2].depth == 12


def test_failed_first_candidate_still_grows_depth():
    def depth(d):
        return Outcome(0.0, 0.0, "failed") if d == 10 else Outcome(80.0 + d, 80.0)

    seq, spec = both_paths(lambda: egnas(_tiny(), 3, 10), _stage_answers(depth))
    assert seq == spec and seq[0] == "ok"
    assert seq[2].depth > 10


def _stop():
    return dataclasses.replace(_tiny(), over_budget="stop")


def test_over_budget_first_candidate_with_stop_still_skips_depth_growth():
    def depth(d):
        return Outcome(0.0, 0.0, "skipped", "over budget") if d == 10 else Outcome(80.0, 80.0)

    seq, spec = both_paths(lambda: egnas(_stop(), 3, 10), _stage_answers(depth))
    assert seq == spec and [k for k in seq[1] if k.startswith("depth:")] == [seq[1][0]]


def test_over_budget_first_candidate_with_narrow_tries_every_width_of_that_depth():
    def depth(d):
        return Outcome(0.0, 0.0, "skipped", "over budget") if d == 10 else Outcome(80.0, 80.0)

    seq, spec = both_paths(lambda: egnas(_tiny(), 3, 10), _stage_answers(depth))
    assert seq == spec and seq[:2] == ("error", "SearchError")  # nothing of depth 10 fits, deeper is no better
    assert seq[2].startswith("no candidate fitted the budget, down to the minimum width")


def test_failed_width_candidates_count_against_patience_even_before_any_best():
    def answer(c):
        if c.stage == "depth":
            return Outcome(0.0, 0.0, "skipped", "over budget")
        return Outcome(0.0, 0.0, "failed") if c.stage == "width" else Outcome(60.0, 50.0)

    seq, spec = both_paths(lambda: egnas(_stop(), 3, 10), answer)
    assert (
        seq
        == spec
        == (
            "error",
            "SearchError",
            "no candidate fitted the budget and trained, down to the minimum width; "
            "raise the budget or lower min_width",
        )
    )


def test_trg_failed_candidate_stops_like_a_drop():
    cfg = TrgConfig(min_depth=3, max_depth=6, min_width=4, max_width=16, width_step=4, epochs=1)

    def depth(d):
        return {3: Outcome(80.0, 70.0), 4: Outcome(0.0, 0.0, "failed")}.get(d, Outcome(95.0, 90.0))

    seq, spec = both_paths(lambda: trg(cfg), _stage_answers(depth, width=lambda c: Outcome(0.0, 0.0, "failed")))
    assert seq == spec and seq[0] == "ok"
    assert [k.split(":")[1] for k in seq[1][:3]] == ["d3-w16-sss-333", "d4-w16-ssss-3333", "d3-w12-sss-333"]
    assert seq[2].width == 16


# -- 3. widths that cannot exist -------------------------------------------------------------------


@pytest.mark.parametrize("widths", [(1, 2, 4), (16, 66, 4), (8, 24, 3)])
def test_profile_refuses_a_width_step_that_does_not_end_at_min_width(widths):
    lo, hi, step = widths
    text = f"[search]\nmin_width = {lo}\nmax_width = {hi}\nwidth_step = {step}\n"
    with pytest.raises(ProfileError) as e:
        parse_profile(text, "bad", "bad.toml")
    assert str(e.value) == (
        f"bad.toml: search.width_step = {step} is not allowed; it must divide search.max_width - "
        f"search.min_width ({hi - lo}), so the width stage ends at search.min_width"
    )
    assert e.value.exit_code == 2


def test_cli_refuses_an_impossible_width_in_one_line_with_exit_2(tmp_path):
    from click.testing import CliRunner

    from edgenas.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text("[search]\nmin_width = 1\nmax_width = 2\nwidth_step = 4\n")
    r = CliRunner().invoke(main, ["discover", "--profile", str(bad), "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and not (tmp_path / "run").exists()
    assert r.output.strip().splitlines() == [
        f"edgenas: error: {bad}: search.width_step = 4 is not allowed; it must "
        "divide search.max_width - search.min_width (1), so the width stage ends "
        "at search.min_width"
    ]


def test_profile_accepts_a_width_step_that_ends_at_min_width():
    assert (
        parse_profile("[search]\nmin_width = 8\nmax_width = 20\nwidth_step = 4\n", "ok", "ok.toml").search.width_step
        == 4
    )


def test_matched_narrowing_with_the_floor_never_goes_below_min_width():
    """``micro_width_floor = true`` (edgenas before issue 22); the default follows the published code
    below min_width (tests/test_budget_search.py)."""
    cfg = EgnasConfig(
        min_depth=4,
        max_depth=4,
        min_width=8,
        max_width=12,
        width_step=4,
        micro_param_slack=0.0,
        micro_kernels=(5, 7),
        micro_width_floor=True,
    )

    def answer(c):  # every change pays, so the search would narrow as far as it may
        return Outcome(50.0 + sum(c.arch.ops) + sum(c.arch.kernels) / 10 + c.arch.width / 100, 50.0)

    seq, spec = both_paths(lambda: egnas(cfg, 3, 10), answer)
    assert seq == spec and seq[0] == "ok"
    assert seq[2].width >= 8
    result = drive(egnas(cfg, 3, 10), answer)
    macro = next(c for c, _ in result.history if c.stage == "ops").arch
    budget = count_params(macro, 3, 10)
    micro = [c for c, _ in result.history if c.stage in ("ops", "kernels")]
    assert all(c.arch.width >= 8 and count_params(c.arch, 3, 10) <= budget for c in micro)
    assert len(micro) < 1 + 4 + 4 * 2  # some changes could not be matched at width >= 8: not tried


# -- 4. speculation never fails where the sequential search finishes ------------------------------


def test_speculation_skips_a_hypothetical_impossible_width():
    cfg = EgnasConfig(min_depth=3, max_depth=3, min_width=1, max_width=6, width_step=4, width_patience=0)
    answer = _stage_answers(lambda d: Outcome(80.0, 70.0), width=lambda c: Outcome(70.0, 60.0))
    seq, spec = both_paths(lambda: egnas(cfg, 1, 10), answer)
    assert seq[0] == "ok" and seq == spec
    # accepting width 2 would step to width -2: a branch that is not speculated, nothing raised
    strategy = egnas(cfg, 1, 10)
    next(strategy)
    pending = strategy.send(Outcome(80.0, 70.0))
    assert pending.arch.width == 2
    assert all(c.arch.width >= 1 for c in likely_next(None, answers=[], guess=80.0, k=7, at=strategy))


def test_both_paths_fail_alike_where_the_search_itself_fails():
    cfg = EgnasConfig(min_depth=3, max_depth=3, min_width=1, max_width=6, width_step=4, width_patience=0)
    seq, spec = both_paths(
        lambda: egnas(cfg, 1, 10), _stage_answers(lambda d: Outcome(80.0, 70.0), width=lambda c: Outcome(81.0, 60.0))
    )
    assert seq == spec and seq[:2] == ("error", "ValueError")


# -- 5. speculation's scheduling is incremental ---------------------------------------------------


def _long_search(depth: int):
    cfg = EgnasConfig(max_depth=depth)

    def answer(c):
        base = 20.0 + 0.2 * c.arch.depth
        if c.stage == "width":
            return Outcome(base if c.arch.width >= 40 else base - 1.0, 50.0)
        extra = sum(c.arch.ops) + sum(c.arch.kernels)
        return Outcome(base if c.stage == "depth" else base + 0.05 * (extra % 3 - 1), 50.0)

    return (lambda: egnas(cfg, 3, 10)), answer


def _decisions_per_request(monkeypatch, depth: int) -> float:
    sends = []
    real_send = StrategyRun.send
    monkeypatch.setattr(StrategyRun, "send", lambda self, value: sends.append(1) or real_send(self, value))
    factory, answer = _long_search(depth)
    result = drive_speculative(
        factory, evaluator=AnswerEvaluator(answer), pool=AnswerPool(answer), slots=8, seed_of=lambda key: 0
    )
    monkeypatch.undo()
    assert [c for c, _ in result.history] == [c for c, _ in drive(factory(), answer).history]
    return len(sends) / result.candidates


def test_scheduling_costs_the_same_per_request_for_short_and_long_searches(monkeypatch):
    short, long = _decisions_per_request(monkeypatch, 20), _decisions_per_request(monkeypatch, 60)
    assert long < 1.3 * short  # re-driving the history for every hypothetical would triple it
    assert long < 11 * 8 * 2  # a bounded number of one-decision forks per request


@settings(max_examples=25, deadline=None, derandomize=True)
@given(hs.integers(0, 10**6), hs.lists(hs.floats(0, 100, allow_nan=False), min_size=0, max_size=30))
def test_fork_looks_ahead_exactly_as_re_driving(seed, accs):
    cfg = EgnasConfig(min_depth=2, max_depth=5, min_width=4, max_width=12, width_step=4, micro_kernels=(5, 7))
    factory = lambda: egnas(cfg, 1, 10)  # noqa: E731
    strategy, answers, rng = factory(), [], random.Random(seed)
    next(strategy)
    for acc in accs:
        guess = answers[-1].acc if answers else 50.0
        forked = likely_next(factory, answers=answers, guess=guess, k=5, at=strategy)
        assert forked == likely_next(factory, answers=answers, guess=guess, k=5)
        out = Outcome(acc, rng.choice([50.0, 100.0]), rng.choice(["trained"] * 8 + ["failed", "skipped"]))
        answers.append(out)
        try:
            strategy.send(out)
        except StopIteration:
            break


# -- the property: both paths, random oracles, random legal settings -------------------------------

LEVELS = (-5.0, -0.5, -0.25, -0.15, -0.1, -0.05, 0.0, 0.0, 0.05, 0.1, 0.15, 0.25, 0.5, 5.0)


@hs.composite
def searches(draw):
    """A profile's [search] table (egnas or trg, may be illegal for widths) and an oracle seed."""
    strategy = draw(hs.sampled_from(["egnas", "trg"]))
    lo, step = draw(hs.integers(1, 8)), draw(hs.integers(1, 4))
    table = {
        "min_depth": draw(hs.integers(1, 8)),
        "min_width": lo,
        "width_step": step,
        "max_width": lo + step * draw(hs.integers(0, 8)) + draw(hs.sampled_from([0, 0, 0, 1, 2])),
        "epochs": draw(hs.integers(1, 3)),
        "target_acc": draw(hs.sampled_from([90.0, 100.0, 100.0])),
        "target_tolerance": draw(hs.sampled_from([0.0, 0.1])),
        "depth_gain": draw(hs.sampled_from([0.0, 0.1, 0.25])),
        "depth_keep": draw(hs.sampled_from([0.0, 0.05, 0.15])),
        "micro_kernels": draw(hs.lists(hs.sampled_from([3, 5, 7]), max_size=2, unique=True)),
    }
    table["max_depth"] = table["min_depth"] + draw(hs.integers(0, 8))
    if strategy == "egnas":
        table.update(
            depth_patience=draw(hs.integers(0, 2)),
            width_patience=draw(hs.integers(0, 2)),
            micro_param_slack=draw(hs.sampled_from([0.0, 0.0001, 0.01, 0.01])),
        )
    else:
        table.update(width_drop=draw(hs.sampled_from([0.0, 0.5])), micro_gain=draw(hs.sampled_from([0.0, 0.1])))
    return strategy, table, draw(hs.integers(0, 10**6))


def random_oracle(seed: int):
    """Answers depend on the candidate only: plateaus, exact ties and answers exactly at thresholds."""

    def answer(c):
        rng = random.Random(f"{seed}:{c.key()}")
        roll = rng.random()
        if roll < 0.08:
            return Outcome(0.0, 0.0, "failed")
        if roll < 0.12 and c.stage in ("depth", "width"):
            return Outcome(0.0, 0.0, "skipped", "over budget")
        acc = 80.0 + rng.choice(LEVELS) * rng.choice([1, 1, 2, 3])
        return Outcome(acc, rng.choice([90.0, 99.0, 100.0]))

    return answer


@settings(max_examples=150, deadline=None, derandomize=True)
@given(searches(), hs.integers(2, 8))
def test_speculation_consumes_exactly_the_sequential_requests(search, slots):
    strategy, table, seed = search
    try:
        cfg = profile_from_dict({"strategy": strategy, "search": table}, "p", "p.toml").search
        legal = True
    except ProfileError:
        cfg, legal = CONFIGS[strategy](**{**table, "micro_kernels": tuple(table["micro_kernels"])}), False
    answer = random_oracle(seed)
    factory = lambda: make_strategy(strategy, config=cfg, in_channels=1, num_classes=10)  # noqa: E731
    sequential, speculative = both_paths(factory, answer, slots)
    assert speculative == sequential
    if legal:  # a legal profile never leads to an impossible candidate
        assert sequential[0] == "ok" or sequential[1] == "SearchError", sequential
        if sequential[0] == "ok":  # macro stages on the width grid; micro ones narrow as far as width 1
            history = drive(factory(), answer).history
            assert all(c.arch.width >= cfg.min_width for c, _ in history if c.stage in ("depth", "width"))
