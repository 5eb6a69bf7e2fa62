"""What is timed: ``task``'s network on ``input_chw`` images with ``outputs`` outputs, on ``runtime``, at ``threads``
and ``batch`` — declared once, handed to latency measurement, cost sources and latency tables."""

from __future__ import annotations

from dataclasses import dataclass

from edgenas.config.runtimes import RUNTIMES, TIMED_RUNTIMES
from edgenas.errors import ParamError


@dataclass(frozen=True)
class Target:
    task: str  # "classify" | "face"
    input_chw: tuple[int, int, int]  # one input's (C, H, W)
    outputs: int  # classes, or a face network's embedding size
    runtime: str  # a name of config.runtimes.RUNTIMES
    threads: int = 1  # CPU threads of CPU runtimes
    batch: int = 1  # images per timed call

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_chw", tuple(int(v) for v in self.input_chw))
        runtime = RUNTIMES.get(self.runtime) if isinstance(self.runtime, str) else None
        if runtime is None:
            raise ParamError("runtime", self.runtime, f"choose one of {', '.join(TIMED_RUNTIMES)}")
        if not runtime.timed:
            raise ParamError("runtime", self.runtime, runtime.not_timed)
        for name in ("threads", "batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ParamError(name, value, "give an integer >= 1")

    @classmethod
    def of_run(cls, meta, budget) -> Target:
        """A run's target: its task, input shape and outputs (``RunMeta``), its budget's runtime, threads, batch."""
        return cls(meta.task, meta.data.input_chw, int(meta.outputs), budget.runtime, budget.threads, budget.batch)

    def keys(self) -> dict:
        """The target as a latency table's ``built_for`` and a cost source's ``identity`` name it."""
        return {
            "runtime": self.runtime,
            "threads": self.threads,
            "batch": self.batch,
            "input_shape": list(self.input_chw),
            "task": self.task,
            "outputs": self.outputs,
        }
