"""CIFAR-10 training augmentation: pad-4 zero-padded random crop + horizontal flip.

Why plain torch: torchvision is not a dependency (design.md), and the standard
recipe of adversarial-training papers (Madry et al. 2018; Bui et al. 2020) is
this one transform. It is vectorised (one gather for the whole batch) and all
randomness comes from the ``generator`` passed in, so a batch's augmentation is
reproducible from its seed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Each image of ``x`` [N, C, H, W]: zero-pad by ``pad``, crop a random H x W
    window, flip it left-right with probability 1/2. Returns a new tensor."""
    count, _, height, width = x.shape
    offsets = torch.randint(0, 2 * pad + 1, (count, 2), generator=generator,
                            device=generator.device).to(x.device)
    flips = torch.randint(0, 2, (count,), generator=generator,
                          device=generator.device).to(x.device).bool()
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = offsets[:, :1] + torch.arange(height, device=x.device)
    cols = offsets[:, 1:] + torch.arange(width, device=x.device)
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    batch = torch.arange(count, device=x.device)[:, None, None]
    cropped = padded[batch, :, rows[:, :, None], cols[:, None, :]]  # [N, H, W, C]
    return cropped.permute(0, 3, 1, 2).contiguous()
