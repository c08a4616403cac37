"""Learning-rate schedules and the ε warm-up, as pure functions of training progress.

Why pure functions of (epoch, step) rather than stateful schedulers: a resumed run
must use exactly the learning rate and attack radius the uninterrupted run used
at the same step, so both are recomputed from the position in training.

- piecewise: the ADR paper's schedules (Bui et al., ECCV 2020, after Madry et al.
  2018 and TRADES): lr = base x ``lr_factors[i]`` from epoch ``milestones[i]`` on
  (MNIST: x0.1, x0.01, x0.001 at 55/75/90; CIFAR-10: x0.1 at 75, x0.01 at 90);
- cosine: half-cosine from base to base x ``min_factor``;
- onecycle (Smith & Topin 2019): linear rise from base x ``start_factor`` to base over
  ``pct_start`` of the run, then cosine down to base x ``min_factor``;
- constant.
An optional linear warm-up (``warmup_epochs``) multiplies piecewise/cosine/constant.

ε warm-up: the L∞/L2 radius (and the PGD step size with it) grows linearly from 0
to ε over the first ``eps_warmup_epochs``, per step, which lets PGD-AT on MNIST
leave the all-one-class plateau it otherwise often sits on (Madry et al. note it).
ADR warm-up: the five ADR weights of Bui et al. (ECCV 2020) grow the same way over
``objective.adr_warmup_epochs``, so the base objective shapes the features first.
"""

from __future__ import annotations

import bisect
import math

from adrnet.config import AttackConfig, ObjectiveConfig, ScheduleConfig


def lr_factor(sched: ScheduleConfig, epoch: int, step: int, steps_per_epoch: int,
              total_epochs: int) -> float:
    """Multiplier of the base lr for ``step`` (0-based) of ``epoch`` (0-based).

    Milestones are compared with the epoch at the start of the step (epoch 55 is
    the first one at the new rate); the smooth schedules and the warm-up use the
    progress at the end of the step, so the very first step does not get lr 0.
    """
    start = epoch + step / steps_per_epoch
    end = start + 1 / steps_per_epoch
    fraction = min(end / total_epochs, 1.0)
    if sched.name == "onecycle":
        return _one_cycle(sched, fraction)
    if sched.name == "cosine":
        factor = sched.min_factor + (1 - sched.min_factor) * 0.5 * (1 + math.cos(math.pi * fraction))
    elif sched.name == "piecewise":
        index = bisect.bisect_right(list(sched.milestones), start)
        factor = 1.0 if index == 0 else sched.lr_factors[index - 1]
    else:
        factor = 1.0
    if sched.warmup_epochs > 0 and end < sched.warmup_epochs:
        factor *= end / sched.warmup_epochs
    return factor


def _one_cycle(sched: ScheduleConfig, fraction: float) -> float:
    if fraction < sched.pct_start:
        return sched.start_factor + (1 - sched.start_factor) * fraction / sched.pct_start
    down = (fraction - sched.pct_start) / (1 - sched.pct_start)
    return sched.min_factor + (1 - sched.min_factor) * 0.5 * (1 + math.cos(math.pi * down))


def warmup_factor(warmup_epochs: float, epoch: int, step: int, steps_per_epoch: int) -> float:
    """Share of a warmed-up value used at ``step`` of ``epoch``: linear from 0 to 1 over
    ``warmup_epochs`` (progress counted at the step's end, so the first step is not 0)."""
    if warmup_epochs <= 0:
        return 1.0
    return min(1.0, (epoch + (step + 1) / steps_per_epoch) / warmup_epochs)


def eps_factor(attack: AttackConfig, epoch: int, step: int, steps_per_epoch: int) -> float:
    """Share of ε (and of the PGD step size) used at ``step`` of ``epoch``."""
    return warmup_factor(attack.eps_warmup_epochs, epoch, step, steps_per_epoch)


def adr_factor(objective: ObjectiveConfig, epoch: int, step: int, steps_per_epoch: int) -> float:
    """Share of the five ADR weights used at ``step`` of ``epoch`` (``adr_warmup_epochs``)."""
    return warmup_factor(objective.adr_warmup_epochs, epoch, step, steps_per_epoch)
