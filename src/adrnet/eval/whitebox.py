"""The white-box attacks of `adrnet eval`, built from names and settings.

Why: one place turns "fgsm,pgd,cw" and an (ε, norm, steps, restarts) choice into
callables ``attack(model, x, y) -> x_adv`` over adrnet's single PGD loop, and
records the exact settings next to every number.
- FGSM (Goodfellow et al., ICLR 2015): one full-size step, no random start.
- PGD-k (Madry et al., ICLR 2018): k steps from a uniform random start, CE loss,
  restarts keeping the per-example strongest.
- CW (Carlini & Wagner, S&P 2017): the same PGD on the CW margin loss
  max_{j≠y} f_j − f_y, in the chosen ball (the usual "CW-L∞" of robustness papers).
- MT (multi-targeted PGD, Gowal et al. 2019): the same PGD-k, targeted, towards each
  of the C − 1 wrong classes on the CW margin; robust only if every target fails.
- BB (Brendel & Bethge, NeurIPS 2019) through foolbox, started from PGD-20 with step
  ε/2 and run for 200 steps (the ADR authors' protocol, ``brendel_bethge.py``).
Default step size: 2.5·ε/k (Madry et al.'s rule, so k steps can cross the ball
from any start); the paper's own evaluation uses PGD-200 (``steps=200``).
Threat models: L∞ and L2 balls intersected with the [0, 1] box.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import partial
from typing import Callable

from adrnet.attacks import fgsm, make_threat, multi_targeted, pgd
from adrnet.attacks.pgd import default_step_size
from adrnet.errors import ConfigError

WHITE_BOX = ("fgsm", "pgd", "cw", "mt")
ALL_ATTACKS = WHITE_BOX + ("bb", "autoattack")


@dataclass(frozen=True)
class AttackSettings:
    """Everything that defines one white-box attack run."""

    name: str
    norm: str
    eps: float
    steps: int
    step_size: float
    restarts: int
    loss: str
    random_start: bool

    @property
    def label(self) -> str:
        """Short key for tables: ``fgsm``, ``pgd-20``, ``cw-20x5``, ``mt-20``."""
        if self.name == "fgsm":
            return "fgsm"
        tail = f"x{self.restarts}" if self.restarts > 1 else ""
        return f"{self.name}-{self.steps}{tail}"

    def to_dict(self) -> dict:
        return asdict(self)


def parse_attack_names(text: str | list[str]) -> list[str]:
    """``"fgsm,pgd"`` -> ``["fgsm", "pgd"]``, refusing unknown or empty names."""
    names = [n.strip().lower() for n in (text.split(",") if isinstance(text, str) else text)]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in ALL_ATTACKS]
    if unknown or not names:
        raise ConfigError(f"unknown attack name(s) {unknown or names}; "
                          f"choose from {', '.join(ALL_ATTACKS)} (comma-separated)")
    return list(dict.fromkeys(names))


def attack_settings(name: str, *, norm: str, eps: float, steps: int = 20, restarts: int = 1,
                    step_size: float | None = None) -> AttackSettings:
    """Validated settings for one white-box attack (defaults documented above)."""
    make_threat(norm, eps)  # refuses an unknown norm or a radius beyond the ball's bound
    if name not in WHITE_BOX:
        raise ConfigError(f"unknown white-box attack {name!r}; choose from {', '.join(WHITE_BOX)}")
    if steps < 1 or restarts < 1:
        raise ConfigError(f"steps and restarts must be >= 1, got steps={steps}, restarts={restarts}")
    if name == "fgsm":
        return AttackSettings("fgsm", norm, float(eps), 1, float(eps), 1, "ce", False)
    if step_size is not None and not 0 < step_size < math.inf:  # 0 makes PGD a no-op
        raise ConfigError(f"the PGD step size must be a finite number > 0, got {step_size} "
                          "(--step-size); leave it out for 2.5*eps/steps")
    size = default_step_size(eps, steps) if step_size is None else float(step_size)
    loss = "ce" if name == "pgd" else "cw"  # cw and mt (multi-targeted) use the CW margin
    return AttackSettings(name, norm, float(eps), int(steps), size, int(restarts), loss, True)


def make_attack(settings: AttackSettings) -> Callable:
    """``attack(model, x, y) -> x_adv`` for these settings (adrnet's PGD loop)."""
    threat = make_threat(settings.norm, settings.eps)
    if settings.name == "fgsm":
        return partial(fgsm, threat=threat)
    if settings.name == "mt":
        return partial(multi_targeted, threat=threat, steps=settings.steps,
                       step_size=settings.step_size, loss=settings.loss,
                       random_start=settings.random_start, restarts=settings.restarts)
    return partial(pgd, threat=threat, steps=settings.steps, step_size=settings.step_size,
                   loss=settings.loss, random_start=settings.random_start,
                   restarts=settings.restarts)


def build_attacks(names: list[str], *, norm: str, eps: float, steps: int = 20,
                  restarts: int = 1, step_size: float | None = None
                  ) -> tuple[dict[str, Callable], dict[str, dict]]:
    """White-box attacks by label, and their settings by label ("autoattack" skipped)."""
    attacks, settings = {}, {}
    for name in names:
        if name == "autoattack":
            continue
        if name == "bb":
            attacks["bb"] = brendel_bethge(norm, eps)
            settings["bb"] = attacks["bb"].settings()
            continue
        s = attack_settings(name, norm=norm, eps=eps, steps=steps, restarts=restarts,
                            step_size=step_size)
        attacks[s.label] = make_attack(s)
        settings[s.label] = s.to_dict()
    return attacks, settings


def brendel_bethge(norm: str, eps: float):
    """The B&B attack of the ADR protocol (foolbox's L∞ or L2 variant for ``norm``);
    refused with an install hint when foolbox or numba is missing."""
    from adrnet.eval.brendel_bethge import BrendelBethge, check_foolbox
    make_threat(norm, eps)
    check_foolbox()
    return BrendelBethge(norm, eps)
