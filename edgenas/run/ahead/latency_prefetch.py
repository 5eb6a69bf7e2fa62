"""Latency ahead of need: a remote device measures the candidates the strategy will likely ask for
next while this machine trains the current one, so the search does not wait on the network.

Decisions are unchanged: each architecture is measured once (``latency.jsonl``), whichever thread
asked first, and the strategy sees the answers in its own order.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable

from edgenas.search.space import Arch
from edgenas.search.speculation import last_accuracy, likely_next
from edgenas.search.strategies import Candidate, Outcome, SearchResult, Strategy, drive

AHEAD = 2  # candidates measured ahead of the strategy's request


class LatencyPrefetch:
    """Latencies measured on one background thread for the architectures given to ``ahead``: the
    source ``prepare``s each network here (torch stays on this thread) and ``measure``s it there."""

    def __init__(self, prepare: Callable[[Arch], object], measure: Callable[[object], float]):
        self.prepare, self.measure = prepare, measure
        self.pool = cf.ThreadPoolExecutor(1, thread_name_prefix="edgenas-latency")
        self.futures: dict[str, cf.Future] = {}

    def ahead(self, archs: list[Arch]) -> None:
        for arch in archs:
            if str(arch) not in self.futures:
                self.futures[str(arch)] = self.pool.submit(self.measure, self.prepare(arch))

    def take(self, arch: Arch) -> float | None:
        """The latency measured (or being measured) ahead for ``arch``; None if it was not asked for."""
        future = self.futures.pop(str(arch), None)
        return None if future is None else future.result()

    def close(self, *, wait: bool) -> dict[str, float]:
        """Stop; ``wait``: let queued measurements finish. Returns those finished and not taken."""
        self.pool.shutdown(wait=wait, cancel_futures=not wait)
        done = {key: f for key, f in self.futures.items() if f.done() and not f.cancelled() and f.exception() is None}
        self.futures.clear()
        return {key: f.result() for key, f in done.items()}


def drive_prefetching(factory: Callable[[], Strategy], evaluator, *, ahead: int = AHEAD) -> SearchResult:
    """``strategies.drive`` that first hands ``evaluator.prefetch`` the candidates likely to follow
    the pending one (``speculation.likely_next``), so they are measured while it trains."""
    strategy = factory()
    answers: list[Outcome] = []

    def answer(cand: Candidate) -> Outcome:
        evaluator.prefetch(likely_next(factory, answers=answers, guess=last_accuracy(answers), k=ahead, at=strategy))
        answers.append(evaluator(cand))
        return answers[-1]

    return drive(strategy, answer)
