"""The ``egnas`` and ``trg`` strategies as pure decision logic (the published EGNAS and TRG rules).

A strategy is a generator: it yields a ``Candidate`` and is sent back its ``Outcome``, and returns
a ``SearchResult``. It never trains anything itself, so the same code is driven by the real
trainer, by the oracle of a published log (``tools/replay_searchlog.py``), or re-driven from a
journal on ``--resume``. A candidate over a budget (never trained) is not accepted; one whose
training failed (non-finite loss) is a poor result: it counts against the stage's patience.
"""

from __future__ import annotations

import collections.abc
import copy
import functools
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TypeVar

from edgenas.config.strategies import EgnasConfig, TrgConfig
from edgenas.errors import SearchError
from edgenas.search.space import CONV, Arch, count_params


@dataclass(frozen=True)
class Candidate:
    """A request: train ``arch`` for ``epochs`` in ``stage`` (depth, width, ops, kernels)."""

    stage: str
    arch: Arch
    epochs: int

    def key(self) -> str:
        """Identity of the request, used by the journal and the caches."""
        return f"{self.stage}:{self.arch}:e{self.epochs}"


@dataclass(frozen=True)
class Outcome:
    """What training a candidate gave. ``acc`` is the ranking (validation) accuracy in percent.

    ``status`` is ``trained``, ``failed`` (non-finite loss: accuracy 0) or ``skipped`` (over a
    budget, never trained). Only trained candidates can be accepted.
    """

    acc: float
    train_acc: float = 0.0
    status: str = "trained"
    reason: str = ""

    @property
    def usable(self) -> bool:
        return self.status == "trained"


@dataclass
class SearchResult:
    arch: Arch
    epochs: int | None  # the discovered training epochs (egnas); None for trg
    acc: float  # the ranking accuracy that selected it (last accepted)
    candidates: int = 0
    history: list = field(default_factory=list)


Strategy = Generator[Candidate, Outcome, SearchResult]
Stage = Generator[Candidate, Outcome, None]  # one stage of a strategy: it leaves its result in the state
T = TypeVar("T")


def _set(value: T | None, name: str) -> T:
    """A state field that an earlier stage has set (``base``, ``current`` and ``best_acc`` from the width stage
    on); None here is a bug in this module, not something a user can cause."""
    if value is None:
        raise RuntimeError(f"search state: {name} is not set at this stage (a bug in edgenas.search.strategies)")
    return value


def _better(out: Outcome, threshold: float | None, strict: bool = False) -> bool:
    """Trained and at least (or, strict, above) ``threshold``; anything beats no best at all."""
    if not out.usable:
        return False
    if threshold is None:
        return True
    return out.acc > threshold if strict else out.acc >= threshold


@functools.lru_cache(maxsize=65536)
def matched_width(
    arch: Arch, *, start_width: int, budget: int, slack: float, in_channels: int, num_classes: int, floor: int = 1
) -> int | None:
    """The widest width <= ``start_width`` whose parameters (millions) are within budget + slack.

    Lowered one channel at a time, as the reference does, but never below ``floor``: None when
    even that is over. Cached: strategies are forked and re-driven often
    (resume, speculation), and this is the only costly step of a decision.
    """

    def over(w: int) -> bool:
        return count_params(arch.with_width(w), in_channels, num_classes) / 1e6 > budget / 1e6 + slack

    w = start_width
    while over(w) and w > floor:
        w -= 1
    return None if over(w) else w


class StrategyRun(collections.abc.Generator[Candidate, Outcome, SearchResult]):
    """A strategy under way, as a generator whose whole state is a plain record (``state``).

    ``body(state)`` resumes from ``state`` wherever it stands, first yielding ``state.pending`` (the
    request that waits for its outcome); so ``fork()`` — a copied record and a fresh body — is an
    independent twin at the cost of one decision, not of re-driving the whole history.
    """

    def __init__(self, body: Callable, state: object):  # state: the strategy's own record, opaque here
        self._body, self.state = body, state
        self._gen = body(state)

    def send(self, value):
        return self._gen.send(value)

    def throw(self, typ, val=None, tb=None):
        return self._gen.throw(typ if val is None else val)

    def close(self) -> None:
        self._gen.close()

    def fork(self) -> StrategyRun:
        """A twin waiting for the same request (call it between a request and its outcome)."""
        twin = StrategyRun(self._body, copy.copy(self.state))
        next(twin._gen)
        return twin


@dataclass
class _State:
    """All a search knows between two requests; ``pending`` is the request that awaits its outcome."""

    pending: Candidate | None
    depth: int
    width: int
    epochs: int
    stage: str = "depth"
    failures: int = 0  # patience used in the current macro stage
    failed: int = 0  # candidates whose training failed (non-finite loss), for the error message
    best: Arch | None = None  # the last accepted macro candidate
    best_acc: float | None = None
    best_train: float = 0.0
    disc_epochs: int | None = None  # egnas: the discovered training epochs
    width_ref: float | None = None  # trg: the accuracy the width stage compares with
    base: Arch | None = None  # the width stage's net (the depth found); the macro result after it
    current: Arch | None = None  # micro stages: the net so far
    budget: int = 0  # micro stages: the parameters to match
    ops_width: int = 0  # egnas: the operation stage's width
    step: int = -1  # micro stages: index of the pending change (-1: the macro result retrained)


def _start(cfg) -> _State:
    first = Candidate("depth", Arch.plain(cfg.min_depth, cfg.max_width), cfg.epochs)
    return _State(first, cfg.min_depth, cfg.max_width, cfg.epochs)


def _fitting(cfg, st: _State) -> Candidate | None:
    """The skipped depth candidate again, ``width_step`` narrower (``over_budget = "narrow"``); None at ``min_width``."""
    if cfg.over_budget != "narrow" or st.width - cfg.width_step < cfg.min_width:
        return None
    st.width -= cfg.width_step
    return Candidate("depth", Arch.plain(st.depth, st.width), st.epochs)


def _leave_depth(cfg, st: _State) -> None:
    """The width stage starts from the depth stage's best (at the width it fitted at)."""
    st.base = st.best or Arch.plain(cfg.min_depth, st.width)
    st.width = st.base.width


def _deeper(cfg, st: _State, add_epochs: int) -> Candidate | None:
    """The next depth candidate; None once the target, the maximum depth or 100 % train accuracy is reached."""
    if st.best_acc is not None and st.best_acc >= cfg.target_acc - cfg.target_tolerance:
        return None
    if st.depth == cfg.max_depth or st.best_train >= 100:
        return None
    st.depth, st.epochs = st.depth + 1, st.epochs + add_epochs
    return Candidate("depth", Arch.plain(st.depth, st.width), st.epochs)


def _narrower(cfg, st: _State, add_epochs: int) -> Candidate | None:
    """The next width candidate (``width -= width_step`` while above ``min_width``); None below that."""
    if st.width <= cfg.min_width:
        return None
    st.width, st.epochs = st.width - cfg.width_step, st.epochs + add_epochs
    return Candidate("width", _set(st.base, "base").with_width(st.width), st.epochs)


def _enter_micro(st: _State, stage: str) -> None:
    """Leave the width stage: its best is the macro result, retrained first (egnas) or kept (trg)."""
    if st.best is None:
        why = "fitted the budget and trained" if st.failed else "fitted the budget"
        raise SearchError(f"no candidate {why}, down to the minimum width; raise the budget or lower min_width")
    st.base = st.current = st.best
    st.stage, st.step = stage, -1


def egnas(cfg: EgnasConfig, in_channels: int, num_classes: int) -> StrategyRun:
    return StrategyRun(functools.partial(_egnas_body, cfg, (in_channels, num_classes)), _start(cfg))


def _egnas_body(cfg: EgnasConfig, shape: tuple[int, int], st: _State) -> Strategy:
    stages = {"depth": _egnas_depth, "width": _egnas_width, "ops": _egnas_ops, "kernels": _egnas_kernels}
    while st.stage != "done":
        yield from stages[st.stage](cfg, st, shape)
    return SearchResult(_set(st.current, "current"), st.disc_epochs, st.best_acc if st.best_acc is not None else 0.0)


def _egnas_depth(cfg: EgnasConfig, st: _State, shape) -> Stage:
    """Grow while it pays; deeper candidates train longer. A failed training is a patience failure."""
    while st.pending is not None:
        out = yield st.pending
        st.failed += out.status == "failed"
        if out.status == "skipped":  # over a budget: narrower at this depth, or (stop) deeper ones are over too
            st.pending = _fitting(cfg, st)
            if st.pending is None:
                break
            continue
        if out.usable and (st.best_acc is None or out.acc >= st.best_acc + cfg.depth_gain):
            st.best, st.best_acc, st.best_train, st.failures = st.pending.arch, out.acc, out.train_acc, 0
        elif out.usable and st.best_acc is not None and out.acc >= st.best_acc - cfg.depth_keep:
            pass
        elif st.failures != cfg.depth_patience:
            st.failures += 1
        else:
            break
        st.pending = _deeper(cfg, st, cfg.add_epochs_depth)
    # The reference's epoch counter as the depth stage leaves it: one more per deeper candidate
    # tried, accepted or not. It is the discovered epochs unless a width candidate is accepted.
    st.disc_epochs = st.epochs
    _leave_depth(cfg, st)
    st.stage, st.failures = "width", 0
    st.pending = _narrower(cfg, st, cfg.add_epochs_width)


def _egnas_width(cfg: EgnasConfig, st: _State, shape) -> Stage:
    """Narrower candidates, more epochs each, accepted while no worse than the last accepted."""
    while st.pending is not None:
        out = yield st.pending
        st.failed += out.status == "failed"
        if _better(out, st.best_acc):
            st.best, st.best_acc, st.disc_epochs, st.failures = st.pending.arch, out.acc, st.epochs, 0
        elif out.status == "skipped" and st.best is None:
            pass  # still over budget: keep narrowing
        elif st.failures != cfg.width_patience:
            st.failures += 1
        else:
            break
        st.pending = _narrower(cfg, st, cfg.add_epochs_width)
    _enter_micro(st, "ops")
    st.pending = Candidate("ops", _set(st.base, "base"), cfg.micro_epochs)


def _egnas_ops(cfg: EgnasConfig, st: _State, shape) -> Stage:
    """Proxy training; each layer tried as a full conv at matched parameters, kept if strictly better."""
    while st.pending is not None:
        out = yield st.pending
        if st.step < 0:  # the macro result retrained: the accuracy and parameters to beat
            base = _set(st.base, "base")
            st.best_acc = out.acc if out.usable else None
            st.budget, st.ops_width = count_params(base, *shape), base.width
        elif _better(out, st.best_acc, strict=True):
            st.current, st.best_acc, st.ops_width = st.pending.arch, out.acc, st.pending.arch.width
        st.pending = _next_op(cfg, st, shape)
    st.current = _set(st.current, "current").with_width(st.ops_width)
    st.budget = count_params(st.current, *shape)
    st.stage, st.step = "kernels", -1
    st.pending = _next_kernel(cfg, st, shape)


def _egnas_kernels(cfg: EgnasConfig, st: _State, shape) -> Stage:
    """Larger kernels at matched parameters, kept if strictly better."""
    while st.pending is not None:
        out = yield st.pending
        if _better(out, st.best_acc, strict=True):
            st.current, st.best_acc = st.pending.arch, out.acc
        st.pending = _next_kernel(cfg, st, shape)
    st.stage = "done"


def _matched(cfg: EgnasConfig, *, arch: Arch, start_width: int, budget: int, shape) -> Arch | None:
    """``arch`` narrowed to the macro budget: as the published code, down to width 1 (it once reached
    0, its bug); with ``micro_width_floor`` not below ``min_width``. None when even that is over."""
    floor = cfg.min_width if cfg.micro_width_floor else 1
    w = matched_width(
        arch,
        start_width=start_width,
        budget=budget,
        slack=cfg.micro_param_slack,
        in_channels=shape[0],
        num_classes=shape[1],
        floor=floor,
    )
    return None if w is None else arch.with_width(w)


def _next_op(cfg: EgnasConfig, st: _State, shape) -> Candidate | None:
    """The next layer's full conv at matched parameters; a change that cannot be matched is not tried."""
    current, base = _set(st.current, "current"), _set(st.base, "base")
    while st.step + 1 < current.depth:
        st.step += 1
        arch = _matched(cfg, arch=current.with_op(st.step, CONV), start_width=base.width, budget=st.budget, shape=shape)
        if arch is not None:
            return Candidate("ops", arch, cfg.micro_epochs)
    return None


def _next_kernel(cfg: EgnasConfig, st: _State, shape) -> Candidate | None:
    """The next (layer, kernel) at matched parameters; a change that cannot be matched is not tried."""
    kernels, current = cfg.micro_kernels, _set(st.current, "current")
    while st.step + 1 < current.depth * len(kernels):
        st.step += 1
        layer, k = divmod(st.step, len(kernels))
        arch = _matched(
            cfg, arch=current.with_kernel(layer, kernels[k]), start_width=st.ops_width, budget=st.budget, shape=shape
        )
        if arch is not None:
            return Candidate("kernels", arch, cfg.micro_epochs)
    return None


def trg(cfg: TrgConfig) -> StrategyRun:
    return StrategyRun(functools.partial(_trg_body, cfg), _start(cfg))


def _trg_body(cfg: TrgConfig, st: _State) -> Strategy:
    stages = {"depth": _trg_depth, "width": _trg_width, "micro": _trg_micro}
    while st.stage != "done":
        yield from stages[st.stage](cfg, st)
    return SearchResult(_set(st.current, "current"), None, _set(st.best_acc, "best_acc"))


def _trg_depth(cfg: TrgConfig, st: _State) -> Stage:
    """Grow while it pays; the first drop (a failed training is one) stops it (and, with
    ``over_budget = "stop"``, the first candidate over a budget)."""
    while st.pending is not None:
        out = yield st.pending
        st.failed += out.status == "failed"
        if out.status == "skipped":
            st.pending = _fitting(cfg, st)
            if st.pending is None:
                break
            continue
        if out.usable and (st.best_acc is None or out.acc >= st.best_acc + cfg.depth_gain):
            st.best, st.best_acc, st.best_train = st.pending.arch, out.acc, out.train_acc
        elif not (out.usable and st.best_acc is not None and out.acc >= st.best_acc - cfg.depth_keep):
            break
        st.pending = _deeper(cfg, st, 0)
    st.width_ref = st.best_acc
    _leave_depth(cfg, st)
    st.stage = "width"
    st.pending = _narrower(cfg, st, 0)


def _trg_width(cfg: TrgConfig, st: _State) -> Stage:
    """Narrower while within ``width_drop`` of the depth stage's best; the first drop (or failure) stops it."""
    while st.pending is not None:
        out = yield st.pending
        st.failed += out.status == "failed"
        if _better(out, None if st.width_ref is None else st.width_ref - cfg.width_drop):
            st.best, st.best_acc = st.pending.arch, out.acc
            if st.width_ref is None:
                st.width_ref = out.acc
        elif out.status == "skipped" and st.best is None:
            pass  # still over budget: keep narrowing
        else:
            break
        st.pending = _narrower(cfg, st, 0)
    _enter_micro(st, "micro")
    st.pending = _trg_change(cfg, st)


def _trg_micro(cfg: TrgConfig, st: _State) -> Stage:
    """Ops, then kernels, of the first ``2 L // 3`` layers; a change is kept if it gains ``micro_gain``."""
    while st.pending is not None:
        out = yield st.pending
        if _better(out, _set(st.best_acc, "best_acc") + cfg.micro_gain, strict=True):
            st.current, st.best_acc = st.pending.arch, out.acc
        st.pending = _trg_change(cfg, st)
    st.stage = "done"


def _trg_change(cfg: TrgConfig, st: _State) -> Candidate | None:
    current = _set(st.current, "current")
    layers = 2 * current.depth // 3
    st.step += 1
    if st.step < layers:
        return Candidate("ops", current.with_op(st.step, CONV), cfg.epochs)
    layer, k = divmod(st.step - layers, max(1, len(cfg.micro_kernels)))
    if not cfg.micro_kernels or layer >= layers:
        return None
    return Candidate("kernels", current.with_kernel(layer, cfg.micro_kernels[k]), cfg.epochs)


Evaluator = Callable[[Candidate], Outcome]


def drive(strategy: Strategy, answer: Evaluator) -> SearchResult:
    """Run a strategy to its end, asking ``answer`` for every candidate in order."""
    history = []
    try:
        cand = next(strategy)
        while True:
            out = answer(cand)
            history.append((cand, out))
            cand = strategy.send(out)
    except StopIteration as stop:
        result: SearchResult = stop.value
        result.candidates = len(history)
        result.history = history
        return result
