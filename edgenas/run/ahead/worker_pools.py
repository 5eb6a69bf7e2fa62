"""Where candidates train at once: worker processes sharing one device, or Ray tasks across a cluster.

Both follow ``edgenas.search.speculation.Pool``; the speculative driver decides what they train.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import logging
import multiprocessing
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from edgenas.config.profile import Profile
from edgenas.errors import ParamError
from edgenas.search.space import Arch
from edgenas.search.strategies import Candidate
from edgenas.training.tasks import task_for


@dataclass(frozen=True)
class PoolSpec:
    """What every worker needs to load the run's data itself (it is not sent over a pipe)."""

    profile: Profile
    dataset: str
    data_dir: str | None
    split_seed: int
    device: str  # "cpu" or "cuda"
    threads: int | None = None  # CPU threads of each candidate's training (the run's; None: the policy's)

    def load(self):
        return task_for(self.profile.task).load_data(
            self.dataset, data_dir=self.data_dir, profile=self.profile, seed=self.split_seed, download=False
        )


_WORKER: dict = {}


def _worker_init(spec: PoolSpec, cancelled):
    if spec.threads:
        torch.set_num_threads(spec.threads)  # loading the data too
    task = task_for(spec.profile.task)
    _WORKER.update(
        task=task,
        data=spec.load().to(spec.device),
        profile=spec.profile,
        device=torch.device(spec.device),
        cancelled=cancelled,
        threads=spec.threads,
    )


class Cancelled(Exception):
    pass


def _train_one(
    task,
    *,
    data,
    profile,
    device,
    arch_dict: dict,
    epochs: int,
    seed: int,
    tag: str,
    stop: Callable[[], bool] = lambda: False,
    threads: int | None = None,
) -> dict:
    """Train one candidate in a worker (process or Ray task), printing progress; TrainResult as a dict."""

    def on_epoch(epoch, total, loss, train_acc, seconds):  # noqa: PLR0917 (an EpochCallback: called positionally)
        print(f"{tag}: epoch {epoch}/{total} loss {loss:.3f} train {train_acc:.1f}%", file=sys.stderr, flush=True)
        if stop():
            raise Cancelled

    try:
        _, res = task.train(
            Arch.from_dict(arch_dict),
            data=data,
            epochs=epochs,
            profile=profile,
            device=device,
            seed=seed,
            on_epoch=on_epoch,
            threads=threads,
        )
    except Cancelled:
        return {"status": "cancelled"}
    return dataclasses.asdict(res)


def _worker_train(arch_dict: dict, *, epochs: int, seed: int, key: str, tag: str) -> dict:
    w = _WORKER
    return _train_one(
        w["task"],
        data=w["data"],
        profile=w["profile"],
        device=w["device"],
        arch_dict=arch_dict,
        epochs=epochs,
        seed=seed,
        tag=tag,
        stop=lambda: key in w["cancelled"],
        threads=w["threads"],
    )


class WorkerPool:
    """``workers`` processes sharing one device, each holding the dataset in that device's memory."""

    def __init__(self, workers: int, spec: PoolSpec):
        ctx = multiprocessing.get_context("spawn")
        self.manager = ctx.Manager()
        self.cancelled = self.manager.dict()
        self.pool = cf.ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_worker_init, initargs=(spec, self.cancelled)
        )

    def submit(self, cand: Candidate, seed: int, tag: str) -> cf.Future:
        return self.pool.submit(
            _worker_train, cand.arch.to_dict(), epochs=cand.epochs, seed=seed, key=cand.key(), tag=tag
        )

    def cancel(self, cand: Candidate, future: cf.Future) -> None:
        if not future.cancel():  # already running: it stops at its next epoch
            self.cancelled[cand.key()] = True

    def uncancel(self, cand: Candidate) -> None:
        self.cancelled.pop(cand.key(), None)

    def result(self, cand: Candidate, future: cf.Future) -> dict | None:
        """The finished training's TrainResult as a dict; None if it was cancelled."""
        if future.cancelled():
            return None
        res = future.result()
        return None if res["status"] == "cancelled" else res

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.manager.shutdown()


def _ray_train(
    data, *, profile, device: str, threads: int | None, arch_dict: dict, epochs: int, seed: int, tag: str
) -> dict:
    """One candidate as a Ray task, on the GPU (or CPUs) Ray assigned to it (Ray cancels by killing it)."""
    dev = torch.device(device)
    return _train_one(
        task_for(profile.task),
        data=data.to(dev),
        profile=profile,
        device=dev,
        arch_dict=arch_dict,
        epochs=epochs,
        seed=seed,
        tag=tag,
        threads=threads,
    )


class RayPool:
    """Candidates as Ray tasks, spread over the GPUs (and machines) of a Ray cluster.

    ``address`` is a running cluster's (``ray start --head`` …), or "local" to start one on this
    machine. On CUDA each task asks Ray for ``min(1, GPUs / workers)`` GPUs, so several small
    candidates share a GPU; the dataset goes to Ray's object store once.
    """

    def __init__(self, workers: int, spec: PoolSpec, *, address: str = "local"):
        try:
            import ray
        except ImportError:
            raise ParamError("ray", address, "Ray is not installed: pip install 'edgenas[ray]'") from None
        self.ray = ray
        ray.init(
            address=None if address == "local" else address,
            include_dashboard=False,
            logging_level=logging.WARNING,
            ignore_reinit_error=True,
        )
        gpus = ray.cluster_resources().get("GPU", 0)
        if spec.device == "cuda" and not gpus:
            raise ParamError(
                "ray", address, "the Ray cluster has no GPU; train on the CPU or start Ray workers on GPU machines"
            )
        resources = {"num_gpus": min(1.0, gpus / workers)} if spec.device == "cuda" else {"num_cpus": 1}
        self.data = ray.put(spec.load())
        self.args = {"profile": spec.profile, "device": spec.device, "threads": spec.threads}
        # Ray's stubs type a remote function by its positional arity only: a keyword-only one matches no overload
        self.train: Any = ray.remote(**resources)(_ray_train)  # type: ignore[arg-type]
        self.refs: dict[str, object] = {}
        self.cancelled: set[str] = set()

    def submit(self, cand: Candidate, seed: int, tag: str) -> cf.Future:
        ref = self.train.remote(
            self.data, **self.args, arch_dict=cand.arch.to_dict(), epochs=cand.epochs, seed=seed, tag=tag
        )
        self.refs[cand.key()] = ref
        self.cancelled.discard(cand.key())
        return ref.future()

    def cancel(self, cand: Candidate, future: cf.Future) -> None:
        ref = self.refs.get(cand.key())
        if ref is not None and not future.done():
            self.cancelled.add(cand.key())
            self.ray.cancel(ref, force=True)

    def uncancel(self, cand: Candidate) -> None:
        pass  # a cancelled Ray task is gone; the driver submits it again when it is wanted

    def result(self, cand: Candidate, future: cf.Future) -> dict | None:
        try:
            return future.result()
        except (self.ray.exceptions.TaskCancelledError, self.ray.exceptions.WorkerCrashedError):
            if cand.key() in self.cancelled:
                return None
            raise

    def close(self) -> None:
        self.ray.shutdown()
