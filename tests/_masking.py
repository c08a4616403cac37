"""Deliberately gradient-masking models, to test the masking checks (tests only).

Why: Athalye, Carlini & Wagner (ICML 2018, "Obfuscated Gradients Give a False
Sense of Security") show that defences which break gradients look robust to
PGD while being broken by gradient-free or adaptive attacks. These wrappers
reproduce the two classic failure modes around any classifier so that
``adrnet.eval.sanity`` can be shown to flag them:
- ``QuantizedInput``: shattered gradients. Inputs are rounded to a few grey
  levels; ``torch.round`` has zero gradient, so every gradient attack stalls.
- ``NoisyLogits``: stochastic gradients. Gaussian noise on the input at every
  forward pass, eval mode included, so two passes disagree.
They change the model, not the attack. Not for real use.
"""

from __future__ import annotations

import torch
from torch import nn


def _call(model: nn.Module, x: torch.Tensor, return_latent: bool):
    return model(x, return_latent=True) if return_latent else model(x)


class QuantizedInput(nn.Module):
    """``model(round(x·(L−1))/(L−1))``: identical predictions, zero input gradient."""

    def __init__(self, model: nn.Module, levels: int = 2) -> None:
        super().__init__()
        if levels < 2:
            raise ValueError("levels must be >= 2")
        self.model, self.levels = model, levels

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * (self.levels - 1)) / (self.levels - 1)

    def forward(self, x: torch.Tensor, return_latent: bool = False):
        return _call(self.model, self.quantize(x), return_latent)

    def forward_stages(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model.forward_stages(self.quantize(x))


class NoisyLogits(nn.Module):
    """``model(x + σ·N(0, I))`` at every call: a randomised (non-deterministic) model."""

    def __init__(self, model: nn.Module, sigma: float = 0.1) -> None:
        super().__init__()
        self.model, self.sigma = model, sigma

    def forward(self, x: torch.Tensor, return_latent: bool = False):
        return _call(self.model, (x + self.sigma * torch.randn_like(x)).clamp(0, 1), return_latent)
