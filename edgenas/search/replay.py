"""Replay a published search log: drive a strategy with the log's accuracies and check each request."""

from __future__ import annotations

import concurrent.futures as cf
import json
from dataclasses import dataclass, field
from pathlib import Path

from edgenas.config.strategies import EgnasConfig, TrgConfig
from edgenas.search.registry import make_strategy
from edgenas.search.space import Arch
from edgenas.search.speculation import drive_speculative
from edgenas.search.strategies import Candidate, Outcome, drive

# The reference scripts' argument names -> edgenas strategy parameters.
EGNAS_ARGS = {
    "min_depth": "min_depth",
    "max_depth": "max_depth",
    "min_width": "min_width",
    "max_width": "max_width",
    "width_resolution": "width_step",
    "epochs": "epochs",
    "add_epochs": "add_epochs_depth",
    "add_epochs_w": "add_epochs_width",
    "dp_add_tolerance": "depth_gain",
    "ch_drop_tolerance": "depth_keep",
    "dp_break_tolerance": "depth_patience",
    "ch_break_tolerance": "width_patience",
    "target_acc": "target_acc",
    "target_acc_tolerance": "target_tolerance",
}
TRG_ARGS = {
    "min_depth": "min_depth",
    "max_depth": "max_depth",
    "min_width": "min_width",
    "max_width": "max_width",
    "width_resolution": "width_step",
    "epochs": "epochs",
    "target_acc": "target_acc",
    "target_acc_tolerance": "target_tolerance",
    "ch_drop_tolerance": "width_drop",
}
# Input channels and classes of the logged datasets (they enter the parameter matching).
DATASET_SHAPES = {
    "CIFAR10": (3, 10),
    "CIFAR100": (3, 100),
    "FashionMNIST": (1, 10),
    "KMNIST": (1, 10),
    "EMNIST": (1, 47),
}


def dataset_shape(args: dict) -> tuple[int, int]:
    """(input channels, classes) of a logged run; the TRG log (CIFAR-10) names no dataset."""
    return DATASET_SHAPES[args.get("dataset", "CIFAR10")]


def log_strategy(path: str | Path) -> str:
    return "trg" if Path(path).name.startswith("trg-") else "egnas"


def config_from_args(strategy: str, args: dict):
    names, cls = (TRG_ARGS, TrgConfig) if strategy == "trg" else (EGNAS_ARGS, EgnasConfig)
    return cls(**{ours: args[theirs] for theirs, ours in names.items() if theirs in args})


class LogMismatch(Exception):
    pass


class Oracle:
    """Answers each request with the next logged record; raises ``LogMismatch`` when they differ."""

    FIELDS = ("stage", "depth", "width", "ops", "kernels", "epochs")

    def __init__(self, records: list[dict]):
        self.records = records
        self.index = 0

    def __call__(self, cand: Candidate) -> Outcome:
        if self.index >= len(self.records):
            raise LogMismatch(
                f"request {self.index + 1} ({cand.stage} {cand.arch}) is beyond the log's {len(self.records)} records"
            )
        rec = self.records[self.index]
        asked = {"stage": cand.stage, "epochs": cand.epochs, **cand.arch.to_dict()}
        diff = [f"{k}: asked {asked[k]}, logged {rec[k]}" for k in self.FIELDS if asked[k] != rec[k]]
        if diff:
            raise LogMismatch(f"request {self.index + 1} differs from the log: " + "; ".join(diff))
        self.index += 1
        return Outcome(acc=rec["val_acc"], train_acc=rec["train_acc"])


@dataclass
class ReplayReport:
    path: str
    requests_matched: int
    records: int
    final_matched: bool
    error: str = ""
    details: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.error and self.final_matched and self.requests_matched == self.records


def _load(path: str | Path):
    """The log, and a factory of fresh strategies configured as the logged run was."""
    log = json.loads(Path(path).read_text())
    strategy = log_strategy(path)
    config = config_from_args(strategy, log["args"])
    in_ch, n_cls = dataset_shape(log["args"])
    return log, lambda: make_strategy(strategy, config=config, in_channels=in_ch, num_classes=n_cls)


def _report(path, *, log: dict, result, oracle: Oracle) -> ReplayReport:
    """Compare the search's result with the log's ``final`` (its requests already matched)."""
    final, want = log["final"], Arch.from_dict(log["final"])
    details = [f"final architecture {result.arch}, logged {want}"] if result.arch != want else []
    if "epochs" in final and result.epochs != final["epochs"]:
        details.append(f"discovered epochs {result.epochs}, logged {final['epochs']}")
    return ReplayReport(str(path), oracle.index, len(log["candidates"]), not details, "; ".join(details), details)


def replay_log(path: str | Path) -> ReplayReport:
    log, factory = _load(path)
    oracle = Oracle(log["candidates"])
    try:
        result = drive(factory(), oracle)
    except LogMismatch as e:
        return ReplayReport(str(path), oracle.index, len(log["candidates"]), False, str(e))
    return _report(path, log=log, result=result, oracle=oracle)


class OraclePool:
    """A worker pool whose 'training' looks the candidate up in the log (any order, threads)."""

    def __init__(self, records: list[dict], workers: int):
        self.by_request = {(r["stage"], Arch.from_dict(r), r["epochs"]): r for r in records}
        self.executor = cf.ThreadPoolExecutor(workers)
        self.trained: list[str] = []

    def _train(self, cand: Candidate) -> dict:
        self.trained.append(cand.key())
        rec = self.by_request.get((cand.stage, cand.arch, cand.epochs))
        if rec is None:  # a guess the search never asks for: any answer will do, it is never used
            return {"status": "trained", "val_acc": 0.0, "train_acc": 0.0, "seconds": 0.0}
        return {"status": "trained", "val_acc": rec["val_acc"], "train_acc": rec["train_acc"], "seconds": 0.0}

    def submit(self, cand: Candidate, seed: int, tag: str):
        return self.executor.submit(self._train, cand)

    def cancel(self, cand: Candidate, future) -> None:
        future.cancel()

    def uncancel(self, cand: Candidate) -> None:
        pass

    def result(self, cand: Candidate, future):
        return None if future.cancelled() else future.result()

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


class MemoryEvaluator:
    """The evaluator protocol of ``speculate.drive_speculative``, journaling in memory, no budgets."""

    def __init__(self):
        self.done: dict[str, Outcome] = {}
        self.count = 0

    def log(self, message: str) -> None:
        pass

    def tag(self, cand: Candidate, speculative: bool = False) -> str:
        return cand.key()

    def known(self, cand: Candidate):
        return self.done.get(cand.key())

    def screen(self, cand: Candidate):
        return {}, None

    def finished(self, cand: Candidate, *, record: dict, res: dict, speculative: bool = False) -> Outcome:
        self.done[cand.key()] = Outcome(res["val_acc"], res["train_acc"], res["status"])
        return self.done[cand.key()]


def replay_log_speculative(path: str | Path, slots: int = 4) -> ReplayReport:
    """``replay_log`` with speculative execution: the strategy's requests must still match the log."""
    log, factory = _load(path)
    pool = OraclePool(log["candidates"], slots)
    try:
        result = drive_speculative(factory, evaluator=MemoryEvaluator(), pool=pool, slots=slots, seed_of=lambda k: 0)
    finally:
        pool.close()
    oracle = Oracle(log["candidates"])
    try:
        for cand, _ in result.history:
            oracle(cand)
    except LogMismatch as e:
        return ReplayReport(str(path), oracle.index, len(log["candidates"]), False, str(e))
    report = _report(path, log=log, result=result, oracle=oracle)
    report.details.append(f"{len(set(pool.trained))} candidates trained for {len(result.history)} requests")
    return report
