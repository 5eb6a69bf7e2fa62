"""The discovery pipeline: run a search end to end — profile, data, strategy ⇄ trainer, run directory, final net.

The strategy (``search.py``) only decides; ``CandidateEvaluator`` answers it: from the journal when
the candidate was already finished (``--resume``), as "skipped" when it breaks a budget (never
trained), else by training it. Each finished candidate is journaled before the strategy sees it,
so a kill loses at most the candidate in flight.
"""

from __future__ import annotations

import dataclasses
import platform
import sys
import time
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

from edgenas import __version__
from edgenas.errors import UserInputError
from edgenas.profiles import Budget, Profile, load_profile
from edgenas.runs import RunDir
from edgenas.search import Candidate, Outcome, SearchResult, drive, make_strategy
from edgenas.space import Arch

Log = Callable[[str], None]


def stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def candidate_seed(seed: int, key: str) -> int:
    """A seed per candidate, so a resumed run retrains the candidate in flight identically."""
    return (zlib.crc32(key.encode()) + seed) % 2**31


def default_out(profile: Profile, dataset: str, resume: bool, root: Path = Path("runs")) -> Path:
    """``runs/PROFILE-DATASET``, numbered (``-2``, ``-3`` …) for a new run; the newest one for resume."""
    base = root / f"{profile.name}-{dataset}"
    taken = [base] + [root / f"{base.name}-{i}" for i in range(2, 1000)]
    existing = [p for p in taken if p.exists()]
    if resume:
        return existing[-1] if existing else base
    return next(p for p in taken if not p.exists())


@dataclass
class BudgetCheck:
    params: int
    macs: int
    latency_ms: Optional[float]
    reason: str  # empty when within every budget


def check_budget(arch: Arch, size: tuple[int, int], budget: Budget, latency_of: Callable[[Arch], float]) -> BudgetCheck:
    """``size``: the deployed network's (params, MACs). Those are free to check; latency is measured
    only when they pass and a latency budget is set."""
    params, macs = size
    if budget.max_params and params > budget.max_params:
        return BudgetCheck(params, macs, None, f"params {params:,} > max_params {budget.max_params:,}")
    if budget.max_macs and macs > budget.max_macs:
        return BudgetCheck(params, macs, None, f"MACs {macs:,} > max_macs {budget.max_macs:,}")
    latency = None
    if budget.max_latency_ms:
        latency = latency_of(arch)
        if latency > budget.max_latency_ms:
            return BudgetCheck(params, macs, latency, f"latency {latency:.3f} ms > max_latency_ms {budget.max_latency_ms} on {budget.runtime}")
    return BudgetCheck(params, macs, latency, "")


def _outcome(record: dict) -> Outcome:
    return Outcome(record["acc"], record["train_acc"], record["status"], record.get("reason", ""))


class CandidateEvaluator:
    """Answers the strategy: journal → budget check → training. Journals every answer."""

    def __init__(self, run: RunDir, profile: Profile, data, task, device, seed: int, log: Log, progress=None):
        self.run, self.profile, self.data, self.task = run, profile, data, task
        self.device, self.seed, self.log = device, seed, log
        self.progress = progress  # an edgenas.progress.Progress on a terminal, else None
        self.shape = run.meta["data"]
        self.done = {r["key"]: r for r in run.journal()}
        self.latency_cache = run.latencies()
        self.count = 0
        self.started = time.monotonic()

    def latency_of(self, arch: Arch) -> float:
        return run_latency(self.run, self.profile, arch, self.latency_cache)

    def tag(self, cand: Candidate, speculative: bool = False) -> str:
        where = "speculative" if speculative else f"#{self.count}"
        return f"[{cand.stage} {where}] {cand.arch} e{cand.epochs}"

    def known(self, cand: Candidate) -> Optional[Outcome]:
        """The journaled answer, if this candidate was finished before (also by speculation)."""
        rec = self.done.get(cand.key())
        return None if rec is None else _outcome(rec)

    def screen(self, cand: Candidate) -> tuple[dict, Optional[Outcome]]:
        """The candidate's record so far, and a ``skipped`` answer (journaled) if it breaks a budget."""
        check = check_budget(cand.arch, self.task.model_size(cand.arch, self.shape, self.profile),
                             self.profile.budget, self.latency_of)
        record = {
            "key": cand.key(), "stage": cand.stage, **cand.arch.to_dict(), "epochs": cand.epochs,
            "params": check.params, "macs": check.macs, "latency_ms": check.latency_ms,
        }
        if not check.reason:
            return record, None
        self.log(f"{self.tag(cand)}: skipped, over budget ({check.reason})")
        self.journal({**record, "status": "skipped", "reason": check.reason, "acc": 0.0, "train_acc": 0.0, "seconds": 0.0})
        return record, Outcome(0.0, 0.0, "skipped", check.reason)

    def journal(self, record: dict) -> Outcome:
        self.run.record(record)
        self.done[record["key"]] = record
        if self.progress:
            self.progress.record(record)
        return _outcome(record)

    def finished(self, cand: Candidate, record: dict, res, speculative: bool = False) -> Outcome:
        """Journal a trained candidate (``res``: a TrainResult or its dict); ``speculative``: not asked for yet."""
        res = res if isinstance(res, dict) else dataclasses.asdict(res)
        self.log(f"{self.tag(cand, speculative)}: {res['status']}, {self.task.metric} {res['val_acc']:.2f}% in {res['seconds']:.1f}s")
        return self.journal({"speculative": False, **record, "status": res["status"], "reason": "", "acc": res["val_acc"],
                             "train_acc": res["train_acc"], "seconds": res["seconds"]})

    def on_epoch(self, tag: str):
        if self.progress:
            return self.progress.epoch

        def report(epoch, epochs, loss, train_acc, seconds):
            self.log(f"{tag}: epoch {epoch}/{epochs} loss {loss:.3f} train {train_acc:.1f}% "
                     f"({time.monotonic() - self.started:.0f}s elapsed)")
        return report

    def __call__(self, cand: Candidate) -> Outcome:
        """Answer one request in this process: journal, budget, or training."""
        self.count += 1
        if self.progress:
            self.progress.candidate(cand.stage, self.count, str(cand.arch), cand.epochs)
        known = self.known(cand)
        if known is not None:
            if self.progress:
                self.progress.record(self.done[cand.key()])
            self.log(f"{self.tag(cand)}: from the journal, {known.status} acc {known.acc:.2f}%")
            return known
        record, skipped = self.screen(cand)
        if skipped is not None:
            return skipped
        _, res = self.task.train(cand.arch, self.data, cand.epochs, self.profile, self.device,
                                 candidate_seed(self.seed, cand.key()), self.on_epoch(self.tag(cand)))
        return self.finished(cand, record, res)


def data_shape(data) -> dict:
    return {
        "in_channels": data.in_channels, "num_classes": data.num_classes, "input_size": list(data.input_size),
        "mean": list(data.mean), "std": list(data.std), "class_names": list(data.class_names),
    }


def run_meta(profile: Profile, task, dataset: str, data_dir, data, seed: int, dev) -> dict:
    """What run.json records: enough to reload the data exactly and to check a --resume."""
    return {
        "edgenas_version": __version__, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "task": profile.task, "seed": seed, "device": str(dev), "profile": profile.to_dict(),
        "dataset": {"name": dataset, "data_dir": str(Path(data_dir).expanduser().resolve()) if data_dir else None,
                    "val_fraction": profile.data.val_fraction, "split_seed": seed,
                    "input_size": list(profile.data.input_size) if profile.data.input_size else None,
                    "channels": profile.data.channels},
        "data": {**data_shape(data), **task.extra_meta(data)},
    }


def versions() -> dict:
    import torch

    return {"edgenas": __version__, "torch": torch.__version__, "python": platform.python_version()}


def discover(
    profile: str | Profile = "demo",
    dataset: Optional[str] = None,
    data_dir: Optional[str] = None,
    out: Optional[str | Path] = None,
    device: Optional[str] = None,
    seed: int = 0,
    resume: bool = False,
    download: bool = False,
    log: Log = stderr_log,
    workers: int = 1,
    ray: Optional[str] = None,
    progress=None,
) -> dict:
    """Run a search and train its winner; return ``summary.json`` (also written to the run dir).

    ``workers`` > 1 trains that many candidates at once on the device, speculatively (the
    decisions are those of the sequential search; see ``speculate.py``). ``ray`` ("local" or a
    cluster address) runs them as Ray tasks instead, across the GPUs of a Ray cluster. ``progress``
    (an ``edgenas.progress.Progress``) replaces the per-epoch log lines with a live display.

    >>> summary = edgenas.discover("demo")          # digits, CPU or CUDA, a few minutes
    >>> summary["arch"], summary["test_acc"], summary["run_dir"]
    """
    from edgenas.tasks import task_for
    from edgenas.train import select_device

    profile = profile if isinstance(profile, Profile) else load_profile(profile)
    task = task_for(profile.task)
    name = dataset or profile.data.dataset
    dev = select_device(device)
    cpu_runtime = profile.budget.runtime in ("onnxruntime-cpu", "torch-cpu")
    if workers > 1 and dev.type == "cpu" and profile.budget.max_latency_ms and cpu_runtime:
        raise UserInputError(f"--workers {workers} with a CPU latency budget ({profile.budget.runtime}) would time "
                             "candidates on CPUs busy training others; use --workers 1")
    out = Path(out) if out else default_out(profile, name, resume)
    if not resume:
        RunDir.refuse_taken(out)  # before loading data: fail fast
    data = task.load_data(name, data_dir, profile, seed, download)
    run = RunDir.start(out, run_meta(profile, task, name, data_dir, data, seed, dev), resume)
    log(f"edgenas {__version__}: profile {profile.name} ({profile.strategy}), dataset {name}, device {dev}, run {out}")
    data = data.to(dev)
    started = time.monotonic()
    evaluator = CandidateEvaluator(run, profile, data, task, dev, seed, log, progress)
    outputs = task.outputs(data, profile)
    if workers > 1 or ray:
        from edgenas.speculate import RayPool, WorkerPool, drive_speculative

        where = f"as Ray tasks ({ray})" if ray else "in worker processes"
        log(f"training up to {workers} candidates at once {where} (speculative; same decisions as sequential)")
        pool = (RayPool(workers, profile.task, name, data_dir, profile, seed, dev.type, ray) if ray
                else WorkerPool(workers, profile.task, name, data_dir, profile, seed, str(dev)))
        try:
            result = drive_speculative(lambda: make_strategy(profile.strategy, profile.search, data.in_channels, outputs),
                                       evaluator, pool, workers, lambda key: candidate_seed(seed, key))
        finally:
            pool.close()
    else:
        result = drive(make_strategy(profile.strategy, profile.search, data.in_channels, outputs), evaluator)
    search_wall = time.monotonic() - started
    return finish(run, profile, task, data, result, dev, seed, search_wall, log, progress=progress)


def run_latency(run: RunDir, profile: Profile, arch: Arch, cache: dict) -> float:
    """Median latency of ``arch`` on the profile's runtime, measured once per run (latency.jsonl)."""
    key = str(arch)
    if key not in cache:
        from edgenas.latency import measure_latency

        shape, b = run.meta["data"], profile.budget
        cache[key] = measure_latency(
            arch, shape["in_channels"], shape["num_classes"], tuple(shape["input_size"]), b.runtime,
            threads=b.threads, batch=b.batch, task=profile.task, embedding_dim=profile.face.embedding_dim,
        )
        run.record_latency(key, cache[key])
    return cache[key]


def winner_latency(run: RunDir, profile: Profile, arch: Arch, log: Log) -> Optional[float]:
    """The winner's latency for summary.json; None (said why) where its runtime is missing here."""
    from edgenas.errors import EdgenasError

    try:
        return run_latency(run, profile, arch, run.latencies())
    except EdgenasError as e:
        log(f"latency of the winner not measured on {profile.budget.runtime}: {e}")
        return None


def finish(run: RunDir, profile: Profile, task, data, result: SearchResult, dev, seed: int, search_wall: float, log: Log,
           *, progress=None) -> dict:
    """Train the discovered architecture, save it, and write arch.json and summary.json."""
    arch = result.arch
    epochs = result.epochs or profile.search.epochs
    log(f"search done: {arch} after {result.candidates} candidates; training it for {epochs} epochs")
    run.write(RunDir.ARCH, arch.to_dict())
    on_epoch = lambda e, n, loss, acc, s: log(f"[final] {arch}: epoch {e}/{n} loss {loss:.3f} train {acc:.1f}%")
    if progress:
        progress.candidate("final", 0, str(arch), epochs)
        on_epoch = progress.epoch
    model, res = task.train(arch, data, epochs, profile, dev, candidate_seed(seed, f"final:{arch}"), on_epoch)
    test = task.test_metrics(model, data, dev)
    run.save_weights(model)
    params, macs = task.model_size(arch, run.meta["data"], profile)
    journal = run.journal()
    summary = {
        "arch": arch.to_dict(), "arch_str": str(arch), "task": profile.task,
        "params": params,
        "macs": macs,
        "latency_ms": winner_latency(run, profile, arch, log),
        "budget": {k: v for k, v in profile.to_dict()["budget"].items()},
        "search_acc": result.acc, "val_acc": res.val_acc, **test,
        "discovered_epochs": result.epochs, "final_epochs": epochs,
        "candidates": result.candidates,
        "candidates_trained": sum(r["status"] != "skipped" for r in journal),
        "candidates_skipped": sum(r["status"] == "skipped" for r in journal),
        "search_seconds": round(search_wall, 2), "candidate_seconds": round(sum(r["seconds"] for r in journal), 2),
        "final_train_seconds": round(res.seconds, 2),
        "device": str(dev), "profile": profile.name, "dataset": run.meta["dataset"]["name"], "seed": seed,
        "versions": versions(), "run_dir": str(run.path),
    }
    run.write(RunDir.SUMMARY, summary)
    log(f"done: {arch}, {summary['params']:,} params, {summary['macs']:,} MACs, "
        + ", ".join(f"{k} {v:.2f}%" for k, v in test.items()) + f"; run directory {run.path}")
    return summary
