"""The white-box attacks FGSM, PGD, CW and MT: their settings and runners.

Why: one place turns a name and an (ε, norm, steps, restarts) choice into a callable
``attack(model, x, y) -> x_adv`` over adrnet's single PGD loop, and records the exact
settings next to every number (``eval.json``'s ``attack_settings``). The registry
(``attacks.builtins``) builds these four through :func:`attack_settings` and
:func:`make_attack`.
- FGSM (Goodfellow et al., ICLR 2015): one full-size step, no random start.
- PGD-k (Madry et al., ICLR 2018): k steps from a uniform random start, CE loss,
  restarts keeping the per-example strongest.
- CW (Carlini & Wagner, S&P 2017): the same PGD on the CW margin loss
  max_{j≠y} f_j − f_y, in the chosen ball (the usual "CW-L∞" of robustness papers).
- MT (multi-targeted PGD, Gowal et al. 2019): the same PGD-k, targeted, towards each
  of the C − 1 wrong classes on the CW margin; robust only if every target fails.
Default step size: 2.5·ε/k (Madry et al.'s rule, so k steps can cross the ball
from any start); the paper's own evaluation uses PGD-200 (``steps=200``).
Threat models: L∞ and L2 balls intersected with the [0, 1] box.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import partial
from typing import Callable

from adrnet.attacks.multitargeted import multi_targeted
from adrnet.attacks.pgd import default_step_size, fgsm, pgd
from adrnet.attacks.threats import make_threat
from adrnet.config_values import MAX_ATTACK_STEPS, check_step_budget
from adrnet.errors import ConfigError

#: The attacks :func:`attack_settings` knows, and the loss each one ascends.
WHITE_BOX_LOSS = {"fgsm": "ce", "pgd": "ce", "cw": "cw", "mt": "cw"}


def whitebox_label(name: str, steps: int = 1, restarts: int = 1) -> str:
    """Short key for tables: ``fgsm``, ``pgd-20``, ``cw-20x5``, ``mt-20``."""
    if name == "fgsm":
        return "fgsm"
    tail = f"x{restarts}" if restarts > 1 else ""
    return f"{name}-{steps}{tail}"


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
        return whitebox_label(self.name, self.steps, self.restarts)

    def to_dict(self) -> dict:
        return asdict(self)


def attack_settings(name: str, *, norm: str, eps: float, steps: int = 20, restarts: int = 1,
                    step_size: float | None = None, random_start: bool | str = True) -> AttackSettings:
    """Validated settings for one white-box attack (defaults documented above; FGSM
    takes none of the PGD knobs; ``random_start`` as :func:`adrnet.attacks.pgd` reads it)."""
    make_threat(norm, eps)  # refuses an unknown norm or a radius beyond the ball's bound
    if name not in WHITE_BOX_LOSS:
        raise ConfigError(f"unknown white-box attack {name!r}; choose from {', '.join(WHITE_BOX_LOSS)}")
    if steps < 1 or restarts < 1:
        raise ConfigError(f"steps and restarts must be >= 1, got steps={steps}, restarts={restarts}")
    if name == "fgsm":
        return AttackSettings("fgsm", norm, float(eps), 1, float(eps), 1, "ce", False)
    if steps > MAX_ATTACK_STEPS:  # PGD-1000 is the longest in the literature: see config_values
        raise ConfigError(f"{name} steps must be at most {MAX_ATTACK_STEPS} (--steps), got {steps}")
    if step_size is not None and not 0 < step_size < math.inf:  # 0 makes PGD a no-op
        raise ConfigError(f"the PGD step size must be a finite number > 0, got {step_size} "
                          "(--step-size); leave it out for 2.5*eps/steps")
    if step_size is not None:  # too small to move a pixel by one grey level: a no-op too
        check_step_budget("the PGD step size (--step-size)", steps, step_size, eps,
                          "leave --step-size out for 2.5*eps/steps")
    size = default_step_size(eps, steps) if step_size is None else float(step_size)
    return AttackSettings(name, norm, float(eps), int(steps), size, int(restarts),
                          WHITE_BOX_LOSS[name], random_start)


def make_attack(settings: AttackSettings, threat=None) -> Callable:
    """``attack(model, x, y) -> x_adv`` for these settings (adrnet's PGD loop), in
    ``threat`` (default: the ball the settings name)."""
    threat = make_threat(settings.norm, settings.eps) if threat is None else threat
    if settings.name == "fgsm":
        return partial(fgsm, threat=threat)
    if settings.name == "mt":
        return partial(multi_targeted, threat=threat, steps=settings.steps,
                       step_size=settings.step_size, loss=settings.loss,
                       random_start=settings.random_start, restarts=settings.restarts)
    return partial(pgd, threat=threat, steps=settings.steps, step_size=settings.step_size,
                   loss=settings.loss, random_start=settings.random_start,
                   restarts=settings.restarts)
