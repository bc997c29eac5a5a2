"""The settings toolkit: typed dataclass settings with help text, built from YAML mappings.

Every group of settings in aglora (the run config, a ban's `recommend.*`, the bench, the
controlled track, method settings) is a dataclass whose fields are made with `setting(default,
help)`. `build(cls, mapping, prefix)` checks a mapping against the field types: unknown keys,
wrong types (a boolean is not a number, 40.7 is not an integer) and malformed values are
`AgloraError`s that name the dotted key. `apply_overrides` applies `a.b=value` strings (values
parsed as YAML) to a nested mapping. The toolkit imports nothing heavy, so settings modules stay
importable without torch.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any

import yaml

from aglora.errors import AgloraError


def setting(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with a default (lists and dicts copied per instance) and help text."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)

def convert(value: Any, tp: Any, key: str) -> Any:
    """Check/convert a YAML value against a dataclass field type (`key` names it in errors)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return convert(value, args[0], key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise AgloraError(f"config key '{key}': expected a mapping, got {value!r}")
        return build(tp, value, key + ".")
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise AgloraError(f"config key '{key}': expected a list, got {value!r}")
        (inner,) = typing.get_args(tp)
        return [convert(v, inner, key) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise AgloraError(f"config key '{key}': expected true/false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise AgloraError(f"config key '{key}': expected a number, got {value!r}")
        try:
            out = tp(value)
        except (TypeError, ValueError):
            raise AgloraError(f"config key '{key}': expected a number, got {value!r}") from None
        if tp is int and isinstance(value, float) and value != out:
            raise AgloraError(f"config key '{key}': expected an integer, got {value!r}")
        return out
    if tp is str:
        if value is None or isinstance(value, (dict, list)):
            raise AgloraError(f"config key '{key}': expected a string, got {value!r}")
        return str(value)
    return value

def check_range(key: str, value: Any, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False, fix: str = "") -> None:
    """Refuse a number outside [low, high] (`low_open`/`high_open`: the bound itself too) or not
    finite, with one line naming the key, the value and the allowed range (and `fix`)."""
    import math
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if ok:
        return
    if low is not None and high is not None:
        rule = (f"must be in {'(' if low_open else '['}{low:g}, {high:g}"
                f"{')' if high_open else ']'}")
    elif low is not None:
        rule = f"must be {'>' if low_open else '>='} {low:g}"
    elif high is not None:
        rule = f"must be {'<' if high_open else '<='} {high:g}"
    else:
        rule = "must be a finite number"
    raise AgloraError(f"{key}={value!r}: {rule}" + (f" ({fix})" if fix else ""))


def build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """An instance of dataclass `cls` from `data`, every value checked against its field type."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names, key=str)
    if unknown:
        raise AgloraError(f"unknown config key '{prefix}{unknown[0]}'; valid keys here: "
                          f"{', '.join(sorted(names))}")
    kwargs = {k: convert(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)

def parse_value(item: str, raw: str) -> Any:
    """The value of override `item` (`KEY=RAW`), parsed as YAML; a YAML error is one line."""
    if not raw:
        return None
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise AgloraError(f"override {item!r}: the value is not valid YAML ({problem}); quote "
                          "it, e.g. --set 'train.lr=5e-4' or --set \"name='[x'\"") from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b=value` overrides (value parsed as YAML) to a nested dict."""
    for item in overrides:
        if "=" not in item:
            raise AgloraError(f"override {item!r}: expected KEY=VALUE, e.g. train.lr=5e-4")
        key, raw = item.split("=", 1)
        value = parse_value(item, raw)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if node.get(part) is None:  # an absent or empty section
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise AgloraError(f"override {item!r}: '{part}' is not a section")
        node[parts[-1]] = value
    return data

def read_utf8(path: Path) -> str:
    """A text file's contents; bytes that are not UTF-8 are an error naming the line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise AgloraError(f"{path}:{line}: not UTF-8 text (byte {data[exc.start]:#04x} at "
                          f"offset {exc.start}); save the file as UTF-8") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise AgloraError(f"{path}: file not found")
    try:
        data = yaml.safe_load(read_utf8(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise AgloraError(f"{path}: malformed YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise AgloraError(f"{path}: expected a YAML mapping at the top level")
    return data


def to_dict(settings: Any) -> dict[str, Any]:
    """A settings dataclass as a plain nested mapping."""
    return dataclasses.asdict(settings)

