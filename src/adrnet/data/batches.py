"""Mini-batches whose order and augmentation depend only on (seed, epoch, step).

Why: a run killed mid-epoch and resumed at ``start_step`` must see exactly the
batches the uninterrupted run saw (bit-identical resume), and all DDP ranks must
agree on one permutation without communicating. So nothing here keeps state:
the epoch's permutation comes from a generator seeded with (seed, epoch), and a
step's augmentation from one seeded with (seed, epoch, step).

Distributed convention: ``batch_size`` is the per-rank batch. The permutation is
cut into global batches of ``batch_size * world_size`` examples and rank r takes
the r-th contiguous slice of each. A short last global batch (when not
``drop_last``) is padded, by wrapping around to the start of the permutation,
to a multiple of ``world_size`` so every rank gets the same number of examples
and steps (as torch's DistributedSampler does). Augmentation is applied to the
whole global batch before slicing, so the union of the ranks' batches equals
the single-process batch of size ``batch_size * world_size``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from adrnet.errors import ConfigError
from adrnet.seeds import seeded_generator

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _check(batch_size: int, start_step: int, rank: int, world_size: int) -> None:
    if batch_size < 1 or world_size < 1 or start_step < 0 or not 0 <= rank < world_size:
        raise ConfigError(
            f"invalid batching: batch_size={batch_size} (>= 1), start_step={start_step} "
            f"(>= 0), rank={rank} (in [0, world_size)), world_size={world_size} (>= 1)"
        )


def _global_indices(order: torch.Tensor, step: int, global_size: int, world_size: int):
    indices = order[step * global_size:(step + 1) * global_size]
    short = -len(indices) % world_size
    if short:
        wrap = order.repeat(math.ceil(short / len(order)))[:short]
        indices = torch.cat([indices, wrap])
    return indices


def iterate_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, *, seed: int,
                    epoch: int, start_step: int = 0, shuffle: bool = True,
                    augment: Augment | None = None, drop_last: bool = False,
                    rank: int = 0, world_size: int = 1
                    ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Yield ``(step, xb, yb)`` for this rank, from ``start_step`` to the end of
    the epoch. ``augment(x, generator)`` (e.g. random_crop_flip) if given."""
    _check(batch_size, start_step, rank, world_size)
    count, global_size = x.shape[0], batch_size * world_size
    order = (torch.randperm(count, generator=seeded_generator(seed, epoch)) if shuffle
             else torch.arange(count))
    steps = count // global_size if drop_last else math.ceil(count / global_size)
    for step in range(start_step, steps):
        indices = _global_indices(order, step, global_size, world_size)
        xb = x[indices]
        if augment is not None:
            xb = augment(xb, seeded_generator(seed, epoch, step))
        share = len(indices) // world_size
        mine = slice(rank * share, (rank + 1) * share)
        yield step, xb[mine], y[indices[mine]]


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
