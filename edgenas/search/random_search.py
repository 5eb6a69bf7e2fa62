"""The ``random`` strategy: uniform samples of the space at a fixed cost, the best on validation wins.

A baseline for the macro–micro searches, driven like them (journal, resume, speculation, Pareto).
Draw ``i`` is seeded from (seed, i) alone, so a resumed or forked search draws the same networks.
A network over a budget (``skipped``) costs nothing and another is drawn; one drawn before is not
drawn again.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass

from edgenas.config.strategies import RandomConfig
from edgenas.errors import SearchError
from edgenas.search.space import Arch, random_arch
from edgenas.search.strategies import Candidate, SearchResult, Strategy, StrategyRun

STAGE = "random"


@dataclass
class _RandomState:
    """All the search knows between two requests (immutable fields only: ``fork`` copies it shallowly)."""

    pending: Candidate | None
    draws: int = 0  # networks drawn so far (over-budget and repeated ones included)
    spent: int = 0  # candidates trained or failed: the cost
    skipped: int = 0  # over a budget, never trained
    seen: frozenset = frozenset()  # the networks drawn (as strings)
    best: Arch | None = None
    best_acc: float | None = None


def random_search(cfg: RandomConfig, *, seed: int) -> StrategyRun:
    st = _RandomState(None)
    st.pending = _draw(cfg, seed, st)
    return StrategyRun(functools.partial(_body, cfg, seed), st)


def _draw(cfg: RandomConfig, seed: int, st: _RandomState) -> Candidate | None:
    """The next network not drawn before; None after ``max_draws`` draws."""
    while st.draws < cfg.max_draws:
        arch = random_arch(cfg, random.Random(f"{seed}:{st.draws}"))
        st.draws += 1
        if str(arch) not in st.seen:
            st.seen = st.seen | {str(arch)}
            return Candidate(STAGE, arch, cfg.epochs)
    return None


def _body(cfg: RandomConfig, seed: int, st: _RandomState) -> Strategy:
    while st.pending is not None:
        out = yield st.pending
        if out.status == "skipped":
            st.skipped += 1
        else:
            st.spent += 1
        if out.usable and (st.best_acc is None or out.acc > st.best_acc):  # ties: the first drawn
            st.best, st.best_acc = st.pending.arch, out.acc
        st.pending = _draw(cfg, seed, st) if st.spent < cfg.budget_candidates else None
    if st.best is None or st.best_acc is None:  # set together: both or neither
        why = f"{st.skipped} of {st.draws} drawn networks were over the budget" if st.skipped else "none trained"
        raise SearchError(
            f"random search: no candidate fitted the budget and trained ({why}); raise the budget "
            "or narrow the space (max_depth, max_width)"
        )
    return SearchResult(st.best, None, st.best_acc)
