"""Profiles: frozen dataclasses loaded from TOML, validated once, and looked up by name or path.

A profile says what to search (strategy and ranges), how candidates train, what the target
device affords (budgets) and which data to use. Each setting's bounds are declared on its field
(``config/schema.py``) and checked here, so the code below trusts them. Built-in profiles live in
``profiles/`` and are shipped as the package ``edgenas.builtin_profiles``.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import urllib.parse
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from edgenas.config.memory_targets import MEMORY_TARGETS
from edgenas.config.plan import TrainPlan
from edgenas.config.runtimes import KIT_RUNTIMES, RUNTIMES
from edgenas.config.schema import build, check_fields, coerce, setting
from edgenas.config.strategies import (
    CONFIGS,
    STRATEGIES,
    EgnasConfig,
    RandomConfig,
    TrgConfig,
)
from edgenas.errors import ProfileError

TASKS = ("classify", "face")
LATENCY_FROM = ("measured", "device", "table")  # where a budget's latency comes from (``Budget.latency_from``)
MAX_INPUT_SIDE = 4096  # pixels; an image side beyond it is a typo on an edge device


@dataclass(frozen=True)
class Budget:
    """What the target affords; 0 means no limit. Latency is the median of batch ``batch``."""

    max_params: int = setting(0, ge=0)  # trainable parameters
    max_macs: int = setting(0, ge=0)  # multiply-accumulates per image
    max_latency_ms: float = setting(0.0, ge=0, le=1e7)  # median latency on ``runtime``
    # A microcontroller's memory (KB = 1024 bytes), estimated before training for ``memory_target``: the
    # activations' tensor arena (SRAM) and the model file (flash).
    max_peak_memory_kb: int = setting(0, ge=0, le=10**7)
    max_flash_kb: int = setting(0, ge=0, le=10**7)
    memory_target: str = setting("tflm-int8", choices=tuple(MEMORY_TARGETS))  # runtime and precision of both
    runtime: str = setting("onnxruntime-cpu", choices=tuple(RUNTIMES))  # where latency is measured
    threads: int = setting(1, ge=1, le=1024)  # CPU threads of CPU runtimes
    batch: int = setting(1, ge=1, le=4096)
    # Latency measured on an edge device running `edgenas_kit.py serve` ("" = on this machine). Its
    # token comes from $EDGENAS_DEVICE_TOKEN or device_token_file, never from the profile itself.
    device: str = ""  # "http://HOST:PORT"
    device_token_file: str = ""  # a file holding the token (relative to the working directory)
    device_retry_s: float = setting(60.0, gt=0, le=86_400)  # seconds an unanswering device is retried
    # A latency table (``edgenas latency-table``): candidates' latencies predicted from it, no device
    # time; the winner is still measured (on ``device`` when one is named). Relative to the working directory.
    latency_table: str = ""

    @property
    def latency_from(self) -> str:
        """Where candidates' latencies come from: "table" (predicted), "device" (its server) or "measured" (here)."""
        return "table" if self.latency_table else "device" if self.device else "measured"

    def __post_init__(self) -> None:
        check_fields(self, "budget")
        if not RUNTIMES[self.runtime].timed:
            raise ProfileError(f"budget.runtime = {self.runtime!r} is not allowed: {RUNTIMES[self.runtime].not_timed}")
        if self.device:
            problem = device_url_problem(self.device)
            if problem:
                raise ProfileError(f"budget.device = {self.device!r} is not allowed; {problem}")
            if self.runtime not in KIT_RUNTIMES:
                raise ProfileError(
                    f"budget.runtime = {self.runtime!r} cannot run on a device server (the device kit "
                    f"runs exported models); choose one of {', '.join(KIT_RUNTIMES)}"
                )
        elif self.device_token_file:
            raise ProfileError(
                "budget.device_token_file is set but budget.device is not: name the device's http://HOST:PORT too"
            )


def device_url_problem(url: str) -> str | None:
    """What is wrong with a device server's address (None when it is ``http://HOST:PORT``)."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "http" or not parts.hostname or port is None or parts.path not in ("", "/") or parts.query:
        return "give the device server's address as http://HOST:PORT (`edgenas_kit.py serve` prints it)"
    return None


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"  # used when --dataset is not given
    val_fraction: float = setting(0.1, gt=0, le=0.5)  # share of the training set held out to rank candidates
    input_size: tuple[int, int] | None = setting(None, item_ge=4, item_le=MAX_INPUT_SIDE, nullable=True)  # (H, W)
    channels: int | None = setting(None, choices=(1, 3), nullable=True)  # 1 (grayscale) or 3 (RGB), imagefolder

    def __post_init__(self) -> None:
        check_fields(self, "data")


@dataclass(frozen=True)
class FaceConfig:
    """The ``face`` task: embedding network trained with an additive angular margin (ArcFace)."""

    embedding_dim: int = setting(128, ge=2, le=65_536)
    scale: float = setting(64.0, gt=0, le=1024)  # ArcFace s
    margin: float = setting(0.5, ge=0, lt=math.pi / 2)  # ArcFace m (radians); cos(theta + m) needs m < pi/2
    val_identities: float = setting(0.2, gt=0, lt=0.5)  # share of identities in each of the val and test groups
    val_pairs: int = setting(600, ge=2, le=1_000_000)  # verification pairs drawn from each held-out group

    def __post_init__(self) -> None:
        check_fields(self, "face")


@dataclass(frozen=True)
class Profile:
    name: str
    source: str  # the file it was read from
    description: str = ""
    task: str = "classify"
    strategy: str = "egnas"
    search: EgnasConfig | TrgConfig | RandomConfig = field(default_factory=EgnasConfig)
    train: TrainPlan = field(default_factory=TrainPlan)
    budget: Budget = field(default_factory=Budget)
    data: DataConfig = field(default_factory=DataConfig)
    face: FaceConfig = field(default_factory=FaceConfig)

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))


SECTIONS = {"search": None, "train": TrainPlan, "budget": Budget, "data": DataConfig, "face": FaceConfig}
TOP_KEYS = {"description": str, "task": str, "strategy": str}


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _check_ranges(p: Profile, file: str) -> None:
    """The rules that tie two settings together (each setting's own bounds are on its field)."""
    s = p.search
    pairs = (("max_depth", "min_depth"), ("max_width", "min_width"))
    for high, low in pairs:
        if getattr(s, high) < getattr(s, low):
            raise ProfileError(
                f"{file}: search.{high} = {getattr(s, high)} is not allowed; "
                f"it must be >= search.{low} ({getattr(s, low)})"
            )
    # The width stage steps down from max_width while above min_width (the reference's rule): only
    # a whole number of steps ends exactly at min_width, never below it (nor below one channel).
    span = s.max_width - s.min_width
    if span % s.width_step:
        raise ProfileError(
            f"{file}: search.width_step = {s.width_step} is not allowed; it must divide "
            f"search.max_width - search.min_width ({span}), so the width stage ends at search.min_width"
        )


def _validate(p: Profile, file: str) -> None:
    if p.task not in TASKS:
        raise ProfileError(f"{file}: task = {p.task!r} is not allowed; choose one of {', '.join(TASKS)}")
    memory = [k for k in ("max_peak_memory_kb", "max_flash_kb") if getattr(p.budget, k)]
    if memory and p.task != "classify":
        raise ProfileError(
            f'{file}: budget.{memory[0]} is for task = "classify" (the memory model knows the '
            f"classifier's graph), not {p.task!r}; remove it"
        )
    _check_ranges(p, file)


def parse_profile(text: str, name: str, source: str) -> Profile:
    """Build a validated ``Profile`` from TOML text; errors are one-line ``ProfileError``s."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{source}: not valid TOML ({e})") from None
    return profile_from_dict(raw, name, source)


def stored_profile(stored: dict) -> Profile:
    """Rebuild a profile saved with ``Profile.to_dict()`` (as in a run's run.json)."""
    if not isinstance(stored, dict) or "name" not in stored:
        raise ProfileError("run.json: the stored profile is missing or malformed")
    raw = {k: stored[k] for k in TOP_KEYS if k in stored}
    raw.update(
        {s: {k: v for k, v in stored[s].items() if v is not None} for s in SECTIONS if isinstance(stored.get(s), dict)}
    )
    return profile_from_dict(raw, stored["name"], stored.get("source", "run.json"))


def profile_from_dict(raw: dict, name: str, source: str) -> Profile:
    """Validate a profile given as TOML-shaped data; errors are one-line ``ProfileError``s."""
    for key in raw:
        if key not in TOP_KEYS and key not in SECTIONS:
            allowed = ", ".join(TOP_KEYS) + ", and the tables " + ", ".join(f"[{s}]" for s in SECTIONS)
            raise ProfileError(f"{source}: unknown key {key}; allowed: {allowed}")
    top = {key: coerce(raw[key], tp, f"{source}: {key}") for key, tp in TOP_KEYS.items() if key in raw}
    strategy = top.get("strategy", "egnas")
    if strategy not in STRATEGIES:
        raise ProfileError(f"{source}: strategy = {strategy!r} is not allowed; choose one of {', '.join(STRATEGIES)}")
    sections = {
        section: build(cls or CONFIGS[strategy], table=raw.get(section, {}), file=source, section=section)
        for section, cls in SECTIONS.items()
    }
    profile = Profile(name=name, source=source, **top, **sections)
    _validate(profile, source)
    return profile


def builtin_names() -> list[str]:
    files = resources.files("edgenas.builtin_profiles").iterdir()
    return sorted(f.name[:-5] for f in files if f.name.endswith(".toml"))


def _is_path(text: str) -> bool:
    """A profile argument names a file when it looks like one: a .toml suffix or a path separator."""
    return text.endswith(".toml") or "/" in text or "\\" in text


def load_profile(name_or_path: str | Path) -> Profile:
    """A built-in profile by name (``tiny``, ``mobile``, ...) or a TOML file by path (``.toml`` or with a ``/``).

    A directory or file named like a built-in profile in the working directory does not hide it.
    """
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or _is_path(text):
        path = Path(text)
        if path.is_dir():
            raise ProfileError(
                f"profile {path} is a directory, not a profile file; give a built-in name "
                f"({', '.join(builtin_names())}) or a .toml file"
            )
        if not path.is_file():
            raise ProfileError(
                f"profile file {path} does not exist; give a built-in name "
                f"({', '.join(builtin_names())}) or a .toml path"
            )
        try:
            content = path.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors) is not TOML
        except UnicodeDecodeError as e:
            raise ProfileError(f"{path}: not UTF-8 text (byte {e.start}); save the profile as UTF-8") from None
        except OSError as e:
            raise ProfileError(f"profile file {path} cannot be read ({e.strerror})") from None
        return parse_profile(content, path.stem, str(path))
    if text not in builtin_names():
        raise ProfileError(
            f"unknown profile {text!r}; built-in profiles: {', '.join(builtin_names())}, or give a .toml path"
        )
    res = resources.files("edgenas.builtin_profiles") / f"{text}.toml"
    return parse_profile(res.read_text(encoding="utf-8"), text, f"profiles/{text}.toml")


def list_profiles() -> list[Profile]:
    return [load_profile(n) for n in builtin_names()]
