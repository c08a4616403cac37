"""Sanity checks against gradient masking, stored as pass/fail flags.

Why: Carlini et al. (2019, "On Evaluating Adversarial Robustness", §5) and
Athalye et al. (ICML 2018) list the symptoms of an evaluation fooled by
obfuscated gradients. Each check below tests one symptom on a subset:
1. ``large_eps_chance``: PGD on the CW margin from x (no random start) at an ε
   covering the whole [0, 1] box must bring accuracy down to chance (1/C) or below.
2. ``more_steps``, ``more_restarts``: 5× the PGD steps, or 5 restarts, must not
   raise accuracy above the base PGD's.
3. ``square_vs_whitebox``: the black-box Square attack (Andriushchenko et al.,
   ECCV 2020, via pyautoattack) must not beat the strongest white-box PGD.
4. ``noise_vs_pgd``: random noise of size ε (the worst of several draws on the
   ball's surface) must not beat PGD.
5. ``deterministic``: two forward passes give the same logits.
A failed check does not prove masking, but the number it guards is not trusted.
Threat model: the L∞ or L2 ball of the evaluation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from adrnet.attacks import ATTACKS, attack_mode, make_threat
from adrnet.attacks.threats import per_example_norm
from adrnet.eval.robust import (attack_correct, model_device, num_outputs, predict,
                               worst_case)


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    message: str
    values: dict


@dataclass(frozen=True)
class SanityReport:
    checks: dict[str, Check]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks.values())

    @property
    def flags(self) -> list[str]:
        """Names of the failed checks (empty when everything looks sound)."""
        return [name for name, c in self.checks.items() if not c.passed]

    def to_dict(self) -> dict:
        return {"passed": self.passed, "flags": self.flags,
                "checks": {k: asdict(c) for k, c in self.checks.items()}}


def random_noise_attack(norm: str, eps: float, draws: int = 10):
    """``attack(model, x, y)``: per example, the first of ``draws`` ε-noises that fools."""
    def attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        best = x.clone()
        fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for _ in range(draws):
            noise = torch.randn_like(x)
            if norm == "linf":
                noise = eps * noise.sign()
            else:
                noise = eps * noise / per_example_norm(noise).clamp_min(1e-12)
            x_noisy = (x + noise).clamp(0, 1)
            new = predict(model, x_noisy).to(x.device).ne(y) & ~fooled
            best[new], fooled = x_noisy[new], fooled | new
            best[~fooled] = x_noisy[~fooled]
        return best
    return attack


def _acc(flags: torch.Tensor) -> float:
    return float(flags.float().mean())


def check_determinism(model: nn.Module, x: torch.Tensor, rtol: float = 1e-5) -> Check:
    with attack_mode(model), torch.no_grad():
        first, second = model(x.to(model_device(model))), model(x.to(model_device(model)))
    diff = float((first - second).abs().max())
    scale = float(first.abs().max()) + 1.0
    passed = diff <= rtol * scale
    msg = "two passes agree" if passed else f"logits differ by {diff:.3g} across two passes (randomised model?)"
    return Check("deterministic", passed, msg, {"max_abs_diff": diff})


def check_large_eps(model, x, y, clean, *, norm, steps, num_classes, batch_size) -> Check:
    big = 1.0 if norm == "linf" else math.sqrt(x[0].numel())
    # CW margin, not CE: a confident model's softmax can underflow to a zero CE gradient
    attack = ATTACKS.get("cw").make(make_threat(norm, big), steps=steps, random_start=False)
    acc = _acc(attack_correct(model, x, y, attack, attack_only=clean, batch_size=batch_size))
    chance = 1.0 / num_classes
    passed = acc <= chance + 1e-9
    msg = (f"accuracy {acc:.3f} at eps={big:.3g} (chance {chance:.3f})" +
           ("" if passed else ": an attack that may pick any image should win; gradients look masked"))
    return Check("large_eps_chance", passed, msg, {"eps": big, "accuracy": acc, "chance": chance})


def _not_higher(name, what, acc, base, tol) -> Check:
    passed = acc <= base + tol
    msg = f"{what}: {acc:.3f} vs base {base:.3f}" + ("" if passed else " (stronger attack scored higher)")
    return Check(name, passed, msg, {"accuracy": acc, "base_accuracy": base, "tolerance": tol})


def _not_beating(name, what, acc, ref, ref_name, tol) -> Check:
    passed = acc >= ref - tol
    msg = f"{what}: {acc:.3f} vs {ref_name} {ref:.3f}" + ("" if passed else " (beats the gradient attack)")
    return Check(name, passed, msg, {"accuracy": acc, "whitebox_accuracy": ref, "tolerance": tol})


def sanity_checks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str, eps: float,
                  steps: int = 20, num_classes: int | None = None, batch_size: int = 256,
                  square: bool = True, square_queries: int = 1000, noise_draws: int = 10,
                  tolerance: float | None = None, seed: int = 0) -> SanityReport:
    """Run the five masking checks on (x, y); keep x small (a few hundred images).

    Seeded by ``seed`` and run under a forked RNG: reproducible, and the caller's
    global random state is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _run_checks(model, x, y, norm=norm, eps=eps, steps=steps, num_classes=num_classes,
                           batch_size=batch_size, square=square, square_queries=square_queries,
                           noise_draws=noise_draws, tolerance=tolerance, seed=seed)


def _run_checks(model, x, y, *, norm, eps, steps, num_classes, batch_size, square,
                square_queries, noise_draws, tolerance, seed) -> SanityReport:
    tol = max(0.01, 2.0 / len(x)) if tolerance is None else tolerance
    num_classes = num_classes or num_outputs(model, x[:1])
    clean = predict(model, x, batch_size).eq(y.cpu())
    pgd, threat = ATTACKS.get("pgd"), make_threat(norm, eps)
    def run(**options):  # same seed for every run: same first random start, less noise
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return attack_correct(model, x, y, pgd.make(threat, **options), attack_only=clean,
                                  batch_size=batch_size)
    base = run(steps=steps)
    # same step size, 5x as far (at eps = 0 the step is 0, which an explicit step size refuses)
    step = pgd.settings(threat, pgd.options(steps=steps))["step_size"]
    longer = run(steps=5 * steps, step_size=step if step > 0 else None)
    restarts = run(steps=steps, restarts=5)
    whitebox = _acc(worst_case(clean, {"a": base, "b": longer, "c": restarts}))
    noise = attack_correct(model, x, y, random_noise_attack(norm, eps, noise_draws),
                           attack_only=clean, batch_size=batch_size)
    checks = [check_large_eps(model, x, y, clean, norm=norm, steps=steps, num_classes=num_classes,
                              batch_size=batch_size),
              _not_higher("more_steps", f"PGD-{5 * steps}", _acc(longer), _acc(base), tol),
              _not_higher("more_restarts", f"PGD-{steps}x5", _acc(restarts), _acc(base), tol),
              _not_beating("noise_vs_pgd", f"random noise ({noise_draws} draws)", _acc(noise), _acc(base),
                           f"PGD-{steps}", tol),
              check_determinism(model, x[:batch_size])]
    if square:
        aa = ATTACKS.get("autoattack")
        sq = aa.evaluate(model, x, y, threat, device=model_device(model), batch_size=batch_size,
                         progress=False, **aa.options(version="custom", attacks=["square"], seed=seed,
                                                      square_queries=square_queries))
        checks.append(_not_beating("square_vs_whitebox", f"Square ({square_queries} queries)",
                                   _acc(sq.correct), whitebox, "strongest PGD", tol))
    return SanityReport({c.name: c for c in checks})
