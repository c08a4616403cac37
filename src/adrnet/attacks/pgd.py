"""Projected gradient descent (Madry et al., ICLR 2018): the one attack loop.

L∞ and L2 differ only in the threat model (init/step/project, see
``threats.py``); CE, CW-margin and TRADES-KL attacks differ only in the loss
(``losses.py``); FGSM (Goodfellow et al., ICLR 2015) is this loop with one
step of size ε and no random start. Gradients are taken with respect to the
input only (``torch.autograd.grad``), which skips the weight gradients that
``loss.backward()`` would compute (about 40% faster on CPU).

The model is passed at call time and switched to eval mode for the attack
(BatchNorm uses running statistics, dropout is off), as in the PyTorch
reference of ADR; ``keep_train_mode=True`` keeps train mode, as the
TensorFlow original did (note: BatchNorm running statistics then also move
during the attack). Every module's mode is restored afterwards.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

import torch

from adrnet.attacks.losses import get_loss
from adrnet.attacks.threats import trades_init
from adrnet.errors import ConfigError


#: Called before every PGD step while set (:func:`checking_each_step`); it may raise to end
#: the attack early. Training's validation sets it to the stop flag of SIGINT/SIGTERM, so a
#: signal ends a long attack within one step. Unset (the default) nothing is called, and
#: a check that does not raise changes no number: it reads no tensor and draws nothing.
STEP_CHECK: ContextVar = ContextVar("adrnet_pgd_step_check", default=None)


@contextmanager
def checking_each_step(check):
    """Run ``check()`` before every PGD step inside the body (None: no check)."""
    token = STEP_CHECK.set(check)
    try:
        yield
    finally:
        STEP_CHECK.reset(token)


@contextmanager
def attack_mode(model: torch.nn.Module, keep_train_mode: bool = False):
    """Run the body with the model in eval mode (unless asked not to), then restore
    every submodule's own mode (a frozen BatchNorm inside a training model stays frozen)."""
    modes = [(module, module.training) for module in model.modules()]
    if not keep_train_mode:
        model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def _start(threat, x, random_start, loss):
    """Starting point: none, uniform in the ball (Madry), or 0.001·N(0, I) (TRADES).

    ``random_start=True`` picks the standard start of the loss: TRADES' for
    "kl", uniform for the others.
    """
    if random_start is False or random_start == "none":
        return x.clone()
    if random_start == "normal" or (random_start is True and loss == "kl"):
        return trades_init(threat, x)
    if random_start is True or random_start == "uniform":
        return threat.init(x)
    raise ConfigError(f"random_start must be True, False, 'uniform', 'normal' or 'none', got {random_start!r}")


def _objective(model, x_adv, y, loss_fn, logits_clean, sign):
    logits = model(x_adv)
    return sign * loss_fn(logits, y, logits_clean), logits


def _ascend(model, x, y, threat, steps, step_size, loss, random_start, logits_clean, sign):
    """One PGD run from one start; returns the final iterate (detached)."""
    loss_fn = get_loss(loss)
    x_adv = _start(threat, x, random_start, loss)
    check = STEP_CHECK.get()
    for _ in range(steps):
        if check is not None:
            check()
        x_adv.requires_grad_(True)
        per_example, _ = _objective(model, x_adv, y, loss_fn, logits_clean, sign)
        (grad,) = torch.autograd.grad(per_example.sum(), x_adv)
        x_adv = threat.project(threat.step(x_adv.detach(), grad, step_size), x)
    return x_adv.detach()


@torch.no_grad()
def _score(model, x_adv, y, loss, logits_clean, sign):
    """(fooled, loss) per example: the criteria that rank restarts."""
    per_example, logits = _objective(model, x_adv, y, get_loss(loss), logits_clean, sign)
    hit = logits.argmax(1) == y
    fooled = hit if sign < 0 else ~hit
    return fooled, per_example.float()


def default_step_size(eps: float, steps: int) -> float:
    """2.5 ε / k: the step size at which k PGD steps can cross the ball and back
    (Madry et al., ICLR 2018), used wherever the user leaves it unset."""
    return 2.5 * eps / steps


def pgd(model, x, y, *, threat, steps, step_size, loss="ce", random_start=True,
        restarts=1, targeted=False, keep_train_mode=False, logits_clean=None):
    """Return adversarial examples x' with x' in the threat's ball around x and in [0, 1].

    ``targeted=True`` reads ``y`` as target labels and minimises the loss
    towards them. With ``restarts > 1`` each example keeps its strongest run:
    a misclassifying one first, then the highest loss. ``logits_clean`` is the
    constant clean side of the "kl" loss; it is computed here when omitted.
    The input ``x`` is never modified, and no parameter gradient is touched.
    """
    if steps < 0 or restarts < 1:
        raise ConfigError(f"PGD needs steps >= 0 and restarts >= 1, got {steps} and {restarts}")
    threat.check_input(x)
    sign = -1.0 if targeted else 1.0
    with attack_mode(model, keep_train_mode), torch.enable_grad():
        if loss == "kl" and logits_clean is None:
            with torch.no_grad():
                logits_clean = model(x)
        run = (model, x, y, threat, steps, step_size, loss, random_start, logits_clean, sign)
        best = _ascend(*run)
        if restarts == 1:
            return best
        best_fooled, best_loss = _score(model, best, y, loss, logits_clean, sign)
        for _ in range(restarts - 1):
            candidate = _ascend(*run)
            fooled, cand_loss = _score(model, candidate, y, loss, logits_clean, sign)
            better = (fooled & ~best_fooled) | ((fooled == best_fooled) & (cand_loss > best_loss))
            best[better] = candidate[better]
            best_fooled, best_loss = best_fooled | fooled, torch.where(better, cand_loss, best_loss)
    return best


def fgsm(model, x, y, *, threat, loss="ce", targeted=False, keep_train_mode=False):
    """FGSM: one PGD step of size ε from the clean input (no random start)."""
    return pgd(model, x, y, threat=threat, steps=1, step_size=threat.eps, loss=loss,
               random_start=False, targeted=targeted, keep_train_mode=keep_train_mode)
