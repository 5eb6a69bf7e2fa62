"""Typed, bounded settings: a dataclass field declares its range once, and a TOML table is checked against it.

    lr: float = setting(0.025, gt=0, le=10)       # finite, in (0, 10]
    runtime: str = setting("onnxruntime-cpu", choices=RUNTIMES)
    micro_kernels: tuple[int, ...] = setting((5,), items=KERNELS)

Every float must be finite. Errors are one-line ``ProfileError``s naming the file, the key and
what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import field

from edgenas.errors import ProfileError


def setting(
    default,
    *,
    ge=None,
    gt=None,
    le=None,
    lt=None,
    choices=None,
    items=None,
    item_ge=None,
    item_le=None,
    nullable: bool = False,
):
    """A dataclass field with the bounds the code needs (see the module docstring)."""
    rules = {
        k: v
        for k, v in (
            ("ge", ge),
            ("gt", gt),
            ("le", le),
            ("lt", lt),
            ("choices", choices),
            ("items", items),
            ("item_ge", item_ge),
            ("item_le", item_le),
        )
        if v is not None
    }
    rules["nullable"] = nullable
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"rules": rules})
    return field(default=default, metadata={"rules": rules})


def _type_name(tp) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def coerce(value, tp, where: str):
    """Check ``value`` against the annotation ``tp``; return it in the dataclass's type."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType) and type(None) in args:  # Optional[X] or X | None
        return coerce(value, next(a for a in args if a is not type(None)), where)
    if origin is tuple:
        if not isinstance(value, list):
            raise ProfileError(f"{where}: must be a list, got {value!r}")
        if len(args) == 2 and args[1] is not Ellipsis and len(value) != len(args):
            raise ProfileError(f"{where}: must be a list of {len(args)} values, got {value!r}")
        return tuple(coerce(v, args[0], where) for v in value)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp in (str, bool) and isinstance(value, tp):
        return value
    raise ProfileError(f"{where}: must be {_type_name(tp)}, got {value!r}")


def _range_text(rules: dict) -> str:
    low = f">= {rules['ge']:g}" if "ge" in rules else f"> {rules['gt']:g}" if "gt" in rules else ""
    high = f"<= {rules['le']:g}" if "le" in rules else f"< {rules['lt']:g}" if "lt" in rules else ""
    return " and ".join(p for p in (low, high) if p)


def _in_range(value, rules: dict) -> bool:
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return not (
        ("ge" in rules and value < rules["ge"])
        or ("gt" in rules and value <= rules["gt"])
        or ("le" in rules and value > rules["le"])
        or ("lt" in rules and value >= rules["lt"])
    )


def _rule_error(value, rules: dict) -> str | None:
    """What is wrong with ``value`` under ``rules`` (None when it is allowed)."""
    if value is None:
        return None if rules.get("nullable") else "it must be set"
    if "choices" in rules and value not in rules["choices"]:
        return f"choose one of {', '.join(map(str, rules['choices']))}"
    if isinstance(value, tuple):
        if "items" in rules and any(v not in rules["items"] for v in value):
            return f"each must be one of {', '.join(map(str, rules['items']))}"
        item = {k[5:]: v for k, v in rules.items() if k.startswith("item_")}
        if item and not all(_in_range(v, item) for v in value):
            return f"each must be {_range_text(item)}"
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not _in_range(value, rules):
        text = _range_text(rules)
        return f"it must be a finite number{' ' + text if text else ''}"
    return None


def check_fields(obj, section: str) -> None:
    """Check every field of the dataclass ``obj`` against its declared rules (call it in ``__post_init__``)."""
    for f in dataclasses.fields(obj):
        rules = f.metadata.get("rules")
        if rules is None:
            continue
        value = getattr(obj, f.name)
        problem = _rule_error(value, rules)
        if problem:
            shown = list(value) if isinstance(value, tuple) else value
            raise ProfileError(f"{section}.{f.name} = {shown!r} is not allowed; {problem}")


def build(cls, *, table, file: str, section: str):
    """``cls`` from a TOML table: unknown keys and wrong types refused, then every bound checked."""
    if not isinstance(table, dict):
        raise ProfileError(f"{file}: [{section}] must be a table")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in table.items():
        if key not in names:
            raise ProfileError(f"{file}: unknown key {section}.{key}; allowed in [{section}]: {', '.join(names)}")
        values[key] = coerce(value, hints[key], f"{file}: {section}.{key}")
    try:
        return cls(**values)  # its __post_init__ checks the bounds
    except ProfileError as e:
        raise ProfileError(f"{file}: {e}") from None
