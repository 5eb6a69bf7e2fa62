"""``edgenas discover``: a search end to end — profile, data, strategy ⇄ evaluator, run directory, final net.

The strategy (``search/strategies.py``) only decides; ``CandidateEvaluator`` answers it. The
winner is trained again under the discovered epochs and written with ``arch.json`` and
``summary.json``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import torch

from edgenas.config.profile import Profile, load_profile
from edgenas.config.runtimes import CPU_RUNTIMES
from edgenas.errors import EdgenasError, ParamError
from edgenas.run.ahead.latency_prefetch import drive_prefetching
from edgenas.run.ahead.worker_pools import PoolSpec, RayPool, WorkerPool
from edgenas.run.evaluator import (
    CandidateEvaluator,
    candidate_seed,
    latency_source,
    measured_source,
    memory_footprint,
    run_latency,
)
from edgenas.run.meta import run_meta, versions
from edgenas.run.progress import STDERR, Log, Progress, as_progress, epoch_lines
from edgenas.run.rundir import RunDir
from edgenas.runtime.backend import check_available
from edgenas.runtime.cost import CostSource
from edgenas.search.budget_rule import budget_rule_note
from edgenas.search.registry import make_strategy
from edgenas.search.space import Arch
from edgenas.search.speculation import drive_speculative
from edgenas.search.strategies import SearchResult, drive
from edgenas.training.memory import check_training_memory
from edgenas.training.tasks import Task, task_for
from edgenas.training.threads import MAX_THREADS, plan_threads, torch_threads
from edgenas.training.threads import check_threads as check_thread_count
from edgenas.training.trainer import select_device
from edgenas.version import __version__

MAX_SEED = 2**31 - 1  # seeds reach torch, numpy and the candidate-seed hash


def _last_written(path: Path) -> float:
    return max((p.stat().st_mtime for p in (path / RunDir.META, path / RunDir.JOURNAL) if p.exists()), default=0.0)


def default_out(profile: Profile, *, dataset: str, resume: bool, root: Path = Path("runs")) -> Path:
    """``runs/PROFILE-DATASET``, numbered (``-2``, ``-3`` …) for a new run. For resume: the
    unfinished run of this profile and dataset written last (else the newest, which says it is finished)."""
    base = root / f"{profile.name}-{dataset}"
    taken = [base] + [root / f"{base.name}-{i}" for i in range(2, 1000)]
    existing = [p for p in taken if p.exists()]
    if not resume:
        return next(p for p in taken if not p.exists())
    unfinished = [p for p in existing if (p / RunDir.META).is_file() and not (p / RunDir.SUMMARY).exists()]
    if unfinished:
        return max(unfinished, key=_last_written)
    return existing[-1] if existing else base


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ParamError("seed", seed, f"give an integer from 0 to {MAX_SEED}")
    return seed


def check_path(param: str, value) -> Path | None:
    """An optional path argument (``out``, ``data_dir``) as a ``Path``; anything else is a ``ParamError``."""
    if value is None or value == "":
        return None
    if isinstance(value, bytes) or not isinstance(value, (str, os.PathLike)):
        raise ParamError(param, value, "give a directory path (a str or pathlib.Path), or None for the default")
    return Path(value)


def _check_parallel(profile: Profile, dev: torch.device, workers: int) -> None:
    if not isinstance(workers, int) or workers < 1:
        raise ParamError("workers", workers, "give an integer >= 1")
    b = profile.budget
    if (
        workers > 1
        and dev.type == "cpu"
        and b.max_latency_ms
        and b.runtime in CPU_RUNTIMES
        and b.latency_from == "measured"
    ):
        raise ParamError(
            "workers",
            workers,
            f"a CPU latency budget ({profile.budget.runtime}) would be timed on CPUs "
            "busy training other candidates; use 1",
        )


def _check_first_candidate(profile: Profile, *, data, outputs: int, device) -> None:
    """Every search trains ``(min_depth, max_width)`` first: refuse (exit 2) a profile whose first
    candidate cannot fit in the device's memory, with the estimate, before anything is written."""
    plan, cfg = profile.train, profile.search
    batch = min(plan.fast_batch_size if plan.protocol == "fast" else plan.batch_size, max(1, len(data.train)))
    check_training_memory(
        Arch.plain(cfg.min_depth, cfg.max_width),
        in_channels=data.in_channels,
        outputs=outputs,
        input_size=data.input_size,
        batch=batch,
        device=device,
        what="the first candidate",
    )


def check_threads(threads) -> int | None:
    """A ``threads`` argument: None (the profile's ``train.threads``, or the policy), or an integer from 0."""
    try:
        return None if threads is None else check_thread_count(threads)
    except ValueError:
        raise ParamError("threads", threads, f"give an integer from 0 (edgenas's policy) to {MAX_THREADS}") from None


def run_threads(
    profile: Profile, *, task: Task, data, threads: int | None, stored: int | None = None, where: Path
) -> int:
    """The CPU threads a search trains with: the run's own (``stored``, from its run.json) on a resume, else
    ``threads``, else the profile's ``train.threads``, else the policy's count for the search's first
    candidate (``(min_depth, max_width)``). A resume refuses another explicit count: it would change the path."""
    if stored is not None:
        if threads is not None and threads != stored:
            raise ParamError(
                "threads",
                threads,
                f"{where} was searched with {stored} CPU thread(s), and the count "
                f"changes float rounding and so the search's path; resume without {{threads}} "
                f"(or with {stored}), or start a new run elsewhere",
            )
        return stored
    cfg = profile.search
    _, macs = task.model_size(Arch.plain(cfg.min_depth, cfg.max_width), data, profile)
    plan = profile.train if threads is None else dataclasses.replace(profile.train, threads=threads)
    return plan_threads(plan, forward_macs=macs, train_images=len(data.train))


def _search(
    profile: Profile,
    *,
    evaluator: CandidateEvaluator,
    spec: PoolSpec,
    outputs: int,
    workers: int,
    ray: str | None,
    log: Progress,
) -> SearchResult:
    """The strategy driven to its end, sequentially or with ``workers`` candidates at once."""

    def factory():
        return make_strategy(
            profile.strategy,
            config=profile.search,
            in_channels=evaluator.data.in_channels,
            num_classes=outputs,
            seed=evaluator.seed,
        )

    if workers == 1 and not ray and evaluator.prefetcher is not None:
        log(f"latency measured on {profile.budget.device}, ahead of need while candidates train")
        return drive_prefetching(factory, evaluator)
    if workers == 1 and not ray:
        return drive(factory(), evaluator)
    where = f"as Ray tasks ({ray})" if ray else "in worker processes"
    log(f"training up to {workers} candidates at once {where} (speculative; same decisions as sequential)")
    pool = RayPool(workers, spec, address=ray) if ray else WorkerPool(workers, spec)
    try:
        return drive_speculative(
            factory,
            evaluator=evaluator,
            pool=pool,
            slots=workers,
            seed_of=lambda key: candidate_seed(evaluator.seed, key),
        )
    finally:
        pool.close()


def discover(
    profile: str | Path | Profile = "demo",
    *,
    dataset: str | None = None,
    data_dir: str | Path | None = None,
    out: str | Path | None = None,
    device: str | None = None,
    seed: int = 0,
    resume: bool = False,
    download: bool = False,
    workers: int = 1,
    ray: str | None = None,
    threads: int | None = None,
    log: Log = STDERR,
) -> dict:
    """Run a search and train its winner; return ``summary.json`` (also written to the run directory).

    ``workers`` > 1 trains that many candidates at once on the device, speculatively (the
    decisions are those of the sequential search; see ``search/speculation.py``). ``ray``
    ("local" or a cluster address) runs them as Ray tasks instead, across a Ray cluster's GPUs.
    ``resume`` continues the run in ``out`` (default: the unfinished run of this profile and dataset
    written last) after checking that profile, seed and data are the run's own; a finished run is
    returned as it is. The run directory is locked while the search runs (one process at a time).
    ``log`` takes the progress: a ``run.progress.Progress`` (plain lines, or the live bar on a terminal),
    or any callable taking one line of text (``print``, ``list.append``).
    ``threads``: CPU threads of the training (see ``run_threads``; recorded in run.json).

    >>> summary = edgenas.discover("demo", dataset="digits", out="runs/demo")
    >>> summary["arch"], summary["test_acc"], summary["run_dir"]
    """
    log = as_progress(log)
    out, data_dir = check_path("out", out), check_path("data_dir", data_dir)
    profile = profile if isinstance(profile, Profile) else load_profile(profile)
    task, name, seed = task_for(profile.task), dataset or profile.data.dataset, check_seed(seed)
    threads = check_threads(threads)
    dev = select_device(device)
    _check_parallel(profile, dev, workers)
    b = profile.budget
    if b.max_latency_ms and b.latency_from == "measured":
        check_available(b.runtime)  # before anything is written
    out = Path(out) if out else default_out(profile, dataset=name, resume=resume)
    if resume and RunDir(out).finished:
        log(f"{out} holds a finished search; nothing to resume")
        return RunDir.open(out).read(RunDir.SUMMARY)
    if not resume:
        RunDir.refuse_taken(out)  # before loading data: fail fast
    else:
        RunDir.refuse_headless(out)
    data = task.load_data(name, data_dir=data_dir, profile=profile, seed=seed, download=download)
    _check_first_candidate(profile, data=data, outputs=task.outputs(data, profile), device=dev)
    stored = RunDir(out).meta.threads if resume and (Path(out) / RunDir.META).is_file() else None
    meta = run_meta(
        profile,
        task=profile.task,
        dataset=name,
        data_dir=data_dir,
        data=data,
        extra=task.extra_meta(data),
        seed=seed,
        device=dev,
        threads=run_threads(profile, task=task, data=data, threads=threads, stored=stored, where=Path(out)),
    )
    latency = latency_source(profile, meta, data)  # a table built for another target is refused here
    if b.latency_from == "device":
        latency.check()  # the device answers, and runs the budget's runtime: before run.json is written
    with RunDir(out).lock("discover"):
        if resume and RunDir(out).finished:  # it finished while the data was loading
            return RunDir.open(out).read(RunDir.SUMMARY)
        run = RunDir.start(out, meta, resume=resume)
        log(
            f"edgenas {__version__}: profile {profile.name} ({profile.strategy}), dataset {name}, device {dev} "
            f"({meta.threads} CPU thread{'s' if meta.threads != 1 else ''}), run {out}"
        )
        data = data.to(dev)
        started = time.monotonic()
        evaluator = CandidateEvaluator(
            run, profile=profile, data=data, task=task, device=dev, seed=seed, log=log, latency=latency
        )
        spec = PoolSpec(profile, name, meta.dataset.data_dir, seed, dev.type, meta.threads)
        finished = False
        try:
            result = _search(
                profile, evaluator=evaluator, spec=spec, outputs=meta.outputs, workers=workers, ray=ray, log=log
            )
            finished = True
        finally:
            evaluator.close(wait=finished)
        return finish(
            run,
            profile=profile,
            task=task,
            data=data,
            result=result,
            device=dev,
            seed=seed,
            search_wall=time.monotonic() - started,
            log=log,
            latency=evaluator.latency,
            latency_seconds=evaluator.latency_seconds,
        )


def winner_latency(
    run: RunDir, *, profile: Profile, arch: Arch, log: Log, data=None, source: CostSource | None = None
) -> dict:
    """The winner's latency for summary.json: ``latency_ms`` measured (None, said why, where its runtime
    is missing here) and, where a latency table predicted the candidates' (``source``), its prediction beside it."""
    out: dict[str, object] = {"latency_ms": None}
    try:
        source = source or latency_source(profile, run.meta, data)
        if source.kind == "table":  # a prediction: the winner is measured for real beside it
            out.update(latency_predicted_ms=source.latency_ms(arch), latency_source=source.identity())
            measured = measured_source(profile, run.meta, data)
            out.update(latency_ms=measured.latency_ms(arch), latency_measured_on=measured.identity())
        else:
            out["latency_ms"] = run_latency(run, profile=profile, arch=arch, cache=run.latencies(), source=source)
    except EdgenasError as e:
        log(f"latency of the winner not measured on {profile.budget.runtime}: {e}")
    return out


def _summary(
    run: RunDir,
    *,
    profile: Profile,
    task: Task,
    result: SearchResult,
    res,
    test: dict,
    epochs: int,
    device,
    seed: int,
    search_wall: float,
    log: Log,
    data=None,
    latency: CostSource | None = None,
    latency_seconds: float | None = None,
) -> dict:
    arch, journal = result.arch, run.journal()
    params, macs = task.model_size(arch, run.meta.data, profile)
    b = profile.budget
    rule = budget_rule_note(profile.search, journal, has_budget=bool(b.max_params or b.max_macs or b.max_latency_ms))
    memory = memory_footprint(arch, run.meta.data, profile)
    return {
        "arch": arch.to_dict(),
        "arch_str": str(arch),
        "task": profile.task,
        "params": params,
        "macs": macs,
        **({} if memory is None else {"memory": {"estimate": memory.to_dict()}}),
        **winner_latency(run, profile=profile, arch=arch, log=log, data=data, source=latency),
        "budget": profile.to_dict()["budget"],
        "search_acc": result.acc,
        "val_acc": res.val_acc,
        **test,
        "test_from": test_from(result.epochs, epochs),
        "discovered_epochs": result.epochs,
        "winner_epochs": epochs,
        "final_epochs": profile.train.final_epochs,
        "over_budget": rule,
        "candidates": result.candidates,
        "candidates_trained": sum(r["status"] != "skipped" for r in journal),
        "candidates_skipped": sum(r["status"] == "skipped" for r in journal),
        "search_seconds": round(search_wall, 2),
        "candidate_seconds": round(sum(r["seconds"] for r in journal), 2),
        "final_train_seconds": round(res.seconds, 2),
        "latency_seconds": None if latency_seconds is None else round(latency_seconds, 2),
        "device": str(device),
        "threads": run.meta.threads,
        "profile": profile.name,
        "dataset": run.meta.dataset.name,
        "seed": seed,
        "versions": versions(),
        "run_dir": str(run.path),
    }


def finish(
    run: RunDir,
    *,
    profile: Profile,
    task: Task,
    data,
    result: SearchResult,
    device,
    seed: int,
    search_wall: float,
    log: Progress,
    latency: CostSource | None = None,
    latency_seconds: float | None = None,
) -> dict:
    """Train the discovered architecture, save it, and write arch.json and summary.json.

    ``latency``: the search's latency source (the winner's figure comes from it, or is measured
    for real where it is a table); ``latency_seconds``: the search's time obtaining candidates' latencies."""
    arch = result.arch
    epochs = result.epochs or profile.search.epochs
    log(f"search done: {arch} after {result.candidates} candidates; training it for {epochs} epochs")
    run.write(RunDir.ARCH, arch.to_dict())
    on_epoch = epoch_lines(log, prefix=f"[final] {arch}: ", stage="final", arch=arch, epochs=epochs)
    threads = run.meta.threads
    model, res = task.train(
        arch,
        data=data,
        epochs=epochs,
        profile=profile,
        device=device,
        seed=candidate_seed(seed, f"final:{arch}"),
        on_epoch=on_epoch,
        threads=threads,
    )
    with torch_threads(threads):
        test = task.test_metrics(model, data, device)
    run.save_weights(model)
    summary = _summary(
        run,
        profile=profile,
        task=task,
        result=result,
        res=res,
        test=test,
        epochs=epochs,
        device=device,
        seed=seed,
        search_wall=search_wall,
        log=log,
        data=data,
        latency=latency,
        latency_seconds=latency_seconds,
    )
    run.write(RunDir.SUMMARY, summary)
    log(summary["over_budget"]["text"])
    log(
        f"done: {arch}, {summary['params']:,} params, {summary['macs']:,} MACs, "
        + ", ".join(f"{k} {v:.2f}%" for k, v in test.items())
        + f" (after {summary['test_from']}; `edgenas train` "
        f"trains final_epochs ({profile.train.final_epochs})); run directory {run.path}"
    )
    return summary


def test_from(discovered: int | None, epochs: int) -> str:
    """Which training the summary's test figures come from (``test_from``)."""
    return f"discovered epochs ({epochs})" if discovered else f"search.epochs ({epochs})"
