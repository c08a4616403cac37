"""Raw splits as read from disk, before conversion to float tensors.

Why a separate record: every image source (IDX, pickle, CIFAR batches) yields
uint8 pixels; converting once, in one place, guarantees the same k/255 values
whatever file a data set came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adrnet.errors import DataError


@dataclass(frozen=True)
class RawSplits:
    """uint8 images [N, C, H, W] and int64 labels; ``val`` only if the source has one."""

    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray] | None = None
    source: str = ""


def check_labels(path: Path, labels: np.ndarray, count: int, num_classes: int,
                 how_to_get: str) -> np.ndarray:
    """Return ``labels`` as int64 after checking their count and range."""
    if labels.ndim != 1 or labels.shape[0] != count:
        raise DataError(
            f"{path}: {labels.shape[0] if labels.ndim == 1 else labels.shape} labels "
            f"for {count} images; {how_to_get}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: labels have dtype {labels.dtype}, not integers; {how_to_get}")
    if count and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"{path}: labels outside [0, {num_classes}) (found {labels.min()}..{labels.max()}); "
            f"{how_to_get}"
        )
    return labels.astype(np.int64)
