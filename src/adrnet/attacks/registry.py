"""Every attack behind one registry: ``ATTACKS``, names -> :class:`AttackSpec`.

Why: ``adrnet eval --attacks fgsm,pgd,...``, ε sweeps, the sanity checks and the
diagnostics choose attacks by name; a user adds one from their own module with one
call (:func:`register_attack`) and it is then a name like the built-ins (FGSM, PGD,
CW, MT, B&B, AutoAttack; ``attacks.builtins``). What derives from the registry (the
names ``--attacks`` accepts, its help, the settings recorded in ``eval.json``) is
computed from it when needed, never copied at import time.

An attack is a callable ``attack(model, x, y) -> x_adv`` with x in [0, 1] and
x_adv in the threat's ball around x and in [0, 1]; it must leave x unchanged and
may switch the model to eval mode for the call (:func:`adrnet.attacks.attack_mode`).
A spec builds it from a threat object (:func:`adrnet.attacks.make_threat`) and
options: ``spec.build(threat, **spec.options(steps=10))``, or ``spec.make(threat,
steps=10)``. An attack that must see the whole evaluation set at once (AutoAttack:
a resumable state file, the accuracy after each of its attacks) also has an
``evaluate`` hook that returns per-example flags (:class:`AttackRun`); ``adrnet
eval`` calls it instead of running ``build``'s attack batch by batch.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from dataclasses import replace as with_fields
from types import MappingProxyType
from typing import Any, Callable, Mapping

import torch

from adrnet.attacks.threats import THREATS, make_threat
from adrnet.errors import ConfigError
from adrnet.registry import Registry

Attack = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class AttackRun:
    """What a whole-set attack (``AttackSpec.evaluate``) returns: per-example flags
    (True: correct when clean and after the attack; [N] bool, on CPU), the settings
    recorded in ``eval.json``'s ``attack_settings``, and an optional summary recorded
    under the attack's label (a ``resumed_seconds`` entry there is added to the
    evaluation's ``seconds``: time an earlier, interrupted call spent)."""

    correct: torch.Tensor
    settings: dict
    summary: dict | None = None


@dataclass(frozen=True, eq=False)
class AttackSpec:
    """One registered attack.

    - ``build(threat, **options) -> attack``: the attack in ``threat``'s ball.
    - ``defaults``: the options ``build`` (and ``evaluate``) take, with their defaults;
      ``None`` reads them from ``build``'s keyword parameters. ``adrnet eval`` passes
      ``--steps``, ``--step-size``, ``--restarts`` and ``--seed`` to every attack whose
      defaults name ``steps``, ``step_size``, ``restarts``, ``seed``.
    - ``description``: one line for ``adrnet eval --help``.
    - ``label_of(options) -> str``: the key of its accuracy in tables and ``eval.json``
      (``pgd-20``); ``None``: the name.
    - ``settings_of(threat, options) -> dict``: what ``eval.json`` records; ``None``:
      ``{"name", "norm", "eps", **options}``.
    - ``evaluate(model, x, y, threat, *, device, batch_size, progress, **options) ->
      AttackRun``: optional, for attacks that run over the whole set themselves.
    - ``expensive``: when chosen without ``n``, every attack of the evaluation runs on
      the first ``eval.autoattack_n`` examples (one common set for the worst case).
    - ``bf16``: whether ``adrnet eval --precision bf16`` may run it on the bf16 copy of
      the model (its breaks then verified in fp32); False keeps it in fp32 (B&B: foolbox).
      A whole-set attack runs in bf16 only if its ``evaluate`` takes ``judge``, the fp32
      model that decides which of its points are breaks.
    """

    name: str
    build: Callable[..., Attack]
    description: str = ""
    defaults: Mapping[str, Any] | None = None
    label_of: Callable[[dict], str] | None = None
    settings_of: Callable[[Any, dict], dict] | None = None
    evaluate: Callable[..., AttackRun] | None = None
    expensive: bool = False
    bf16: bool = True

    def __post_init__(self):
        if not callable(self.build):
            raise ConfigError(f"attack {self.name!r}: build must be callable, got {self.build!r}")
        defaults = keyword_defaults(self.build, self.name) if self.defaults is None else self.defaults
        object.__setattr__(self, "defaults", MappingProxyType(dict(defaults)))

    @property
    def whole_set(self) -> bool:
        """Whether it runs over the whole evaluation set itself (has ``evaluate``)."""
        return self.evaluate is not None

    def options(self, **given) -> dict:
        """Its defaults updated with ``given``; an option it does not take is refused."""
        unknown = [key for key in given if key not in self.defaults]
        if unknown:
            raise ConfigError(f"attack {self.name!r} takes no option {', '.join(map(repr, unknown))}; "
                              f"its options: {', '.join(self.defaults) or 'none'}")
        return {**self.defaults, **given}

    def pick(self, offered: Mapping[str, Any]) -> dict:
        """The entries of ``offered`` (settings shared by every attack of an evaluation,
        such as ``steps``) that are options of this attack."""
        return {key: value for key, value in offered.items() if key in self.defaults}

    def label(self, options: Mapping[str, Any] | None = None) -> str:
        """Its table key under ``options`` (default: its defaults)."""
        options = self.options(**(options or {}))
        return self.name if self.label_of is None else str(self.label_of(options))

    def settings(self, threat, options: Mapping[str, Any] | None = None) -> dict:
        """What ``eval.json`` records for it in ``threat`` under ``options``."""
        options = self.options(**(options or {}))
        if self.settings_of is not None:
            return self.settings_of(threat, options)
        return {"name": self.name, "norm": norm_of(threat), "eps": float(threat.eps), **options}

    def make(self, threat, **given) -> Attack:
        """``build(threat, **options(**given))``: the attack with these options."""
        return self.build(threat, **self.options(**given))


def keyword_defaults(build: Callable, name: str = "") -> dict:
    """The options of a build function: its parameters after the threat, each with a default."""
    try:
        parameters = list(inspect.signature(build).parameters.values())
    except (TypeError, ValueError):
        return {}
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    options = [p for p in parameters[1:] if p.kind in kinds]
    missing = [p.name for p in options if p.default is inspect.Parameter.empty]
    if missing:
        raise ConfigError(f"attack {name!r}: build's options need defaults (or pass defaults=...): "
                          f"{', '.join(missing)}")
    return {p.name: p.default for p in options}


#: Attacks by name; see :func:`register_attack`.
ATTACKS: Registry[AttackSpec] = Registry("attack")


def register_attack(name: str, spec_or_build: AttackSpec | Callable | None = None, *,
                    replace: bool = False, **fields):
    """Add an attack under ``name`` and return its :class:`AttackSpec`.

    ``spec_or_build`` is a spec, or a build function ``build(threat, **options) ->
    attack(model, x, y) -> x_adv`` whose keyword defaults are its options; ``fields``
    set the other :class:`AttackSpec` fields (``description``, ``label_of``...).
    Without ``spec_or_build``, a decorator. A taken name is refused unless ``replace``::

        @register_attack("shift", description="every pixel +eps")
        def shift(threat, scale=1.0):
            return lambda model, x, y: (x + scale * threat.eps).clamp(0, 1)
    """
    if spec_or_build is None:
        return lambda build: register_attack(name, build, replace=replace, **fields)
    if isinstance(spec_or_build, AttackSpec):
        spec = with_fields(spec_or_build, name=name, **fields)
    else:
        spec = AttackSpec(name=name, build=spec_or_build, **fields)
    ATTACKS.register(name, spec, replace=replace, description=spec.description)
    return spec


def norm_of(threat) -> str:
    """The registered name (``"linf"``, ``"l2"``...) of a threat object's model."""
    for name, threat_class in THREATS.items():
        if type(threat) is threat_class:
            return name
    raise ConfigError(f"{type(threat).__name__} is not a registered threat model "
                      f"({', '.join(THREATS)}); build threats with adrnet.attacks.make_threat")


def parse_attack_names(text: str | list[str]) -> list[str]:
    """``"fgsm,pgd"`` -> ``["fgsm", "pgd"]``, refusing names that are not registered
    (checked when called, so an attack registered by a user's module counts)."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text)]
    names = [n if n in ATTACKS else n.lower() for n in names if n]
    unknown = [n for n in names if n not in ATTACKS]
    if unknown or not names:
        raise ConfigError(f"unknown attack name(s) {unknown or names}; "
                          f"choose from {', '.join(ATTACKS)} (comma-separated)")
    return list(dict.fromkeys(names))


def build_attacks(names: list[str], *, norm: str, eps: float, **shared
                  ) -> tuple[dict[str, Attack], dict[str, dict]]:
    """Attacks by label, and their settings by label, for the named attacks that run
    batch by batch (whole-set ones such as ``autoattack`` are left out: run them with
    ``ATTACKS[name].evaluate``). ``shared`` (``steps``, ``restarts``, ``step_size``...)
    goes to each attack whose defaults name it."""
    threat = make_threat(norm, eps)
    attacks, settings = {}, {}
    for name in names:
        spec = ATTACKS.get(name)
        if spec.whole_set:
            continue
        options = spec.options(**spec.pick(shared))
        label = spec.label(options)
        attacks[label] = spec.build(threat, **options)
        settings[label] = spec.settings(threat, options)
    return attacks, settings
