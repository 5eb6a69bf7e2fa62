"""Speculative search: while the strategy waits for one candidate, train those it may ask for next.

Decisions stay exactly those of the sequential search: the strategy only ever sees real answers,
in request order. Hypothetical answers serve one purpose — guessing which candidates to start
early, by re-driving the (pure, deterministic) strategy through its real history plus a guess. A
candidate's result depends only on the seed and the candidate (``candidate_seed``), so training it
early changes nothing but the wall time. Finished speculative candidates are journaled, so a
resumed search reuses them; those the search ends up not needing are cancelled.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections import Counter
from collections.abc import Callable
from typing import Protocol

from edgenas.search.strategies import Candidate, Outcome, SearchResult, Strategy, drive

# Offsets (percent) around the last accuracy seen: the outcomes a guess is drawn from.
GUESS_OFFSETS = (-5.0, -1.0, -0.3, -0.1, -0.04, 0.0, 0.04, 0.1, 0.3, 1.0, 5.0)


def request_after(factory: Callable[[], Strategy], answers: list[Outcome]) -> Candidate | None:
    """The request a fresh strategy makes after ``answers``; None once it has finished."""
    strategy = factory()
    try:
        cand = next(strategy)
        for out in answers:
            cand = strategy.send(out)
        return cand
    except StopIteration:
        return None


def _branch(factory: Callable[[], Strategy], *, at, history: list | None, out: Outcome):
    """(strategy, request) after the hypothetical ``out``; None where the search ends there.

    ``at`` waits after ``history``: forked if it can be (one decision), else a fresh strategy is driven
    through the history. A hypothetical that leads to an error (an impossible width, nothing
    within budget) is not speculated: were it real, the search itself would raise it.
    """
    try:
        if hasattr(at, "fork"):
            strategy = at.fork()
            return strategy, strategy.send(out)
        if history is None:  # only a strategy that can fork comes without its history
            return None
        strategy = factory()
        cand = next(strategy)
        for answer in [*history, out]:
            cand = strategy.send(answer)
        return strategy, cand
    except StopIteration:
        return None
    except Exception:  # noqa: BLE001 - any error of a branch that is not (yet) the real one
        return None


def last_accuracy(answers: list[Outcome]) -> float:
    """The accuracy guesses are centred on: the last usable answer's (50 % before there is one)."""
    return next((out.acc for out in reversed(answers) if out.usable), 50.0)


def likely_next(
    factory: Callable[[], Strategy], *, answers: list[Outcome], guess: float, k: int, at: Strategy | None = None
) -> list[Candidate]:
    """Up to ``k`` candidates the strategy may request after the pending one, likeliest first.

    Breadth first over hypothetical outcomes of the pending request, then of the guessed ones:
    a candidate reached by more of the hypothetical outcomes comes first. ``at`` is the strategy
    waiting after ``answers``; one that can ``fork()`` makes each hypothetical cost one decision
    instead of re-driving the whole history.
    """
    forkable = hasattr(at, "fork")
    found: list[Candidate] = []
    frontier = [(at if forkable else None, None if forkable else list(answers))]
    while frontier and len(found) < k:
        next_frontier = []
        for strategy, history in frontier:
            reached: Counter = Counter()
            path: dict[Candidate, tuple[Strategy | None, list[Outcome] | None]] = {}
            for offset in GUESS_OFFSETS:
                out = Outcome(min(max(guess + offset, 0.0), 100.0), min(guess, 99.0))
                branch = _branch(factory, at=strategy, history=history, out=out)
                if branch is not None:
                    reached[branch[1]] += 1
                    path.setdefault(branch[1], (branch[0], None if history is None else history + [out]))
            for cand, _ in reached.most_common():
                if cand not in found:
                    found.append(cand)
                    next_frontier.append(path[cand])
        frontier = next_frontier
    return found[:k]


class Pool(Protocol):
    """Where candidates train at once: ``edgenas.run.ahead.worker_pools`` (processes, Ray) or a replay's oracle."""

    def submit(self, cand: Candidate, seed: int, tag: str) -> cf.Future: ...
    def cancel(self, cand: Candidate, future: cf.Future) -> None: ...
    def uncancel(self, cand: Candidate) -> None: ...
    def result(self, cand: Candidate, future: cf.Future) -> dict | None: ...
    def close(self) -> None: ...


class _Speculator:
    """The running candidates of a speculative search: start, cancel and collect them."""

    def __init__(self, evaluator, *, pool: Pool, slots: int, seed_of):
        self.evaluator, self.pool, self.slots, self.seed_of = evaluator, pool, slots, seed_of
        self.running: dict[str, tuple[Candidate, dict, cf.Future]] = {}

    def start(self, cand: Candidate, speculative: bool) -> bool:
        """Submit ``cand`` unless it is known or over budget; True if it is (now) running."""
        ev = self.evaluator
        if cand.key() in self.running:
            self.pool.uncancel(cand)
            return True
        if ev.known(cand) is not None:
            return False
        record, skipped = ev.screen(cand)
        if skipped is not None:
            return False
        record = {**record, "speculative": speculative}  # started before the strategy asked for it
        self.running[cand.key()] = (
            cand,
            record,
            self.pool.submit(cand, self.seed_of(cand.key()), ev.tag(cand, speculative)),
        )
        return True

    def collect(self, done, pending: Candidate) -> None:
        for fut in done:
            key = next(k for k, (_, _, f) in self.running.items() if f is fut)
            c, record, _ = self.running.pop(key)
            res = self.pool.result(c, fut)
            if res is not None:
                self.evaluator.finished(
                    c, record=record, res=res, speculative=c != pending
                )  # the tag: is it asked for yet?

    def keep_only(self, wanted: list[Candidate]) -> None:
        """Cancel what is no longer wanted; start the wanted ones while slots are free."""
        for c, _, fut in list(self.running.values()):
            if c not in wanted:
                self.pool.cancel(c, fut)
        for nxt in wanted[1:]:
            if len(self.running) < self.slots:
                self.start(nxt, speculative=True)

    def wait_for(self, cand: Candidate) -> Outcome:
        out = None
        while out is None:  # a candidate cancelled while its guess was stale is started again
            self.start(cand, speculative=False)
            while cand.key() in self.running:
                done, _ = cf.wait([f for _, _, f in self.running.values()], return_when=cf.FIRST_COMPLETED)
                self.collect(done, cand)
            out = self.evaluator.known(cand)
        return out

    def cancel_all(self) -> None:
        for c, _, fut in self.running.values():
            self.pool.cancel(c, fut)


def drive_speculative(factory: Callable[[], Strategy], *, evaluator, pool: Pool, slots: int, seed_of) -> SearchResult:
    """Like ``strategies.drive``, with up to ``slots`` candidates training at once in ``pool``.

    ``evaluator`` answers from the journal (``known``), screens budgets (``screen``), tags and
    journals results (``tag``, ``finished``), as ``edgenas.run.evaluator.CandidateEvaluator`` does.
    """
    strategy = factory()
    answers: list[Outcome] = []
    spec = _Speculator(evaluator, pool=pool, slots=slots, seed_of=seed_of)

    def answer(cand: Candidate) -> Outcome:
        evaluator.count += 1
        out = evaluator.known(cand)
        if out is not None:
            evaluator.log(f"{evaluator.tag(cand)}: {out.status}, acc {out.acc:.2f}% (journal or speculation)")
        elif spec.start(cand, speculative=False):
            spec.keep_only(
                [cand] + likely_next(factory, answers=answers, guess=last_accuracy(answers), k=slots - 1, at=strategy)
            )
            out = spec.wait_for(cand)
        else:
            out = evaluator.known(cand)  # over a budget: screen() journaled it as skipped
        answers.append(out)
        return out

    try:
        return drive(strategy, answer)
    finally:
        spec.cancel_all()
