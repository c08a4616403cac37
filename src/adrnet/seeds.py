"""Every random draw of a run is seeded by a stable hash of integers it is named by.

Why: the batches (data/batches.py: seeds of (seed, epoch) and (seed, epoch, step)), the
PGD random starts and dropout of each step and the validation attack (train/loop.py:
seeds of (seed, stream, epoch, ...) with their own stream numbers) are pure functions
of these integers, so a run resumed at any step repeats the uninterrupted run bit for
bit, and no consumer draws from another's generator. (The data's seeds carry no stream
number, kept so for bit-identical runs; a validation seed may therefore equal an
augmentation seed, which is harmless: they seed different generators for different
draws.)
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
