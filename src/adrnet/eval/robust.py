"""Robust accuracy as the per-example worst case over every attack run.

Why: a robust-accuracy number is only as strong as the attack behind it, and
different attacks fail on different examples (Croce & Hein, ICML 2020, the
AutoAttack paper; Carlini et al. 2019, "On Evaluating Adversarial Robustness").
An example counts as robust only if it is classified correctly clean *and*
under every attack, so adding an attack can only lower the reported number.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping

import torch
from torch import nn

# the batched eval-mode predictions live with the attacks (AutoAttack's adapter and
# training's validation use them too)
from adrnet.attacks.inference import attack_correct, eval_batches, model_device, num_outputs, predict

__all__ = ["Attack", "EvalResult", "attack_correct", "eval_batches", "model_device",
           "num_outputs", "predict", "robust_accuracy", "summarize", "worst_case"]

Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class EvalResult:
    """Accuracies of one evaluation; ``correct`` holds the per-example flags."""

    n: int
    clean_accuracy: float
    attack_accuracy: dict[str, float]
    worst_case_accuracy: float
    attack_settings: dict[str, dict] = field(default_factory=dict)
    correct: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    #: wall time of each attack (its points and their judging), seconds
    attack_seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready summary (per-example flags left out)."""
        return {
            "n": self.n,
            "clean_accuracy": self.clean_accuracy,
            "attack_accuracy": dict(self.attack_accuracy),
            "worst_case_accuracy": self.worst_case_accuracy,
            "attack_settings": dict(self.attack_settings),
            "attack_seconds": {k: round(v, 2) for k, v in self.attack_seconds.items()},
            "attack_images_per_s": {k: round(self.n / v, 2) if v > 0 else None
                                    for k, v in self.attack_seconds.items()},
        }


def worst_case(clean_correct: torch.Tensor, correct: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Robust flags: correct when clean and under every attack."""
    robust = clean_correct.clone().bool()
    for flags in correct.values():
        robust &= flags.bool()
    return robust


def summarize(clean_correct: torch.Tensor, correct: Mapping[str, torch.Tensor],
              settings: Mapping[str, dict] | None = None) -> EvalResult:
    """Build an :class:`EvalResult` from per-example flags (pure)."""
    n = int(clean_correct.numel())
    if n == 0:
        raise ValueError("cannot summarise an evaluation of 0 examples")
    robust = worst_case(clean_correct, correct)
    per_attack = {name: float((flags.bool() & clean_correct.bool()).float().mean())
                  for name, flags in correct.items()}
    flags = {"clean": clean_correct.bool(), **{k: v.bool() for k, v in correct.items()},
             "worst_case": robust}
    return EvalResult(n=n, clean_accuracy=float(clean_correct.float().mean()),
                      attack_accuracy=per_attack, worst_case_accuracy=float(robust.float().mean()),
                      attack_settings=dict(settings or {}), correct=flags)


def robust_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    attacks: Mapping[str, Attack], *, batch_size: int = 256,
                    settings: Mapping[str, dict] | None = None,
                    extra_correct: Mapping[str, torch.Tensor] | None = None,
                    progress: bool = False) -> EvalResult:
    """Clean, per-attack and worst-case accuracy of ``model`` on (x, y).

    Each attack is a callable ``attack(model, x, y) -> x_adv`` and runs on every
    example that is correct when clean. ``extra_correct`` merges flags computed
    elsewhere (e.g. AutoAttack's) into the worst case.
    """
    clean_correct = predict(model, x, batch_size).eq(y.cpu())
    correct, seconds = {}, {}
    for name, attack in attacks.items():
        started = time.perf_counter()
        correct[name] = attack_correct(model, x, y, attack, attack_only=clean_correct,
                                       batch_size=batch_size, desc=name, progress=progress)
        seconds[name] = time.perf_counter() - started
    correct.update(extra_correct or {})
    return replace(summarize(clean_correct, correct, settings), attack_seconds=seconds)
