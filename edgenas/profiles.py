"""Profiles: frozen dataclasses loaded from TOML, validated, and looked up by name or path.

A profile says what to search (strategy and ranges), how candidates train, what the target
device affords (budgets) and which data to use. Built-in profiles live in ``profiles/`` and are
shipped as the package ``edgenas.builtin_profiles``.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Optional

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from edgenas.bench import RUNTIMES
from edgenas.errors import ProfileError
from edgenas.search import CONFIGS, STRATEGIES, EgnasConfig
from edgenas.space import KERNELS
from edgenas.train import PROTOCOLS, TrainPlan

TASKS = ("classify", "face")


@dataclass(frozen=True)
class Budget:
    """What the target affords; 0 means no limit. Latency is the median of batch ``batch``."""

    max_params: int = 0  # trainable parameters
    max_macs: int = 0  # multiply-accumulates per image
    max_latency_ms: float = 0.0  # median latency on ``runtime``
    runtime: str = "onnxruntime-cpu"  # where latency is measured (see RUNTIMES)
    threads: int = 1  # CPU threads of CPU runtimes
    batch: int = 1

    @property
    def active(self) -> bool:
        return bool(self.max_params or self.max_macs or self.max_latency_ms)


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"  # used when --dataset is not given
    val_fraction: float = 0.1  # share of the training set held out to rank candidates
    input_size: Optional[tuple[int, int]] = None  # (H, W) resize; needed for imagefolder data
    channels: Optional[int] = None  # 1 (grayscale) or 3 (RGB) for imagefolder data


@dataclass(frozen=True)
class FaceConfig:
    """The ``face`` task: embedding network trained with an additive angular margin (ArcFace)."""

    embedding_dim: int = 128
    scale: float = 64.0  # ArcFace s
    margin: float = 0.5  # ArcFace m (radians)
    val_identities: float = 0.2  # share of identities held out of training for verification pairs
    val_pairs: int = 600  # verification pairs built from the held-out identities (half same-person)


@dataclass(frozen=True)
class Profile:
    name: str
    source: str  # the file it was read from
    description: str = ""
    task: str = "classify"
    strategy: str = "egnas"
    search: object = field(default_factory=EgnasConfig)
    train: TrainPlan = field(default_factory=TrainPlan)
    budget: Budget = field(default_factory=Budget)
    data: DataConfig = field(default_factory=DataConfig)
    face: FaceConfig = field(default_factory=FaceConfig)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return _plain(d)


SECTIONS = {"search": None, "train": TrainPlan, "budget": Budget, "data": DataConfig, "face": FaceConfig}
TOP_KEYS = ("description", "task", "strategy")


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _type_name(tp) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _coerce(value, tp, where: str):
    """Check ``value`` against the annotation ``tp``; return it in the dataclass's type."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union and type(None) in args:
        return _coerce(value, next(a for a in args if a is not type(None)), where)
    if origin is tuple:
        if not isinstance(value, list):
            raise ProfileError(f"{where}: must be a list, got {value!r}")
        item = args[0]
        if len(args) == 2 and args[1] is not Ellipsis and len(value) != len(args):
            raise ProfileError(f"{where}: must be a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, item, where) for v in value)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp in (str, bool) and isinstance(value, tp):
        return value
    raise ProfileError(f"{where}: must be {_type_name(tp)}, got {value!r}")


def _build(cls, table: dict, file: str, section: str):
    if not isinstance(table, dict):
        raise ProfileError(f"{file}: [{section}] must be a table")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in table.items():
        if key not in names:
            raise ProfileError(f"{file}: unknown key {section}.{key}; allowed in [{section}]: {', '.join(names)}")
        values[key] = _coerce(value, hints[key], f"{file}: {section}.{key}")
    return cls(**values)


def _check(cond: bool, file: str, key: str, allowed: str, value) -> None:
    if not cond:
        raise ProfileError(f"{file}: {key} = {value!r} is not allowed; {allowed}")


def _validate(p: Profile, file: str) -> None:
    s = p.search
    _check(p.task in TASKS, file, "task", f"choose one of {', '.join(TASKS)}", p.task)
    _check(s.min_depth >= 1, file, "search.min_depth", "it must be >= 1", s.min_depth)
    _check(s.max_depth >= s.min_depth, file, "search.max_depth", f"it must be >= search.min_depth ({s.min_depth})", s.max_depth)
    _check(s.min_width >= 1, file, "search.min_width", "it must be >= 1", s.min_width)
    _check(s.max_width >= s.min_width, file, "search.max_width", f"it must be >= search.min_width ({s.min_width})", s.max_width)
    _check(s.width_step >= 1, file, "search.width_step", "it must be >= 1", s.width_step)
    # The width stage steps down from max_width while above min_width (the reference's rule): only
    # a whole number of steps ends exactly at min_width, never below it (nor below one channel).
    span = s.max_width - s.min_width
    _check(span % s.width_step == 0, file, "search.width_step",
           f"it must divide search.max_width - search.min_width ({span}), so the width stage ends at search.min_width", s.width_step)
    _check(s.epochs >= 1, file, "search.epochs", "it must be >= 1", s.epochs)
    _check(all(k in KERNELS for k in s.micro_kernels), file, "search.micro_kernels", f"each must be one of {KERNELS}", list(s.micro_kernels))
    if isinstance(s, EgnasConfig):
        _check(s.micro_epochs >= 1, file, "search.micro_epochs", "it must be >= 1", s.micro_epochs)
        for key in ("add_epochs_depth", "add_epochs_width", "depth_patience", "width_patience"):
            _check(getattr(s, key) >= 0, file, f"search.{key}", "it must be >= 0", getattr(s, key))
        _check(s.micro_param_slack >= 0, file, "search.micro_param_slack", "it must be >= 0", s.micro_param_slack)
    t = p.train
    _check(t.protocol in PROTOCOLS, file, "train.protocol", f"choose one of {', '.join(PROTOCOLS)}", t.protocol)
    _check(t.batch_size >= 1, file, "train.batch_size", "it must be >= 1", t.batch_size)
    _check(t.lr > 0, file, "train.lr", "it must be > 0", t.lr)
    for key in ("momentum", "weight_decay", "grad_clip", "crop_padding", "cutout"):
        _check(getattr(t, key) >= 0, file, f"train.{key}", "it must be >= 0", getattr(t, key))
    _check(t.final_epochs >= 1, file, "train.final_epochs", "it must be >= 1", t.final_epochs)
    _check(t.fast_batch_size >= 1, file, "train.fast_batch_size", "it must be >= 1", t.fast_batch_size)
    _check(0 <= t.warmup_fraction < 1, file, "train.warmup_fraction", "it must be in [0, 1)", t.warmup_fraction)
    b = p.budget
    for key in ("max_params", "max_macs", "max_latency_ms"):
        _check(getattr(b, key) >= 0, file, f"budget.{key}", "it must be >= 0 (0 = no limit)", getattr(b, key))
    _check(b.runtime in RUNTIMES, file, "budget.runtime", f"choose one of {', '.join(RUNTIMES)}", b.runtime)
    _check(b.threads >= 1, file, "budget.threads", "it must be >= 1", b.threads)
    _check(b.batch >= 1, file, "budget.batch", "it must be >= 1", b.batch)
    d = p.data
    _check(0.0 < d.val_fraction <= 0.5, file, "data.val_fraction", "it must be in (0, 0.5]", d.val_fraction)
    _check(d.input_size is None or min(d.input_size) >= 4, file, "data.input_size", "give [H, W], each >= 4", d.input_size)
    _check(d.channels in (None, 1, 3), file, "data.channels", "choose 1 (grayscale) or 3 (RGB)", d.channels)
    f = p.face
    _check(f.embedding_dim >= 2, file, "face.embedding_dim", "it must be >= 2", f.embedding_dim)
    _check(f.scale > 0, file, "face.scale", "it must be > 0", f.scale)
    _check(0 <= f.margin < 1.6, file, "face.margin", "it must be in [0, 1.6) radians", f.margin)
    _check(0 < f.val_identities < 1, file, "face.val_identities", "it must be in (0, 1)", f.val_identities)
    _check(f.val_pairs >= 2, file, "face.val_pairs", "it must be >= 2", f.val_pairs)


def parse_profile(text: str, name: str, source: str) -> Profile:
    """Build a validated ``Profile`` from TOML text; errors are one-line ``ProfileError``s."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{source}: not valid TOML ({e})") from None
    return profile_from_dict(raw, name, source)


def stored_profile(stored: dict) -> Profile:
    """Rebuild a profile saved with ``Profile.to_dict()`` (as in a run's run.json)."""
    raw = {k: stored[k] for k in TOP_KEYS if k in stored}
    raw.update({s: {k: v for k, v in stored[s].items() if v is not None} for s in SECTIONS if s in stored})
    return profile_from_dict(raw, stored["name"], stored.get("source", "run.json"))


def profile_from_dict(raw: dict, name: str, source: str) -> Profile:
    """Validate a profile given as TOML-shaped data; errors are one-line ``ProfileError``s."""
    for key in raw:
        if key not in TOP_KEYS and key not in SECTIONS:
            allowed = ", ".join(TOP_KEYS) + ", and the tables " + ", ".join(f"[{s}]" for s in SECTIONS)
            raise ProfileError(f"{source}: unknown key {key}; allowed: {allowed}")
    top = {}
    for key, tp in (("description", str), ("task", str), ("strategy", str)):
        if key in raw:
            top[key] = _coerce(raw[key], tp, f"{source}: {key}")
    strategy = top.get("strategy", "egnas")
    if strategy not in STRATEGIES:
        raise ProfileError(f"{source}: strategy = {strategy!r} is not allowed; choose one of {', '.join(STRATEGIES)}")
    sections = {}
    for section, cls in SECTIONS.items():
        cls = cls or CONFIGS[strategy]
        sections[section] = _build(cls, raw.get(section, {}), source, section)
    profile = Profile(name=name, source=source, **top, **sections)
    _validate(profile, source)
    return profile


def builtin_names() -> list[str]:
    files = resources.files("edgenas.builtin_profiles").iterdir()
    return sorted(f.name[:-5] for f in files if f.name.endswith(".toml"))


def load_profile(name_or_path: str | Path) -> Profile:
    """A built-in profile by name (``tiny``, ``mobile``, ...) or a TOML file by path."""
    text_name = str(name_or_path)
    path = Path(text_name)
    if text_name.endswith(".toml") or path.exists():
        if not path.is_file():
            raise ProfileError(f"profile file {path} does not exist; give a built-in name ({', '.join(builtin_names())}) or a .toml path")
        return parse_profile(path.read_text(), path.stem, str(path))
    if text_name not in builtin_names():
        raise ProfileError(f"unknown profile {text_name!r}; built-in profiles: {', '.join(builtin_names())}, or give a .toml path")
    res = resources.files("edgenas.builtin_profiles") / f"{text_name}.toml"
    return parse_profile(res.read_text(), text_name, f"profiles/{text_name}.toml")


def list_profiles() -> list[Profile]:
    return [load_profile(n) for n in builtin_names()]
