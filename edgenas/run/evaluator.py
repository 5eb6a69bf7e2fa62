"""Answering the strategy: from the journal, as over budget (never trained), or by training the candidate.

Each finished candidate is journaled before the strategy sees it, so a kill loses at most the
candidate in flight.
"""

from __future__ import annotations

import dataclasses
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from edgenas.config.memory_targets import KB, MEMORY_TARGETS
from edgenas.config.profile import Budget, Profile
from edgenas.config.runtimes import RUNTIMES
from edgenas.errors import ProfileError, UserInputError
from edgenas.run.ahead.latency_prefetch import LatencyPrefetch
from edgenas.run.meta import RunMeta
from edgenas.run.progress import Progress
from edgenas.run.rundir import RunDir
from edgenas.runtime.backend import is_available
from edgenas.runtime.cost import CostSource, FromTable, MeasuredHere, OnDevice
from edgenas.runtime.device_client import DeviceClient, read_token
from edgenas.runtime.latency_table import read_table
from edgenas.runtime.onnx_quantize import LATENCY_CALIBRATION_IMAGES, calibration_images
from edgenas.runtime.table_build import DeviceTimer, local_built_for
from edgenas.runtime.target import Target
from edgenas.search.footprint import Footprint, footprint
from edgenas.search.space import Arch
from edgenas.search.strategies import Candidate, Outcome
from edgenas.training.trainer import EpochCallback


def candidate_seed(seed: int, key: str) -> int:
    """A seed per candidate, so a resumed run retrains the candidate in flight identically."""
    return (zlib.crc32(key.encode()) + seed) % 2**31


@dataclass
class BudgetCheck:
    params: int
    macs: int
    latency_ms: float | None
    reason: str  # empty when within every budget


def memory_footprint(arch: Arch, shape, profile: Profile) -> Footprint | None:
    """The deployed classifier's memory on the budget's ``memory_target`` (None for other tasks).
    ``shape``: a ``run.meta.DataShape``."""
    if profile.task != "classify":
        return None
    return footprint(
        arch,
        in_channels=shape.in_channels,
        input_size=tuple(shape.input_size),
        outputs=shape.num_classes,
        target=MEMORY_TARGETS[profile.budget.memory_target],
    )


def memory_over(budget: Budget, memory: Footprint | None) -> str:
    """Why ``memory`` breaks the budget's memory limits ("" when it does not, or nothing is limited)."""
    if memory is None:
        return ""
    if budget.max_peak_memory_kb and memory.activations > budget.max_peak_memory_kb * KB:
        return (
            f"peak memory {memory.activations / KB:,.1f} KB > max_peak_memory_kb {budget.max_peak_memory_kb:,} "
            f"on {memory.target}"
        )
    if budget.max_flash_kb and memory.flash > budget.max_flash_kb * KB:
        return f"flash {memory.flash / KB:,.1f} KB > max_flash_kb {budget.max_flash_kb:,} on {memory.target}"
    return ""


def check_budget(
    arch: Arch,
    *,
    size: tuple[int, int],
    budget: Budget,
    latency_of: Callable[[Arch], float],
    memory: Footprint | None = None,
) -> BudgetCheck:
    """``size``: the deployed network's (params, MACs); ``memory``: its estimated footprint. Those are free
    to check; latency is measured only when they pass and a latency budget is set."""
    params, macs = size
    if budget.max_params and params > budget.max_params:
        return BudgetCheck(params, macs, None, f"params {params:,} > max_params {budget.max_params:,}")
    if budget.max_macs and macs > budget.max_macs:
        return BudgetCheck(params, macs, None, f"MACs {macs:,} > max_macs {budget.max_macs:,}")
    over = memory_over(budget, memory)
    if over:
        return BudgetCheck(params, macs, None, over)
    latency = None
    if budget.max_latency_ms:
        latency = latency_of(arch)
        if latency > budget.max_latency_ms:
            return BudgetCheck(
                params,
                macs,
                latency,
                f"latency {latency:.3f} ms > max_latency_ms {budget.max_latency_ms} on {budget.runtime}",
            )
    return BudgetCheck(params, macs, latency, "")


def _outcome(record: dict) -> Outcome:
    return Outcome(record["acc"], record["train_acc"], record["status"], record.get("reason", ""))


def latency_source(profile: Profile, meta: RunMeta, data=None) -> CostSource:
    """The source of candidate latencies a profile's budget names (``Budget.latency_from``): its latency
    table, else measurements (``measured_source``)."""
    if profile.budget.latency_from == "table":
        return table_source(profile, meta)
    return measured_source(profile, meta, data)


def measured_source(profile: Profile, meta: RunMeta, data=None) -> CostSource:
    """Where latency is measured for real: the budget's device, else this machine. ``data``: the run's
    ImageData, whose training images calibrate the candidates an INT8 runtime times (else random images do)."""
    b = profile.budget
    if b.device:
        return device_source(profile, meta)
    calibration = None
    if data is not None and RUNTIMES[b.runtime].precision == "int8":
        calibration = calibration_images(data, LATENCY_CALIBRATION_IMAGES)
    return MeasuredHere(Target.of_run(meta, b), calibration)


def device_source(profile: Profile, meta: RunMeta) -> OnDevice:
    """The budget's device server (``budget.device``, which the caller checked is set)."""
    b = profile.budget
    token = read_token(b.device_token_file, flag="budget.device_token_file")
    return OnDevice(DeviceClient(b.device, token=token, retry_s=b.device_retry_s), Target.of_run(meta, b))


def table_source(profile: Profile, meta: RunMeta) -> FromTable:
    """The budget's latency table, refused (one-line ``ProfileError``) unless built for this run's target
    and space: runtime, threads, batch, input shape, task and outputs always; the device and the runtime's
    version where they can be known (the budget's device answering, or this machine for a table built here)."""
    b, path = profile.budget, profile.budget.latency_table
    try:
        table = read_table(path)
    except UserInputError as e:
        raise ProfileError(f"budget.latency_table = {path!r}: {e}") from None
    target = Target.of_run(meta, b)
    expected = target.keys()
    if b.device:
        device = device_source(profile, meta)  # an OnDevice: its client times the table's parts
        device.check()
        expected = DeviceTimer(device.client, target).built_for()
    elif "device_url" not in table.built_for and is_available(b.runtime):
        expected = local_built_for(target)
    hint = f"build one for it with `edgenas latency-table --profile {profile.name}`"
    differs = table.mismatch(expected)
    if differs:
        raise ProfileError(f"budget.latency_table = {path!r} was built for {differs} (this run's); {hint}")
    missing = table.missing_parts(profile.search)
    if missing:
        raise ProfileError(
            f"budget.latency_table = {path!r} lacks {len(missing)} parts of this profile's space "
            f"(e.g. {missing[0]}); {hint}"
        )
    return FromTable(table, path)


def run_latency(
    run: RunDir, *, profile: Profile, arch: Arch, cache: dict, source: CostSource | None = None, data=None
) -> float:
    """Median latency of ``arch`` from the budget's source, obtained once per run (latency.jsonl,
    each record with the source's identity: runtime, threads, batch, and the device it ran on)."""
    key = str(arch)
    if key not in cache:
        source = source or latency_source(profile, run.meta, data)
        cache[key] = source.latency_ms(arch)
        run.record_latency(key, cache[key], source.identity())
    return cache[key]


class CandidateEvaluator:
    """Answers the strategy: journal → budget check → training. Journals every answer."""

    def __init__(
        self,
        run: RunDir,
        *,
        profile: Profile,
        data,
        task,
        device,
        seed: int,
        log: Progress,
        latency: CostSource | None = None,
    ):
        self.run, self.profile, self.data, self.task = run, profile, data, task
        self.device, self.seed, self.log = device, seed, log
        self.shape = run.meta.data
        self.threads = run.meta.threads  # the run's CPU threads (run.json; None in older runs: the policy's)
        self.done = {r["key"]: r for r in run.journal()}
        self.latency = latency or latency_source(profile, run.meta, data)
        self.latency_cache = run.latencies()
        ahead = self.latency.ahead and profile.budget.max_latency_ms
        self.prefetcher = LatencyPrefetch(self.latency.prepare, self.latency.measure) if ahead else None
        self.latency_seconds = 0.0  # this process's time waiting for candidates' latencies
        self.count = 0
        self.started = time.monotonic()

    def latency_of(self, arch: Arch) -> float:
        started = time.monotonic()
        try:
            if str(arch) not in self.latency_cache and self.prefetcher is not None:
                ms = self.prefetcher.take(arch)
                if ms is not None:
                    self._keep_latency(str(arch), ms)
            return run_latency(self.run, profile=self.profile, arch=arch, cache=self.latency_cache, source=self.latency)
        finally:
            self.latency_seconds += time.monotonic() - started

    def _keep_latency(self, key: str, ms: float) -> None:
        self.latency_cache[key] = ms
        self.run.record_latency(key, ms, self.latency.identity())

    def prefetch(self, cands: list[Candidate]) -> None:
        """Have a remote source measure these candidates' latencies now, in the background
        (those not known yet and within the params and MACs budgets)."""
        if self.prefetcher is None:
            return
        sized = [c for c in cands if self.known(c) is None and str(c.arch) not in self.latency_cache]
        self.prefetcher.ahead(
            [
                c.arch
                for c in sized
                if not check_budget(
                    c.arch,
                    size=self.task.model_size(c.arch, self.shape, self.profile),
                    budget=self.profile.budget,
                    latency_of=lambda a: 0.0,
                    memory=memory_footprint(c.arch, self.shape, self.profile),
                ).reason
            ]
        )

    def close(self, *, wait: bool) -> None:
        """Stop measuring ahead; keep (latency.jsonl) what was measured, so a resume need not again."""
        if self.prefetcher is not None:
            for key, ms in self.prefetcher.close(wait=wait).items():
                if key not in self.latency_cache:
                    self._keep_latency(key, ms)

    def tag(self, cand: Candidate, speculative: bool = False) -> str:
        where = "speculative" if speculative else f"#{self.count}"
        return f"[{cand.stage} {where}] {cand.arch} e{cand.epochs}"

    def known(self, cand: Candidate) -> Outcome | None:
        """The journaled answer, if this candidate was finished before (also by speculation)."""
        rec = self.done.get(cand.key())
        return None if rec is None else _outcome(rec)

    def screen(self, cand: Candidate) -> tuple[dict, Outcome | None]:
        """The candidate's record so far, and a ``skipped`` answer (journaled) if it breaks a budget."""
        memory = memory_footprint(cand.arch, self.shape, self.profile)
        check = check_budget(
            cand.arch,
            size=self.task.model_size(cand.arch, self.shape, self.profile),
            budget=self.profile.budget,
            latency_of=self.latency_of,
            memory=memory,
        )
        record = {
            "key": cand.key(),
            "stage": cand.stage,
            **cand.arch.to_dict(),
            "epochs": cand.epochs,
            "params": check.params,
            "macs": check.macs,
            "latency_ms": check.latency_ms,
            **({} if memory is None else {"peak_memory_bytes": memory.activations, "flash_bytes": memory.flash}),
        }
        if not check.reason:
            return record, None
        self.log(f"{self.tag(cand)}: skipped, over budget ({check.reason})")
        self.journal(
            {**record, "status": "skipped", "reason": check.reason, "acc": 0.0, "train_acc": 0.0, "seconds": 0.0}
        )
        return record, Outcome(0.0, 0.0, "skipped", check.reason)

    def journal(self, record: dict) -> Outcome:
        self.run.record(record)
        self.done[record["key"]] = record
        self.log.record(record)
        return _outcome(record)

    def finished(self, cand: Candidate, *, record: dict, res, speculative: bool = False) -> Outcome:
        """Journal a trained candidate (``res``: a TrainResult or its dict); ``speculative``: not asked for yet."""
        res = res if isinstance(res, dict) else dataclasses.asdict(res)
        self.log(
            f"{self.tag(cand, speculative)}: {res['status']}, {self.task.metric} {res['val_acc']:.2f}% in {res['seconds']:.1f}s"
        )
        return self.journal(
            {
                "speculative": False,
                **record,
                "status": res["status"],
                "reason": "",
                "acc": res["val_acc"],
                "train_acc": res["train_acc"],
                "seconds": res["seconds"],
            }
        )

    def on_epoch(self, tag: str) -> EpochCallback:
        def report(epoch: int, epochs: int, loss: float, train_acc: float, seconds: float) -> None:  # noqa: PLR0917 (an EpochCallback)
            self.log.epoch(
                epoch,
                epochs,
                f"{tag}: epoch {epoch}/{epochs} loss {loss:.3f} train {train_acc:.1f}% "
                f"({time.monotonic() - self.started:.0f}s elapsed)",
            )

        return report

    def __call__(self, cand: Candidate) -> Outcome:
        """Answer one request in this process: journal, budget, or training."""
        self.count += 1
        self.log.candidate(cand.stage, number=self.count, label=str(cand.arch), epochs=cand.epochs)
        known = self.known(cand)
        if known is not None:
            self.log.record(self.done[cand.key()])
            self.log(f"{self.tag(cand)}: from the journal, {known.status} acc {known.acc:.2f}%")
            return known
        record, skipped = self.screen(cand)
        if skipped is not None:
            return skipped
        _, res = self.task.train(
            cand.arch,
            data=self.data,
            epochs=cand.epochs,
            profile=self.profile,
            device=self.device,
            seed=candidate_seed(self.seed, cand.key()),
            on_epoch=self.on_epoch(self.tag(cand)),
            threads=self.threads,
        )
        return self.finished(cand, record=record, res=res)
