"""Every random draw of a run is seeded by a stable hash of integers it is named by.

Why: the batches (data/batches.py), the PGD random starts and dropout of each step and
the validation attack (train/loop.py) are pure functions of (seed, stream, epoch, step,
...), so a run resumed at any step repeats the uninterrupted run bit for bit, and no
stream consumes another's random numbers. Each consumer passes its own stream number.
"""

from __future__ import annotations

import hashlib

import torch


def derived_seed(*parts: int) -> int:
    """A 63-bit seed that is a stable hash (BLAKE2b) of the integers ``parts``."""
    digest = hashlib.blake2b(repr(tuple(int(p) for p in parts)).encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") >> 1


def seeded_generator(*parts: int) -> torch.Generator:
    """A CPU generator seeded with :func:`derived_seed` of ``parts``."""
    return torch.Generator().manual_seed(derived_seed(*parts))
