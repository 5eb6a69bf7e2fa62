"""The search strategies' settings (``[search]`` of a profile): EGNAS and TRG, with their bounds.

Accuracies and tolerances in percent; ``micro_param_slack`` in million parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgenas.config.schema import check_fields, setting
from edgenas.errors import ProfileError

STRATEGIES = ("egnas", "trg", "random")
# What the depth stage does with a candidate over a budget (an edgenas extension; no budget, no
# difference): "narrow" tries the same depth ``width_step`` narrower until one fits and goes on
# deeper at that width; "stop" ends the depth stage there (edgenas before issue 22).
OVER_BUDGET = {"narrow": "deeper at the widest width that fits", "stop": "the depth stage ends"}
KERNELS = (3, 5, 7)  # kernel sizes a layer may take (odd: "same" padding keeps the resolution)
MAX_DEPTH = 1000  # layers; far beyond any edge network, and it bounds a typo
MAX_WIDTH = 4096  # channels of the first layer (the last has 4x)


@dataclass(frozen=True)
class EgnasConfig:
    """Architecture-aware dynamic training."""

    min_depth: int = setting(10, ge=1, le=MAX_DEPTH)
    max_depth: int = setting(100, ge=1, le=MAX_DEPTH)
    min_width: int = setting(16, ge=1, le=MAX_WIDTH)
    max_width: int = setting(64, ge=1, le=MAX_WIDTH)
    width_step: int = setting(2, ge=1, le=MAX_WIDTH)
    epochs: int = setting(10, ge=1, le=100_000)  # epochs of the first depth candidate
    add_epochs_depth: int = setting(1, ge=0, le=10_000)  # more epochs for each deeper candidate
    add_epochs_width: int = setting(2, ge=0, le=10_000)  # more epochs for each narrower candidate
    depth_gain: float = setting(0.10, ge=0, le=100)  # accuracy gain that makes a deeper net the best
    depth_keep: float = setting(0.05, ge=0, le=100)  # drop tolerated without counting a failure
    depth_patience: int = setting(2, ge=0, le=MAX_DEPTH)
    width_patience: int = setting(2, ge=0, le=MAX_WIDTH)
    micro_epochs: int = setting(2, ge=1, le=100_000)  # proxy training of the op and kernel stages
    micro_param_slack: float = setting(0.01, ge=0, le=1e6)  # million parameters allowed over the macro budget
    micro_kernels: tuple[int, ...] = setting((5,), items=KERNELS)
    target_acc: float = setting(100.0, ge=0, le=100)
    target_tolerance: float = setting(0.10, ge=0, le=100)
    over_budget: str = setting("narrow", choices=tuple(OVER_BUDGET))
    # false (the published code): micro changes are matched by narrowing as far as width 1; true:
    # never below min_width, a change that would need it is not tried (edgenas before issue 22).
    micro_width_floor: bool = False

    def __post_init__(self) -> None:
        check_fields(self, "search")


@dataclass(frozen=True)
class TrgConfig:
    """True-rank guided: every candidate trained for the same ``epochs``."""

    min_depth: int = setting(10, ge=1, le=MAX_DEPTH)
    max_depth: int = setting(20, ge=1, le=MAX_DEPTH)
    min_width: int = setting(16, ge=1, le=MAX_WIDTH)
    max_width: int = setting(72, ge=1, le=MAX_WIDTH)
    width_step: int = setting(4, ge=1, le=MAX_WIDTH)
    epochs: int = setting(600, ge=1, le=100_000)
    target_acc: float = setting(99.0, ge=0, le=100)
    target_tolerance: float = setting(0.5, ge=0, le=100)
    depth_gain: float = setting(0.25, ge=0, le=100)
    depth_keep: float = setting(0.15, ge=0, le=100)
    width_drop: float = setting(0.5, ge=0, le=100)  # accuracy a narrower net may lose and still be taken
    micro_gain: float = setting(0.10, ge=0, le=100)  # accuracy an op or kernel change must gain
    micro_kernels: tuple[int, ...] = setting((5, 7), items=KERNELS)
    over_budget: str = setting("narrow", choices=tuple(OVER_BUDGET))

    def __post_init__(self) -> None:
        check_fields(self, "search")


@dataclass(frozen=True)
class RandomConfig:
    """Random search (a baseline): networks drawn uniformly from the space (depth, width of the grid,
    each layer's op and kernel), each trained ``epochs`` epochs; the best on validation wins. Its cost
    is ``candidates`` trained, or ``candidate_epochs`` in all when set (to match another search's)."""

    min_depth: int = setting(10, ge=1, le=MAX_DEPTH)
    max_depth: int = setting(100, ge=1, le=MAX_DEPTH)
    min_width: int = setting(16, ge=1, le=MAX_WIDTH)
    max_width: int = setting(64, ge=1, le=MAX_WIDTH)
    width_step: int = setting(2, ge=1, le=MAX_WIDTH)
    micro_kernels: tuple[int, ...] = setting((5,), items=KERNELS)  # kernels a layer may take besides 3
    epochs: int = setting(10, ge=1, le=100_000)  # of every candidate
    candidates: int = setting(20, ge=1, le=1_000_000)  # trained (or failed) candidates; over-budget ones are redrawn
    candidate_epochs: int = setting(
        0, ge=0, le=10**9
    )  # > 0: the cost in epochs instead, candidate_epochs // epochs candidates
    max_draws: int = setting(100_000, ge=1, le=10**9)  # draws (over-budget and repeated ones included) before giving up

    def __post_init__(self) -> None:
        check_fields(self, "search")
        if 0 < self.candidate_epochs < self.epochs:
            raise ProfileError(
                f"search.candidate_epochs = {self.candidate_epochs} is not allowed; it must be 0 (use "
                f"search.candidates) or >= search.epochs ({self.epochs}), one candidate's training"
            )

    @property
    def budget_candidates(self) -> int:
        """How many candidates the search trains."""
        return self.candidate_epochs // self.epochs if self.candidate_epochs else self.candidates


CONFIGS = {"egnas": EgnasConfig, "trg": TrgConfig, "random": RandomConfig}
