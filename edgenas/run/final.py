"""``edgenas train``: train a discovered architecture from scratch under the final-training protocol."""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from edgenas.config.profile import Profile, load_profile
from edgenas.errors import EdgenasError, ParamError
from edgenas.run.discover import check_seed
from edgenas.run.evaluator import candidate_seed
from edgenas.run.loading import load_run_data
from edgenas.run.log import Log, epoch_log, stderr_log
from edgenas.run.meta import run_meta, versions
from edgenas.run.rundir import RunDir
from edgenas.search.space import Arch, load_arch
from edgenas.training.tasks import Task, task_for
from edgenas.training.trainer import select_device


def _run_from_arch(arch_path: Path, profile: Profile, task: Task, *, dataset: Optional[str], data_dir, out, download,
                   seed: int, device) -> tuple[RunDir, object]:
    """A run directory for a bare ARCH.json, so its result can be exported like a discovered one."""
    try:
        arch = load_arch(arch_path)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ParamError("target", str(arch_path), f"not a valid architecture file ({' '.join(str(e).split())[:160]})") from None
    name = dataset or profile.data.dataset
    out = Path(out) if out else Path("runs") / f"train-{arch_path.stem}-{name}"
    RunDir.refuse_taken(out, hint="choose another {out}")
    data = task.load_data(name, data_dir, profile, seed, download)
    meta = run_meta(profile, task=profile.task, dataset=name, data_dir=data_dir, data=data,
                    extra=task.extra_meta(data), seed=seed, device=device)
    run = RunDir.start(out, meta, resume=False)
    run.write(RunDir.ARCH, arch.to_dict())
    return run, data


def candidate_run(run_dir: str | Path, number: int, *, out: Optional[str | Path] = None) -> RunDir:
    """A new run directory holding candidate ``number`` (1-based, journal order) of ``run_dir``'s
    search as its architecture; its run.json records where it came from."""
    src = RunDir.open(run_dir)
    journal = src.journal()
    if not 1 <= number <= len(journal):
        held = f"holds candidates 1 to {len(journal)}" if journal else "has no finished candidate yet"
        raise ParamError("candidate", number, f"{src.path} {held} (see `edgenas pareto {src.path}`)")
    record = journal[number - 1]
    if record["status"] != "trained":
        raise ParamError("candidate", number, f"that candidate was {record['status']} "
                         f"({record.get('reason') or 'not trained'}); choose a trained one (see `edgenas pareto {src.path}`)")
    out = Path(out) if out else src.path.with_name(f"{src.path.name}-c{number}")
    RunDir.refuse_taken(out, hint="choose another {out}")
    meta = dataclasses.replace(src.meta, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                               origin={"from_run": str(src.path.resolve()), "candidate": number,
                                       "candidate_key": record["key"]})
    run = RunDir.start(out, meta, resume=False)
    run.write(RunDir.ARCH, Arch.from_dict(record).to_dict())
    return run


def _open_target(target: str | Path, *, profile, dataset, data_dir, out, download, seed: int, device):
    """(run directory, profile, task, data) for a run directory or a bare ARCH.json."""
    path = Path(target)
    if path.is_dir():
        run = RunDir.open(path)
        prof = load_profile(profile) if profile else run.meta.profile
        return run, prof, task_for(run.meta.task), load_run_data(run)
    if not path.is_file():
        raise ParamError("target", str(target), "no such run directory or ARCH.json")
    prof = load_profile(profile or "demo")
    task = task_for(prof.task)
    run, data = _run_from_arch(path, prof, task, dataset=dataset, data_dir=data_dir, out=out, download=download,
                               seed=seed, device=device)
    return run, prof, task, data


def train_final(target: str | Path, *, epochs: Optional[int] = None, device: Optional[str] = None, seed: int = 0,
                profile: Optional[str] = None, dataset: Optional[str] = None, data_dir: Optional[str] = None,
                out: Optional[str] = None, download: bool = False, log: Log = stderr_log, progress=None) -> dict:
    """Train TARGET (a run directory or an ARCH.json) and save the weights into its run directory.

    ``epochs`` defaults to the profile's ``train.final_epochs``; ``profile``, ``dataset``,
    ``data_dir``, ``out`` and ``download`` apply to an ARCH.json (a run directory knows its own).
    """
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise ParamError("epochs", epochs, "give an integer >= 1")
    seed, dev = check_seed(seed), select_device(device)
    run, prof, task, data = _open_target(target, profile=profile, dataset=dataset, data_dir=data_dir, out=out,
                                         download=download, seed=seed, device=dev)
    with run.lock("train"):
        arch = run.arch()
        epochs = epochs or prof.train.final_epochs
        log(f"training {arch} for {epochs} epochs on {dev}")
        started = time.monotonic()
        data = data.to(dev)
        on_epoch = epoch_log(log, "[train] ", progress, stage="train", arch=arch, epochs=epochs)
        model, res = task.train(arch, data, epochs, prof, dev, candidate_seed(seed, f"train:{arch}"), on_epoch)
        if res.status != "trained":
            raise EdgenasError(f"training {arch} diverged (non-finite loss); {run.path / RunDir.WEIGHTS} was left as it was")
        test = task.test_metrics(model, data, dev)
        run.save_weights(model)
        origin = f"final_epochs ({epochs})" if epochs == prof.train.final_epochs else f"--epochs ({epochs})"
        final = {"epochs": epochs, "status": res.status, "val_acc": res.val_acc, **test, "test_from": origin,
                 "seconds": round(time.monotonic() - started, 2), "device": str(dev), "seed": seed}
        _record(run, prof, task, final=final)
    log(f"done: {arch}: " + ", ".join(f"{k} {v:.2f}%" for k, v in test.items())
        + f" (after {final['test_from']}); weights in {run.path / RunDir.WEIGHTS}")
    return {"arch_str": str(arch), "run_dir": str(run.path), **final}


def _record(run: RunDir, profile: Profile, task: Task, *, final: dict) -> None:
    """summary.json with ``final_training``; its headline test figures become the current model's."""
    arch = run.arch()
    if (run.path / RunDir.SUMMARY).exists():
        summary = run.read(RunDir.SUMMARY)
    else:
        params, macs = task.model_size(arch, run.meta.data, profile)
        summary = {"arch": arch.to_dict(), "arch_str": str(arch), "task": profile.task, "params": params, "macs": macs,
                   "profile": profile.name, "dataset": run.meta.dataset.name, "versions": versions(),
                   "run_dir": str(run.path), **(run.meta.origin or {})}
    summary["final_training"] = final
    summary.update({k: v for k, v in final.items() if k.startswith("test_")})  # test_from too
    run.write(RunDir.SUMMARY, summary)
