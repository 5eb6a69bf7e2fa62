"""Every search strategy by name: ``make_strategy`` builds the one a profile names."""

from __future__ import annotations

from edgenas.config.strategies import STRATEGIES
from edgenas.search.random_search import random_search
from edgenas.search.strategies import StrategyRun, egnas, trg

BUILDERS = {
    "egnas": lambda cfg, in_channels, num_classes, seed: egnas(cfg, in_channels, num_classes),
    "trg": lambda cfg, in_channels, num_classes, seed: trg(cfg),
    "random": lambda cfg, in_channels, num_classes, seed: random_search(cfg, seed=seed),
}
if tuple(BUILDERS) != STRATEGIES:  # profiles validate strategy names against config.strategies.STRATEGIES
    raise ImportError(f"search.registry builds {tuple(BUILDERS)} but profiles allow {STRATEGIES}")


def make_strategy(name: str, *, config, in_channels: int, num_classes: int, seed: int = 0) -> StrategyRun:
    """The strategy ``name`` with its ``[search]`` config; ``seed`` draws the random strategy's networks."""
    if name not in BUILDERS:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    return BUILDERS[name](config, in_channels, num_classes, seed)
