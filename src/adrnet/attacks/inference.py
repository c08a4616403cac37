"""Batched, eval-mode predictions, and correctness under an attack.

Why here and not in ``adrnet.eval``: AutoAttack's adapter (``attacks.autoattack``)
counts an example as broken by the model's prediction on its point, and attacks may
import only base modules and themselves; ``adrnet.eval.robust`` (the worst case over
attacks) and training's validation (``adrnet.train.loop.validate``) are built from
:func:`predict` and :func:`attack_correct` too, so both count an example alike.
Every helper puts the model in eval mode for the call and restores every submodule's
own mode afterwards (:func:`adrnet.attacks.attack_mode`).
"""

from __future__ import annotations

import itertools
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from adrnet.attacks.pgd import attack_mode


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for none)."""
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    return torch.device("cpu") if first is None else first.device


@torch.no_grad()
def num_outputs(model: nn.Module, x: torch.Tensor) -> int:
    """Number of logits (classes) the model gives for ``x`` (eval mode, modes restored)."""
    with attack_mode(model):
        return int(model(x.to(model_device(model))).shape[1])


Place = Callable[[torch.Tensor], torch.Tensor]


def _placer(model: nn.Module, place: Place | None) -> Place:
    """How a batch reaches the model: ``place`` (e.g. channels_last on the run's device),
    else onto the model's device."""
    if place is not None:
        return place
    device = model_device(model)
    return lambda t: t.to(device)


@torch.no_grad()
def eval_batches(model: nn.Module, x: torch.Tensor, fn, batch_size: int = 256,
                 place: Place | None = None) -> list[torch.Tensor]:
    """``fn(model, batch)`` on CPU for each batch of ``x``, in eval mode (modes restored)."""
    place = _placer(model, place)
    with attack_mode(model):
        return [fn(model, place(x[i:i + batch_size])).cpu() for i in range(0, len(x), batch_size)]


def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 256,
            place: Place | None = None) -> torch.Tensor:
    """Predicted labels in eval mode (every submodule's mode is restored), on CPU."""
    parts = eval_batches(model, x, lambda m, xb: m(xb).argmax(1), batch_size, place)
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)


def attack_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack, *,
                   attack_only: torch.Tensor | None = None, batch_size: int = 256,
                   desc: str | None = None, progress: bool = False,
                   place: Place | None = None) -> torch.Tensor:
    """Per-example flag: still classified correctly after ``attack(model, x, y) -> x_adv``.

    Examples outside ``attack_only`` (e.g. already wrong when clean) are not
    attacked and count as not correct, which is what the worst case needs; the
    batches are attacked in order, so the attacks' random draws follow the examples.
    """
    todo = torch.ones(len(x), dtype=torch.bool) if attack_only is None else attack_only.clone()
    correct = torch.zeros(len(x), dtype=torch.bool)
    index = todo.nonzero().flatten()
    place = _placer(model, place)
    for start in tqdm(range(0, len(index), batch_size), desc=desc, disable=not progress,
                      leave=False):
        batch = index[start:start + batch_size]
        xb, yb = place(x[batch]), place(y[batch])
        x_adv = attack(model, xb, yb)
        correct[batch] = predict(model, x_adv, batch_size, place).eq(yb.cpu())
    return correct
