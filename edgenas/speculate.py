"""Speculative search: while the strategy waits for one candidate, train those it may ask for next.

Decisions stay exactly those of the sequential search: the strategy only ever sees real answers,
in request order. Hypothetical answers serve one purpose — guessing which candidates to start
early, by replaying the (pure, deterministic) strategy from its real history plus a guess. A
candidate's result depends only on the seed and the candidate (``candidate_seed``), so training it
early changes nothing but the wall time. Finished speculative candidates are journaled, so a
resumed search reuses them; those the search ends up not needing are cancelled.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
from collections import Counter
from typing import Callable, Optional

from edgenas.search import Candidate, Outcome, SearchResult, Strategy

# Offsets (percent) around the last accuracy seen: the outcomes a guess is drawn from.
GUESS_OFFSETS = (-5.0, -1.0, -0.3, -0.1, -0.04, 0.0, 0.04, 0.1, 0.3, 1.0, 5.0)


def replay(factory: Callable[[], Strategy], answers: list[Outcome]) -> Optional[Candidate]:
    """The request a fresh strategy makes after ``answers``; None once it has finished."""
    strategy = factory()
    try:
        cand = next(strategy)
        for out in answers:
            cand = strategy.send(out)
        return cand
    except StopIteration:
        return None


def _branch(factory: Callable[[], Strategy], at, history: Optional[list], out: Outcome):
    """(strategy, request) after the hypothetical ``out``; None where the search ends there.

    ``at`` waits after ``history``: forked if it can be (one decision), else the history is replayed
    into a fresh strategy. A hypothetical that leads to an error (an impossible width, nothing
    within budget) is not speculated: were it real, the search itself would raise it.
    """
    try:
        if hasattr(at, "fork"):
            strategy = at.fork()
            return strategy, strategy.send(out)
        strategy = factory()
        cand = next(strategy)
        for answer in [*history, out]:
            cand = strategy.send(answer)
        return strategy, cand
    except StopIteration:
        return None
    except Exception:  # noqa: BLE001 - any error of a branch that is not (yet) the real one
        return None


def likely_next(factory: Callable[[], Strategy], answers: list[Outcome], guess: float, k: int, *,
                at: Optional[Strategy] = None) -> list[Candidate]:
    """Up to ``k`` candidates the strategy may request after the pending one, likeliest first.

    Breadth first over hypothetical outcomes of the pending request, then of the guessed ones:
    a candidate reached by more of the hypothetical outcomes comes first. ``at`` is the strategy
    waiting after ``answers``; one that can ``fork()`` makes each hypothetical cost one decision
    instead of a replay of the whole history.
    """
    forkable = hasattr(at, "fork")
    found: list[Candidate] = []
    frontier = [(at if forkable else None, None if forkable else list(answers))]
    while frontier and len(found) < k:
        next_frontier = []
        for strategy, history in frontier:
            reached: Counter = Counter()
            path = {}
            for offset in GUESS_OFFSETS:
                out = Outcome(min(max(guess + offset, 0.0), 100.0), min(guess, 99.0))
                branch = _branch(factory, strategy, history, out)
                if branch is not None:
                    reached[branch[1]] += 1
                    path.setdefault(branch[1], (branch[0], None if forkable else history + [out]))
            for cand, _ in reached.most_common():
                if cand not in found:
                    found.append(cand)
                    next_frontier.append(path[cand])
        frontier = next_frontier
    return found[:k]


# -- worker processes ----------------------------------------------------------------------------
_WORKER: dict = {}


def _worker_init(task_name: str, dataset: str, data_dir, profile, split_seed: int, device: str, threads: int, cancelled):
    import torch

    from edgenas.tasks import task_for

    torch.set_num_threads(threads)
    task = task_for(task_name)
    data = task.load_data(dataset, data_dir, profile, split_seed, False)
    _WORKER.update(task=task, data=data.to(device), profile=profile, device=torch.device(device), cancelled=cancelled)


class Cancelled(Exception):
    pass


def _train_one(task, data, profile, device, arch_dict: dict, epochs: int, seed: int, tag: str,
               stop: Callable[[], bool] = lambda: False) -> dict:
    """Train one candidate in a worker (process or Ray task), printing progress; TrainResult as a dict."""
    import dataclasses
    import sys

    from edgenas.space import Arch

    def on_epoch(epoch, total, loss, train_acc, seconds):
        print(f"{tag}: epoch {epoch}/{total} loss {loss:.3f} train {train_acc:.1f}%", file=sys.stderr, flush=True)
        if stop():
            raise Cancelled

    try:
        _, res = task.train(Arch.from_dict(arch_dict), data, epochs, profile, device, seed, on_epoch)
    except Cancelled:
        return {"status": "cancelled"}
    return dataclasses.asdict(res)


def _worker_train(arch_dict: dict, epochs: int, seed: int, key: str, tag: str) -> dict:
    w = _WORKER
    return _train_one(w["task"], w["data"], w["profile"], w["device"], arch_dict, epochs, seed, tag,
                      stop=lambda: key in w["cancelled"])


class WorkerPool:
    """``workers`` processes sharing one device, each holding the dataset in that device's memory."""

    def __init__(self, workers: int, task_name: str, dataset: str, data_dir, profile, split_seed: int, device: str):
        ctx = multiprocessing.get_context("spawn")
        self.manager = ctx.Manager()
        self.cancelled = self.manager.dict()
        threads = max(1, (os.cpu_count() or 1) // workers) if device == "cpu" else 1
        self.pool = cf.ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_worker_init,
            initargs=(task_name, dataset, data_dir, profile, split_seed, device, threads, self.cancelled),
        )

    def submit(self, cand: Candidate, seed: int, tag: str) -> cf.Future:
        return self.pool.submit(_worker_train, cand.arch.to_dict(), cand.epochs, seed, cand.key(), tag)

    def cancel(self, cand: Candidate, future: cf.Future) -> None:
        if not future.cancel():  # already running: it stops at its next epoch
            self.cancelled[cand.key()] = True

    def uncancel(self, cand: Candidate) -> None:
        self.cancelled.pop(cand.key(), None)

    def result(self, cand: Candidate, future: cf.Future) -> Optional[dict]:
        """The finished training's TrainResult as a dict; None if it was cancelled."""
        if future.cancelled():
            return None
        res = future.result()
        return None if res["status"] == "cancelled" else res

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.manager.shutdown()


def _ray_train(data, task_name: str, profile, device: str, arch_dict: dict, epochs: int, seed: int, tag: str) -> dict:
    """One candidate as a Ray task, on the GPU (or CPUs) Ray assigned to it (Ray cancels by killing it)."""
    import torch

    from edgenas.tasks import task_for

    dev = torch.device(device)
    return _train_one(task_for(task_name), data.to(dev), profile, dev, arch_dict, epochs, seed, tag)


class RayPool:
    """Candidates as Ray tasks, spread over the GPUs (and machines) of a Ray cluster.

    ``address`` is a running cluster's (``ray start --head`` …), or "local" to start one on this
    machine. On CUDA each task asks Ray for ``min(1, GPUs / workers)`` GPUs, so several small
    candidates share a GPU; the dataset goes to Ray's object store once.
    """

    def __init__(self, workers: int, task_name: str, dataset: str, data_dir, profile, split_seed: int, device: str,
                 address: str = "local"):
        try:
            import ray
        except ImportError:
            from edgenas.errors import MissingDependency

            raise MissingDependency("--ray needs Ray: pip install 'edgenas[ray]'") from None
        from edgenas.errors import UserInputError
        from edgenas.tasks import task_for

        self.ray = ray
        ray.init(address=None if address == "local" else address, include_dashboard=False,
                 logging_level="WARNING", ignore_reinit_error=True)
        gpus = ray.cluster_resources().get("GPU", 0)
        if device == "cuda" and not gpus:
            raise UserInputError("--ray: the Ray cluster has no GPU; use --device cpu or start Ray workers on GPU machines")
        resources = {"num_gpus": min(1.0, gpus / workers)} if device == "cuda" else {"num_cpus": 1}
        data = task_for(task_name).load_data(dataset, data_dir, profile, split_seed, False)
        self.data = ray.put(data)
        self.args = (task_name, profile, device)
        self.train = ray.remote(**resources)(_ray_train)
        self.refs: dict[str, object] = {}
        self.cancelled: set[str] = set()

    def submit(self, cand: Candidate, seed: int, tag: str) -> cf.Future:
        ref = self.train.remote(self.data, *self.args, cand.arch.to_dict(), cand.epochs, seed, tag)
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

    def result(self, cand: Candidate, future: cf.Future) -> Optional[dict]:
        try:
            return future.result()
        except (self.ray.exceptions.TaskCancelledError, self.ray.exceptions.WorkerCrashedError):
            if cand.key() in self.cancelled:
                return None
            raise

    def close(self) -> None:
        self.ray.shutdown()


def drive_speculative(factory: Callable[[], Strategy], evaluator, pool, slots: int, seed_of) -> SearchResult:
    """Like ``search.drive``, with up to ``slots`` candidates training at once in ``pool``.

    ``pool`` is a ``WorkerPool`` (one machine) or a ``RayPool`` (a Ray cluster): ``submit``,
    ``cancel``, ``uncancel``, ``result`` and ``close``.
    """
    strategy = factory()
    answers: list[Outcome] = []
    history = []
    running: dict[str, tuple[Candidate, dict, cf.Future]] = {}
    guess = 50.0

    def start(cand: Candidate, speculative: bool) -> bool:
        """Submit ``cand`` unless it is known or over budget; True if it is (now) running."""
        if cand.key() in running:
            pool.uncancel(cand)
            return True
        if evaluator.known(cand) is not None:
            return False
        record, skipped = evaluator.screen(cand)
        if skipped is not None:
            return False
        tag = evaluator.tag(cand, speculative)
        record = {**record, "speculative": speculative}  # started before the strategy asked for it
        running[cand.key()] = (cand, record, pool.submit(cand, seed_of(cand.key()), tag))
        return True

    def collect(done, pending: Candidate) -> None:
        for fut in done:
            key = next(k for k, (_, _, f) in running.items() if f is fut)
            c, record, _ = running.pop(key)
            res = pool.result(c, fut)
            if res is not None:
                evaluator.finished(c, record, res, speculative=c != pending)  # the tag: is it asked for yet?

    try:
        cand = next(strategy)
        while True:
            evaluator.count += 1
            out = evaluator.known(cand)
            if out is not None:
                evaluator.log(f"{evaluator.tag(cand)}: {out.status}, acc {out.acc:.2f}% (journal or speculation)")
            elif start(cand, speculative=False):
                wanted = [cand] + likely_next(factory, answers, guess, slots - 1, at=strategy)
                for c, _, fut in list(running.values()):
                    if c not in wanted:
                        pool.cancel(c, fut)
                for nxt in wanted[1:]:
                    if len(running) < slots:
                        start(nxt, speculative=True)
                while out is None:  # a candidate cancelled while its guess was stale is started again
                    start(cand, speculative=False)
                    while cand.key() in running:
                        done, _ = cf.wait([f for _, _, f in running.values()], return_when=cf.FIRST_COMPLETED)
                        collect(done, cand)
                    out = evaluator.known(cand)
            else:
                out = evaluator.known(cand)  # over a budget: screen() journaled it as skipped
            if out.usable:
                guess = out.acc
            answers.append(out)
            history.append((cand, out))
            cand = strategy.send(out)
    except StopIteration as stop:
        result: SearchResult = stop.value
        result.candidates = len(history)
        result.history = history
        return result
    finally:
        for c, _, fut in running.values():
            pool.cancel(c, fut)
