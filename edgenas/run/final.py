"""``edgenas train``: train a discovered architecture from scratch under the final-training protocol."""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timezone
from pathlib import Path

from edgenas.config.profile import Profile, load_profile, stored_profile
from edgenas.errors import EdgenasError, ParamError, RunDirError, TrainingStopped
from edgenas.run.discover import check_path, check_seed, check_threads
from edgenas.run.evaluator import candidate_seed
from edgenas.run.loading import load_run_data
from edgenas.run.meta import run_meta, versions
from edgenas.run.progress import STDERR, Log, as_progress, epoch_lines
from edgenas.run.rundir import RunDir
from edgenas.run.stop_signals import stop_requests
from edgenas.search.space import Arch, load_arch
from edgenas.training.checkpoint import Checkpointing
from edgenas.training.tasks import Task, task_for
from edgenas.training.threads import plan_threads, torch_threads
from edgenas.training.trainer import select_device


def _run_from_arch(
    arch_path: Path, *, profile: Profile, task: Task, dataset: str | None, data_dir, out, download, seed: int, device
) -> tuple[RunDir, object]:
    """A run directory for a bare ARCH.json, so its result can be exported like a discovered one."""
    try:
        arch = load_arch(arch_path)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ParamError(
            "target", str(arch_path), f"not a valid architecture file ({' '.join(str(e).split())[:160]})"
        ) from None
    name = dataset or profile.data.dataset
    out = Path(out) if out else Path("runs") / f"train-{arch_path.stem}-{name}"
    RunDir.refuse_taken(out, hint="choose another {out}")
    data = task.load_data(name, data_dir=data_dir, profile=profile, seed=seed, download=download)
    meta = run_meta(
        profile,
        task=profile.task,
        dataset=name,
        data_dir=data_dir,
        data=data,
        extra=task.extra_meta(data),
        seed=seed,
        device=device,
    )
    run = RunDir.start(out, meta, resume=False)
    run.write(RunDir.ARCH, arch.to_dict())
    return run, data


def candidate_run(run_dir: str | Path, number: int, *, out: str | Path | None = None) -> RunDir:
    """A new run directory holding candidate ``number`` (1-based, journal order) of ``run_dir``'s
    search as its architecture; its run.json records where it came from."""
    src = RunDir.open(run_dir)
    journal = src.journal()
    if not 1 <= number <= len(journal):
        held = f"holds candidates 1 to {len(journal)}" if journal else "has no finished candidate yet"
        raise ParamError("candidate", number, f"{src.path} {held} (see `edgenas pareto {src.path}`)")
    record = journal[number - 1]
    if record["status"] != "trained":
        raise ParamError(
            "candidate",
            number,
            f"that candidate was {record['status']} "
            f"({record.get('reason') or 'not trained'}); choose a trained one (see `edgenas pareto {src.path}`)",
        )
    out = Path(out) if out else src.path.with_name(f"{src.path.name}-c{number}")
    RunDir.refuse_taken(out, hint="choose another {out}")
    meta = dataclasses.replace(
        src.meta,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        origin={"from_run": str(src.path.resolve()), "candidate": number, "candidate_key": record["key"]},
    )
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
    run, data = _run_from_arch(
        path,
        profile=prof,
        task=task,
        dataset=dataset,
        data_dir=data_dir,
        out=out,
        download=download,
        seed=seed,
        device=device,
    )
    return run, prof, task, data


def _resume_checkpoint(run: RunDir, *, arch: Arch, epochs, seed, threads, profile, device) -> dict:
    """The run's checkpoint, checked against what was asked (an explicit value must be the checkpoint's own)."""
    ckpt = run.checkpoint()
    if ckpt is None:
        raise ParamError(
            "resume",
            True,
            f"{run.path} holds no unfinished training (no {RunDir.CHECKPOINT}); train it without {{resume}}",
        )
    if ckpt["arch"] != str(arch):
        raise RunDirError(
            f"{run.path / RunDir.CHECKPOINT} is of {ckpt['arch']}, not of {run.path / RunDir.ARCH}'s "
            f"{arch}; delete the checkpoint to train from the start"
        )
    asked = {"epochs": epochs, "seed": seed, "threads": threads, "device": device}
    for name, value in asked.items():
        if value is not None and value != ckpt[name]:
            raise ParamError(
                name,
                value,
                f"the training in {run.path} was started with {ckpt[name]}, and --resume "
                f"continues it as it was; leave {{{name}}} out (or give {ckpt[name]})",
            )
    if profile is not None and load_profile(profile).train != stored_profile(ckpt["profile"]).train:
        raise ParamError(
            "profile",
            profile,
            f"its [train] differs from the one the training in {run.path} was "
            "started with; leave {profile} out to continue it",
        )
    return ckpt


def _open_resume(target, **asked):
    """(run directory, profile, task, data, checkpoint) of a stopped training to continue."""
    if not Path(target).is_dir():
        raise ParamError(
            "resume", True, f"{target} is not a run directory; give the run directory of the training to continue"
        )
    run = RunDir.open(target)
    ckpt = _resume_checkpoint(run, arch=run.arch(), **asked)
    return run, stored_profile(ckpt["profile"]), task_for(run.meta.task), load_run_data(run), ckpt


def _checkpoint_every(value, profile: Profile) -> int:
    if value is None:
        return profile.train.checkpoint_every
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ParamError(
            "checkpoint_every", value, "give an integer >= 0 (epochs between checkpoints; 0: only when stopped)"
        )
    return value


def train_final(
    target: str | Path,
    *,
    epochs: int | None = None,
    device: str | None = None,
    seed: int | None = None,
    profile: str | None = None,
    dataset: str | None = None,
    data_dir: str | Path | None = None,
    out: str | Path | None = None,
    download: bool = False,
    threads: int | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    log: Log = STDERR,
) -> dict:
    """Train TARGET (a run directory or an ARCH.json) and save the weights into its run directory.

    ``epochs`` defaults to the profile's ``train.final_epochs``; ``profile``, ``dataset``,
    ``data_dir``, ``out`` and ``download`` apply to an ARCH.json (a run directory knows its own).
    A checkpoint (``checkpoint.pt``) is written every ``checkpoint_every`` epochs (default: the
    profile's ``train.checkpoint_every``) and when Ctrl-C or SIGTERM stops the training (after the
    current epoch; ``TrainingStopped``). ``resume`` continues from it, with its own epochs, seed,
    threads, device and protocol, and ends with the weights of an uninterrupted training (bit-identical
    on the CPU). Earlier final weights are kept as ``model.N.pt``, never replaced silently.
    """
    log = as_progress(log)
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise ParamError("epochs", epochs, "give an integer >= 1")
    threads = check_threads(threads)
    out, data_dir = check_path("out", out), check_path("data_dir", data_dir)
    if seed is not None:
        check_seed(seed)
    if resume:
        run, prof, task, data, ckpt = _open_resume(
            target, epochs=epochs, seed=seed, threads=threads, profile=profile, device=device
        )
        seed, dev = ckpt["seed"], select_device(ckpt["device"])
    else:
        seed, dev, ckpt = 0 if seed is None else seed, select_device(device), None
        run, prof, task, data = _open_target(
            target,
            profile=profile,
            dataset=dataset,
            data_dir=data_dir,
            out=out,
            download=download,
            seed=seed,
            device=dev,
        )
    every = _checkpoint_every(checkpoint_every, prof)
    with run.lock("train"):
        arch = run.arch()
        held = None if resume else run.checkpoint()
        if held is not None:
            raise ParamError(
                "resume",
                False,
                f"{run.path} holds an unfinished training ({held['state']['epoch']} of "
                f"{held['epochs']} epochs, {RunDir.CHECKPOINT}): continue it with {{resume}}, or delete "
                "that file to train from the start",
            )
        if ckpt is not None:
            epochs, threads = ckpt["epochs"], ckpt["threads"]
        else:
            epochs = epochs or prof.train.final_epochs
            threads = final_threads(prof, task=task, data=data, arch=arch, threads=threads)
        done = ckpt["state"]["epoch"] if ckpt else 0
        log(
            f"training {arch} for {epochs} epochs on {dev} ({threads} CPU thread{'s' if threads != 1 else ''})"
            + (f", from the checkpoint after epoch {done}" if done else "")
        )
        started = time.monotonic()
        data = data.to(dev)
        on_epoch = epoch_lines(log, prefix="[train] ", stage="train", arch=arch, epochs=epochs)
        model, res = _train_checkpointed(
            run,
            task=task,
            prof=prof,
            arch=arch,
            data=data,
            dev=dev,
            seed=seed,
            epochs=epochs,
            threads=threads,
            every=every,
            ckpt=ckpt,
            on_epoch=on_epoch,
        )
        if res.status != "trained":
            raise EdgenasError(
                f"training {arch} diverged (non-finite loss); {run.path / RunDir.WEIGHTS} was left as it was"
            )
        with torch_threads(threads):
            test = task.test_metrics(model, data, dev)
        kept = run.keep_weights()
        run.save_weights(model)
        origin = f"final_epochs ({epochs})" if epochs == prof.train.final_epochs else f"--epochs ({epochs})"
        final = {
            "epochs": epochs,
            "status": res.status,
            "val_acc": res.val_acc,
            **test,
            "test_from": origin,
            "seconds": round(time.monotonic() - started, 2),
            "device": str(dev),
            "seed": seed,
            "threads": threads,
        }
        _record(run, profile=prof, task=task, final=final, kept=kept)
        run.drop_checkpoint()
    if kept:
        log(f"the earlier weights are kept as {run.path / kept} (their figures: summary.json's earlier_models)")
    log(
        f"done: {arch}: "
        + ", ".join(f"{k} {v:.2f}%" for k, v in test.items())
        + f" (after {final['test_from']}); weights in {run.path / RunDir.WEIGHTS}"
    )
    return {"arch_str": str(arch), "run_dir": str(run.path), **final} | ({"kept_earlier_weights": kept} if kept else {})


def _train_checkpointed(
    run: RunDir,
    *,
    task: Task,
    prof: Profile,
    arch: Arch,
    data,
    dev,
    seed: int,
    epochs: int,
    threads: int,
    every: int,
    ckpt: dict | None,
    on_epoch,
):
    """The training, checkpointed into ``run`` every ``every`` epochs and on Ctrl-C/SIGTERM (then
    ``TrainingStopped``), from ``ckpt`` where given."""
    facts = {
        "arch": str(arch),
        "epochs": epochs,
        "seed": seed,
        "threads": threads,
        "device": dev.type,
        "profile": prof.to_dict(),
    }
    with stop_requests() as stop:
        checkpointing = Checkpointing(
            save=lambda state: run.save_checkpoint(facts | {"state": state}),
            every=every,
            stop=stop,
            state=ckpt["state"] if ckpt else None,
        )
        model, res = task.train(
            arch,
            data=data,
            epochs=epochs,
            profile=prof,
            device=dev,
            seed=candidate_seed(seed, f"train:{arch}"),
            on_epoch=on_epoch,
            threads=threads,
            checkpoint=checkpointing,
        )
    if res.status == "stopped":
        raise TrainingStopped(
            f"{stop.name}: training stopped after epoch {res.epochs} of {epochs}, saved in "
            f"{run.path / RunDir.CHECKPOINT}; continue it with `edgenas train {run.path} --resume`",
            exit_code=stop.exit_code,
        )
    return model, res


def final_threads(profile: Profile, *, task: Task, data, arch: Arch, threads: int | None) -> int:
    """The CPU threads of a final training: ``threads``, else the profile's ``train.threads``, else the policy's."""
    _, macs = task.model_size(arch, data, profile)
    plan = profile.train if threads is None else dataclasses.replace(profile.train, threads=threads)
    return plan_threads(plan, forward_macs=macs, train_images=len(data.train))


def _earlier_figures(summary: dict) -> dict:
    """The figures of the final weights summary.json describes (a `train`'s, or a search's own)."""
    if "final_training" in summary:
        return dict(summary["final_training"])
    return {
        k: v
        for k, v in summary.items()
        if k.startswith("test_") or k in ("final_epochs", "winner_epochs", "val_acc", "seed")
    }


def _record(run: RunDir, *, profile: Profile, task: Task, final: dict, kept: str | None = None) -> None:
    """summary.json with ``final_training``; its headline test figures become the current model's; the
    figures of the weights ``kept`` (model.N.pt) go to ``earlier_models``."""
    arch = run.arch()
    if (run.path / RunDir.SUMMARY).exists():
        summary = run.read(RunDir.SUMMARY)
        if kept:
            summary.setdefault("earlier_models", []).append({"weights": kept, **_earlier_figures(summary)})
    else:
        params, macs = task.model_size(arch, run.meta.data, profile)
        summary = {
            "arch": arch.to_dict(),
            "arch_str": str(arch),
            "task": profile.task,
            "params": params,
            "macs": macs,
            "profile": profile.name,
            "dataset": run.meta.dataset.name,
            "versions": versions(),
            "run_dir": str(run.path),
            **(run.meta.origin or {}),
        }
        if kept:
            summary["earlier_models"] = [{"weights": kept}]  # no summary.json described them
    summary["final_training"] = final
    summary.update({k: v for k, v in final.items() if k.startswith("test_")})  # test_from too
    run.write(RunDir.SUMMARY, summary)
