"""The ``egnas`` and ``trg`` strategies as pure decision logic (the published EGNAS and TRG rules).

A strategy is a generator: it yields a ``Candidate`` and is sent back its ``Outcome``, and returns
a ``SearchResult``. It never trains anything itself, so the same code is driven by the real
trainer, by the oracle of a published log (``tools/replay_searchlog.py``), or replayed from a
journal on ``--resume``. Outcomes of candidates that were not trained (over a budget) count as
not accepted.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable, Generator, Optional

from edgenas.config.strategies import STRATEGIES, EgnasConfig, TrgConfig
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
    epochs: Optional[int]  # the discovered training epochs (egnas); None for trg
    acc: float  # the ranking accuracy that selected it (last accepted)
    candidates: int = 0
    history: list = field(default_factory=list)


Strategy = Generator[Candidate, Outcome, SearchResult]


def make_strategy(name: str, config, in_channels: int, num_classes: int) -> Strategy:
    if name == "egnas":
        return egnas(config, in_channels, num_classes)
    if name == "trg":
        return trg(config)
    raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


def _better(out: Outcome, threshold: Optional[float], strict: bool = False) -> bool:
    """Trained and at least (or, strict, above) ``threshold``; anything beats no best at all."""
    if not out.usable:
        return False
    if threshold is None:
        return True
    return out.acc > threshold if strict else out.acc >= threshold


@functools.lru_cache(maxsize=65536)
def matched_width(arch: Arch, start_width: int, budget: int, slack: float, in_channels: int, num_classes: int) -> int:
    """The widest width <= ``start_width`` whose parameters (millions) are within budget + slack.

    Lowered one channel at a time, as the reference does. Cached: strategies are replayed often
    (resume, speculation), and this is the only costly step of a decision.
    """
    w = start_width
    while count_params(arch.with_width(w), in_channels, num_classes) / 1e6 > budget / 1e6 + slack and w > 1:
        w -= 1
    return w


def egnas(cfg: EgnasConfig, in_channels: int, num_classes: int) -> Strategy:
    depth, width, epochs = cfg.min_depth, cfg.max_width, cfg.epochs
    # Depth stage: grow while it pays; deeper candidates train longer.
    arch = Arch.plain(depth, width)
    out = yield Candidate("depth", arch, epochs)
    best, best_acc, best_train, disc_epochs = None, None, 0.0, epochs
    if out.usable:
        best, best_acc, best_train = arch, out.acc, out.train_acc
        failures = 0
        while best_acc < cfg.target_acc - cfg.target_tolerance and depth != cfg.max_depth:
            if best_train >= 100:
                break
            epochs += cfg.add_epochs_depth
            depth += 1
            arch = Arch.plain(depth, width)
            out = yield Candidate("depth", arch, epochs)
            if not out.usable:  # over a budget: deeper ones are too
                break
            if out.acc >= best_acc + cfg.depth_gain:
                best, best_acc, best_train, disc_epochs, failures = arch, out.acc, out.train_acc, epochs, 0
            elif out.acc >= best_acc - cfg.depth_keep:
                pass
            elif failures != cfg.depth_patience:
                failures += 1
            else:
                break
    base = best or Arch.plain(cfg.min_depth, width)

    # Width stage: narrower candidates, more epochs each, accepted while no worse.
    failures = 0
    while width > cfg.min_width:
        width -= cfg.width_step
        epochs += cfg.add_epochs_width
        arch = base.with_width(width)
        out = yield Candidate("width", arch, epochs)
        if _better(out, best_acc):
            best, best_acc, disc_epochs, failures = arch, out.acc, epochs, 0
        elif not out.usable and best is None:
            continue  # still over budget: keep narrowing
        elif failures != cfg.width_patience:
            failures += 1
        else:
            break
    if best is None:
        raise SearchError("no candidate fitted the budget, down to the minimum width; raise the budget or lower min_width")

    # Operation stage: proxy training, each layer tried as a full conv at matched parameters.
    slack = cfg.micro_param_slack

    def matched(a: Arch, start_width: int, budget: int) -> Arch:
        return a.with_width(matched_width(a, start_width, budget, slack, in_channels, num_classes))

    micro_epochs = cfg.micro_epochs
    macro = best
    out = yield Candidate("ops", macro, micro_epochs)
    best_acc = out.acc if out.usable else None
    budget = count_params(macro, in_channels, num_classes)
    current, ops_width = macro, macro.width
    for i in range(macro.depth):
        arch = matched(current.with_op(i, CONV), macro.width, budget)
        out = yield Candidate("ops", arch, micro_epochs)
        if _better(out, best_acc, strict=True):
            current, best_acc, ops_width = arch, out.acc, arch.width
    current = current.with_width(ops_width)

    # Kernel stage: larger kernels at matched parameters.
    budget = count_params(current, in_channels, num_classes)
    for i in range(current.depth):
        for k in cfg.micro_kernels:
            arch = matched(current.with_kernel(i, k), ops_width, budget)
            out = yield Candidate("kernels", arch, micro_epochs)
            if _better(out, best_acc, strict=True):
                current, best_acc = arch, out.acc
    return SearchResult(current, disc_epochs, best_acc if best_acc is not None else 0.0)


def trg(cfg: TrgConfig) -> Strategy:
    depth, width, epochs = cfg.min_depth, cfg.max_width, cfg.epochs
    arch = Arch.plain(depth, width)
    out = yield Candidate("depth", arch, epochs)
    best, best_acc, best_train = None, None, 0.0
    if out.usable:
        best, best_acc, best_train = arch, out.acc, out.train_acc
        while best_acc < cfg.target_acc - cfg.target_tolerance and depth != cfg.max_depth:
            if best_train >= 100:
                break
            depth += 1
            arch = Arch.plain(depth, width)
            out = yield Candidate("depth", arch, epochs)
            if not out.usable:
                break
            if out.acc >= best_acc + cfg.depth_gain:
                best, best_acc, best_train = arch, out.acc, out.train_acc
            elif out.acc < best_acc - cfg.depth_keep:
                break
    base = best or Arch.plain(cfg.min_depth, width)

    width_ref = best_acc
    while width > cfg.min_width:
        width -= cfg.width_step
        arch = base.with_width(width)
        out = yield Candidate("width", arch, epochs)
        if _better(out, None if width_ref is None else width_ref - cfg.width_drop):
            best, best_acc = arch, out.acc
            if width_ref is None:
                width_ref = out.acc
        elif not out.usable and best is None:
            continue
        else:
            break
    if best is None:
        raise SearchError("no candidate fitted the budget, down to the minimum width; raise the budget or lower min_width")

    current = best
    layers = range(2 * current.depth // 3)
    for i in layers:
        arch = current.with_op(i, CONV)
        out = yield Candidate("ops", arch, epochs)
        if _better(out, best_acc + cfg.micro_gain, strict=True):
            current, best_acc = arch, out.acc
    for i in layers:
        for k in cfg.micro_kernels:
            arch = current.with_kernel(i, k)
            out = yield Candidate("kernels", arch, epochs)
            if _better(out, best_acc + cfg.micro_gain, strict=True):
                current, best_acc = arch, out.acc
    return SearchResult(current, None, best_acc)


Evaluator = Callable[[Candidate], Outcome]


def drive(strategy: Strategy, evaluate: Evaluator) -> SearchResult:
    """Run a strategy to its end, asking ``evaluate`` for every candidate in order."""
    count = 0
    history = []
    try:
        cand = next(strategy)
        while True:
            out = evaluate(cand)
            count += 1
            history.append((cand, out))
            cand = strategy.send(out)
    except StopIteration as stop:
        result: SearchResult = stop.value
        result.candidates = count
        result.history = history
        return result
