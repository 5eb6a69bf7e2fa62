"""``edgenas train``: train a discovered architecture from scratch under the final-training protocol."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from edgenas.pipeline import Log, candidate_seed, run_meta, stderr_log, versions
from edgenas.errors import EdgenasError, UserInputError
from edgenas.profiles import Profile, load_profile, stored_profile
from edgenas.runs import RunDir
from edgenas.space import Arch, load_arch

ORIGIN = ("from_run", "candidate")  # run.json keys of a run made by `train --candidate`


def _run_from_arch(arch_path: Path, profile: Profile, dataset: Optional[str], data_dir, out, download, seed, task, dev) -> tuple[RunDir, object]:
    """A run directory for a bare ARCH.json, so its result can be exported like a discovered one."""
    arch = load_arch(arch_path)
    name = dataset or profile.data.dataset
    out = Path(out) if out else Path("runs") / f"train-{arch_path.stem}-{name}"
    RunDir.refuse_taken(out, hint="choose another --out")
    data = task.load_data(name, data_dir, profile, seed, download)
    meta = run_meta(profile, task, name, data_dir, data, seed, dev)
    run = RunDir.start(out, meta, resume=False)
    run.write(RunDir.ARCH, arch.to_dict())
    return run, data


def candidate_run(run_dir: str | Path, number: int, out: Optional[str | Path] = None) -> RunDir:
    """A new run directory holding candidate ``number`` (1-based, journal order) of ``run_dir``'s
    search as its architecture; its run.json records where it came from."""
    src = RunDir.open(run_dir)
    journal = src.journal()
    if not journal:
        raise UserInputError(f"--candidate {number}: {src.path} has no finished candidate yet")
    if not 1 <= number <= len(journal):
        raise UserInputError(f"--candidate {number}: {src.path} holds candidates 1 to {len(journal)} (see `edgenas pareto {src.path}`)")
    record = journal[number - 1]
    if record["status"] != "trained":
        raise UserInputError(f"--candidate {number}: that candidate was {record['status']} "
                             f"({record.get('reason') or 'not trained'}); choose a trained one (see `edgenas pareto {src.path}`)")
    out = Path(out) if out else src.path.with_name(f"{src.path.name}-c{number}")
    RunDir.refuse_taken(out, hint="choose another --out")
    meta = {**src.meta, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "from_run": str(src.path.resolve()), "candidate": number, "candidate_key": record["key"]}
    run = RunDir.start(out, meta, resume=False)
    run.write(RunDir.ARCH, Arch.from_dict(record).to_dict())
    return run


def train_final(target: str, epochs: Optional[int] = None, device: Optional[str] = None, seed: int = 0,
                profile: Optional[str] = None, dataset: Optional[str] = None, data_dir: Optional[str] = None,
                out: Optional[str] = None, download: bool = False, log: Log = stderr_log, progress=None) -> dict:
    """Train TARGET (a run directory or an ARCH.json) and save the weights into its run directory."""
    from edgenas.tasks import task_for
    from edgenas.train import select_device

    dev = select_device(device)
    path = Path(target)
    if path.is_dir():
        run = RunDir.open(path)
        meta = run.meta
        prof = load_profile(profile) if profile else stored_profile(meta["profile"])
        task = task_for(meta.get("task", "classify"))
        data = run.load_data()
    else:
        prof = load_profile(profile or "demo")
        task = task_for(prof.task)
        run, data = _run_from_arch(path, prof, dataset, data_dir, out, download, seed, task, dev)
    arch = run.arch()
    epochs = epochs or prof.train.final_epochs
    log(f"training {arch} for {epochs} epochs on {dev}")
    started = time.monotonic()
    data = data.to(dev)
    on_epoch = lambda e, n, loss, acc, s: log(f"[train] epoch {e}/{n} loss {loss:.3f} train {acc:.1f}%")
    if progress:  # an edgenas.progress.Progress on a terminal
        progress.candidate("train", 0, str(arch), epochs)
        on_epoch = progress.epoch
    model, res = task.train(arch, data, epochs, prof, dev, candidate_seed(seed, f"train:{arch}"), on_epoch)
    if res.status != "trained":
        raise EdgenasError(f"training {arch} diverged (non-finite loss); {run.path / RunDir.WEIGHTS} was left as it was")
    test = task.test_metrics(model, data, dev)
    run.save_weights(model)
    params, macs = task.model_size(arch, run.meta["data"], prof)
    final = {"epochs": epochs, "status": res.status, "val_acc": res.val_acc, **test,
             "seconds": round(time.monotonic() - started, 2), "device": str(dev), "seed": seed}
    summary = run.read(RunDir.SUMMARY) if (run.path / RunDir.SUMMARY).exists() else {
        "arch": arch.to_dict(), "arch_str": str(arch), "task": prof.task,
        "params": params, "macs": macs,
        "profile": prof.name, "dataset": run.meta["dataset"]["name"], "versions": versions(), "run_dir": str(run.path),
        **{k: run.meta[k] for k in ORIGIN if k in run.meta},
    }
    summary["final_training"] = final
    run.write(RunDir.SUMMARY, summary)
    log(f"done: {arch}: " + ", ".join(f"{k} {v:.2f}%" for k, v in test.items()) + f"; weights in {run.path / RunDir.WEIGHTS}")
    return {"arch_str": str(arch), "run_dir": str(run.path), **final}
