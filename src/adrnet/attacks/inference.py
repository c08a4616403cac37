"""Batched, eval-mode predictions: what attacks that judge their own points need.

Why here and not in ``adrnet.eval``: AutoAttack's adapter (``attacks.autoattack``)
counts an example as broken by the model's prediction on its point, and attacks may
import only base modules and themselves; ``adrnet.eval.robust`` imports these too.
Every helper puts the model in eval mode for the call and restores every submodule's
own mode afterwards (:func:`adrnet.attacks.attack_mode`).
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

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


@torch.no_grad()
def eval_batches(model: nn.Module, x: torch.Tensor, fn, batch_size: int = 256) -> list[torch.Tensor]:
    """``fn(model, batch)`` on CPU for each batch of ``x``, in eval mode (modes restored)."""
    device = model_device(model)
    with attack_mode(model):
        return [fn(model, x[i:i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)]


def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Predicted labels in eval mode (every submodule's mode is restored), on CPU."""
    parts = eval_batches(model, x, lambda m, xb: m(xb).argmax(1), batch_size)
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
