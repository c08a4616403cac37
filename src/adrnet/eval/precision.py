"""Attacks in bf16, every break verified on the fp32 model.

Why: on CPUs with native bf16 (AMX, AVX512-BF16) a forward and backward pass in bf16 with
channels_last is 2-3 times as fast as in fp32, and attacks are nothing but such passes.
But a robustness number must be the fp32 model's: an adversarial point found on the bf16
copy counts as a break only if the fp32 model misclassifies it too. A point that fools
only the bf16 copy (bf16 rounding flipped its decision) is counted robust and tallied
(``eval.json``'s ``bf16_only``), so a weaker bf16 attack can lower no number; it can only
find fewer breaks, which the benchmark (benchmarks/eval_speed.py) measures. Clean
accuracy is always the fp32 model's.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from adrnet.attacks import attack_mode
from adrnet.device import as_float32, autocast_context

PRECISIONS = ("fp32", "bf16")


class LowPrecision(nn.Module):
    """A copy of ``model`` in channels_last that runs under bf16 autocast and returns fp32
    logits (and latents), so that the attacks' losses are computed in fp32."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        self.device = next(self.model.parameters()).device

    def forward(self, x: torch.Tensor, **kwargs):
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_context(self.device, "bf16"):
            out = self.model(x, **kwargs)
        return tuple(map(as_float32, out)) if isinstance(out, tuple) else as_float32(out)


class VerifiedAttack:
    """``attack`` run on the bf16 copy; the points it returns are judged by the caller on
    the fp32 model, and those that fool the bf16 copy only are counted in ``bf16_only``."""

    def __init__(self, attack, fast: LowPrecision):
        self.attack, self.fast, self.bf16_only = attack, fast, 0

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_adv = self.attack(self.fast, x, y)
        with torch.no_grad(), attack_mode(model), attack_mode(self.fast):
            fools_fast = self.fast(x_adv).argmax(1) != y
            fools_fp32 = model(x_adv).argmax(1) != y
        self.bf16_only += int((fools_fast & ~fools_fp32).sum())
        return x_adv
