"""Type and range checking of config values, with messages that name the key.

Why a separate module: ``adrnet.config`` declares *what* a run of ADR / PGD-AT /
TRADES is configured by; this module checks *that* a TOML table fits those
declarations (types from the dataclass annotations, limits from field metadata)
and parses ``section.key=value`` overrides with TOML value syntax. Every problem
is a :class:`ConfigError` naming the dotted key and what is allowed.

It also holds the bounds of values that have no natural upper limit (steps, learning
rates, seeds, threads, model sizes), each justified where it is defined, and reads a
config file only when it is a small regular file: a hostile or mistaken value must end
as one message, never as a traceback, an abort inside a native library or a hang.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import tomllib
import typing
from typing import Any, Literal, Union

from adrnet.atomic import read_bounded
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
    except RecursionError:  # tomllib parses nested lists / tables recursively
        raise ConfigError(f"override '{key}=...' nests lists or tables too deeply to be read "
                          f"(a config value needs 4 levels at most, {MAX_NESTING} are read)") from None
    return keys, value


# --- bounds of values that have no natural upper limit ----------------------------------

#: The most PGD steps an attack of the config or of ``adrnet eval`` may take. The longest
#: PGD in the robustness literature is PGD-1000 (e.g. the "more steps" checks of Carlini
#: et al. 2019, "On evaluating adversarial robustness"); the paper evaluates with PGD-200.
#: 10x that keeps every real use and turns ``steps = 10**20`` (a run that never ends and
#: that only SIGKILL stops) into a message.
MAX_ATTACK_STEPS = 10_000

#: Upper bound of optim.lr, optim.weight_decay and of lr x each schedule.lr_factors entry.
#: Learning rates in use are <= 1 (SGD 0.1 on CIFAR, Adam 1e-3), weight decay <= 1e-2; an
#: SGD step multiplies the weights by 1 - lr x wd, so anything near 1e3 has already
#: diverged, while values like 1e300 overflow float32 inside torch (a traceback, not a
#: message). 1e3 leaves a factor 1000 of head room above any working setting.
MAX_LR = 1e3

#: Upper bound of train.num_threads. The largest CPU machines have a few hundred hardware
#: threads (2 x 192-core EPYC: 768), so more than 1024 only slows a run down; and libgomp
#: aborts the whole process (no error line) when asked for ~10^5 threads. A fixed bound,
#: not os.cpu_count(): a run trained on a large machine must still load on a laptop.
MAX_THREADS = 1024

#: One grey level of an 8-bit image, in the [0, 1] input scale every threat model uses.
GREY_LEVEL = 1 / 255

#: The largest config file read. The presets are 1-3 kB; 1 MiB is 300x that, and a file
#: beyond it is no config (reading a 2 GB file whole took 4.4 GB of memory).
MAX_CONFIG_BYTES = 1 << 20

#: How deep config values may nest (section > key > table > list ...). A config needs 4
#: levels (``model.options.hidden[0]``); deeper values would reach Python's recursion
#: limit when written to TOML or JSON.
MAX_NESTING = 16

#: Seeds that go to torch.manual_seed / torch.Generator.manual_seed: every int64 and uint64
#: value, exactly what torch accepts (so no seed that worked before is refused).
TORCH_SEED_RANGE = (-(2 ** 63), 2 ** 64)
#: Seeds of numpy's legacy RandomState (scikit-learn's t-SNE in ``adrnet eval``): [0, 2^32).
NUMPY_SEED_RANGE = (0, 2 ** 32)


def check_step_budget(what: str, steps: int, step_size: float, eps: float, hint: str) -> None:
    """Refuse a step size with which ``steps`` steps cannot move an input by one grey level
    (or, in a ball smaller than that, to the ball's edge): such an attack leaves the inputs
    all but clean and overstates robustness (``--step-size 1e-30`` reported 88.0% against
    85.5% with the default step).

    The bound holds for every threat model: a step of size s changes no coordinate by more
    than s (an L∞ step moves each by exactly s; an L2 or L1 step of length s moves none by
    more than its length), projection only shortens the path, so after k steps no pixel
    has moved by more than k x s. (The factor 1 - 1e-9 forgives the rounding of k x (a/k).)"""
    need = min(GREY_LEVEL, eps)
    if steps * step_size < need * (1 - 1e-9):
        raise ConfigError(
            f"{what} = {step_size:g} with {steps} steps moves an input by at most "
            f"{steps * step_size:.3g} in the whole attack, less than "
            + ("one grey level (1/255)" if need == GREY_LEVEL else f"eps = {eps:g}")
            + f": the attack could not change the input and would overstate robustness; "
            f"steps x step size must be >= {need:.6g} ({hint})")


def check_seed(what: str, value: int, bounds: tuple[int, int], user: str) -> None:
    """Refuse a seed outside ``[low, high)`` (the range ``user`` accepts)."""
    low, high = bounds
    if not low <= value < high:
        raise ConfigError(f"{what} must be a whole number from {_power(low)} to "
                          f"{_power(high)} - 1 ({user} accepts no other), got {value}")


def _power(n: int) -> str:
    """-2**63, 2**64 ... as text, else the number."""
    sign, size = ("-" if n < 0 else ""), abs(n)
    return f"{sign}2**{size.bit_length() - 1}" if size > 1 and size & (size - 1) == 0 else str(n)


def check_nesting(raw: Any, limit: int = MAX_NESTING) -> None:
    """Refuse values nested deeper than ``limit`` levels (counted without recursion, so a
    10^5-deep value gets this message and not a RecursionError)."""
    stack = [(raw, 0, "")]
    while stack:
        value, depth, key = stack.pop()
        if depth > limit:
            raise ConfigError(f"config key '{key}' is nested more than {limit} levels deep "
                              "(tables in lists in tables...); a config value needs 4 at most")
        if isinstance(value, dict):
            stack.extend((v, depth + 1, f"{key}.{k}" if key else str(k)) for k, v in value.items())
        elif isinstance(value, (list, tuple)):
            stack.extend((v, depth + 1, f"{key}[{i}]") for i, v in enumerate(value))


def read_config_file(path: os.PathLike) -> str:
    """The text of config file ``path``, read only if it is a regular file of at most
    :data:`MAX_CONFIG_BYTES` (a FIFO would wait for a writer, /dev/zero never end);
    FileNotFoundError when there is none (the caller names the presets)."""
    data = read_bounded(path, MAX_CONFIG_BYTES, "config file (a config is a few KiB)", ConfigError,
                        "give a .toml file (e.g. a preset from configs/)")
    if data is None:
        raise FileNotFoundError(path)
    return data.decode("utf-8")
