"""The one registry mechanism: names -> things, open to anyone.

Why one mechanism: data sets, models, loss terms, objectives, threat models and attacks
are all chosen by name (in a config, on the command line), and a user must be able to
add one from their own module without editing adrnet. Each is a :class:`Registry`; what
derives from one (the choices a config key accepts, the CLI's help, log labels, ablation
variants) is computed from it when needed, never copied at import time, so an entry
registered later is seen everywhere.

A registry reads like a read-only mapping (``name in MODELS``, ``MODELS[name]``,
``sorted(MODELS)``); it is changed only through :meth:`Registry.register`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from adrnet.errors import ConfigError

T = TypeVar("T")


class Registry(Mapping, Generic[T]):
    """Named things of one kind (``kind`` names it in messages), in registration order,
    each with optional metadata (a dict of facts about it: a label, defaults...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._things: dict[str, T] = {}
        self._metadata: dict[str, dict[str, Any]] = {}

    def register(self, name: str, thing: T | None = None, *, replace: bool = False,
                 **metadata) -> T | Callable[[T], T]:
        """Add ``thing`` under ``name`` and return it; without ``thing``, a decorator that
        registers what it decorates. A name already taken is refused unless ``replace``
        (so a typo never silently shadows a built-in)."""
        if thing is None:
            return lambda decorated: self.register(name, decorated, replace=replace, **metadata)
        if not isinstance(name, str) or not name.isidentifier():
            raise ConfigError(f"a {self.kind} name must be a Python identifier (letters, digits, "
                              f"underscores), got {name!r}")
        if name in self._things and not replace:
            raise ConfigError(f"{self.kind} {name!r} is already registered; choose another name "
                              "or pass replace=True")
        self._things[name] = thing
        self._metadata[name] = dict(metadata)
        return thing

    def get(self, name: str) -> T:  # type: ignore[override]
        """The thing registered as ``name``; an unknown name lists the choices."""
        try:
            return self._things[name]
        except (KeyError, TypeError):
            raise ConfigError(f"unknown {self.kind} {name!r}; choose one of "
                              f"{', '.join(self._things)}") from None

    def names(self) -> tuple[str, ...]:
        """Every registered name, in registration order."""
        return tuple(self._things)

    def metadata(self, name: str) -> dict[str, Any]:
        """The facts registered with ``name`` (a copy)."""
        self.get(name)
        return dict(self._metadata[name])

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests and notebooks that re-register in one process)."""
        self.get(name)
        del self._things[name], self._metadata[name]

    def __getitem__(self, name: str) -> T:
        return self._things[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._things)

    def __len__(self) -> int:
        return len(self._things)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._things)})"
