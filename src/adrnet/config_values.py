"""Type and range checking of config values, with messages that name the key.

Why a separate module: ``adrnet.config`` declares *what* a run of ADR / PGD-AT /
TRADES is configured by; this module checks *that* a TOML table fits those
declarations (types from the dataclass annotations, limits from field metadata)
and parses ``section.key=value`` overrides with TOML value syntax. Every problem
is a :class:`ConfigError` naming the dotted key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
import typing
from typing import Any, Literal, Union

from adrnet.errors import ConfigError

_LIMITS = {"ge": (">=", lambda v, b: v >= b), "gt": (">", lambda v, b: v > b),
           "le": ("<=", lambda v, b: v <= b), "lt": ("<", lambda v, b: v < b)}


def coerce_section(section: str, cls: type, table: dict) -> dict:
    """Check every key of ``table`` against dataclass ``cls``; return coerced values."""
    hints = typing.get_type_hints(cls)
    allowed = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in table.items():
        if key not in hints:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean '{section}.{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key '{section}.{key}'{hint}; allowed keys "
                              f"in [{section}]: {', '.join(allowed)}")
        values[key] = coerce(f"{section}.{key}", value, hints[key])
    return values


def coerce(key: str, value: Any, hint: Any) -> Any:
    """``value`` converted to type ``hint`` (int -> float, list -> tuple), or ConfigError."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:  # Optional[X]
        if value is None:
            return None
        return coerce(key, value, next(a for a in args if a is not type(None)))
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"config key '{key}' must be one of "
                              f"{', '.join(repr(a) for a in args)} (got {value!r})")
        return value
    if origin is tuple:
        return _coerce_tuple(key, value, args)
    if origin is dict:
        return _coerce_dict(key, value, args)
    if dataclasses.is_dataclass(hint):
        return _coerce_table(key, value, hint)
    return _coerce_scalar(key, value, hint)


def _coerce_table(key: str, value: Any, cls: type) -> Any:
    """A nested table (``optim.awp = {gamma = 5e-3}``) as its frozen dataclass, checked."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"config key '{key}' must be a table (got {value!r})")
    table = cls(**coerce_section(key, cls, value))
    check_ranges(key, table)
    return table


def _coerce_scalar(key: str, value: Any, hint: Any) -> Any:
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}' must be true or false (got {value!r})")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}' must be an integer (got {value!r})")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"config key '{key}' must be a finite number (got {value!r})")
            return float(value)
        raise ConfigError(f"config key '{key}' must be a number (got {value!r})")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"config key '{key}' must be a string (got {value!r})")
    raise TypeError(f"unsupported config type {hint!r} for {key}")  # a bug, not user error


def _coerce_tuple(key: str, value: Any, args: tuple) -> tuple:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"config key '{key}' must be a list (got {value!r})")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value))
    if len(value) != len(args):
        raise ConfigError(f"config key '{key}' must be a list of {len(args)} values "
                          f"(got {len(value)}: {list(value)!r})")
    return tuple(coerce(f"{key}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args)))


def _coerce_dict(key: str, value: Any, args: tuple) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"config key '{key}' must be a table (got {value!r})")
    return {str(k): coerce(f"{key}.{k}", v, args[1]) for k, v in value.items()}


def check_ranges(section: str, obj: Any) -> None:
    """Check the ge/gt/le/lt limits declared in each field's metadata."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value is None:
            continue
        for limit, bound in f.metadata.items():
            symbol, holds = _LIMITS[limit]
            if not holds(value, bound):
                raise ConfigError(f"config key '{section}.{f.name}' must be {symbol} {bound} "
                                  f"(got {value!r})")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.epochs=3"`` -> (["train", "epochs"], 3). Values use TOML syntax;
    a value that is not valid TOML is taken as a plain string (``model.name=mlp``)."""
    key, sep, raw = str(text).partition("=")
    key, raw = key.strip(), raw.strip()
    keys = key.split(".")
    if not sep or len(keys) < 2 or not all(keys):
        raise ConfigError(f"override {text!r} must look like section.key=value, "
                          "e.g. train.epochs=3 or optim.lr=0.05")
    try:
        value = tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw
    return keys, value
