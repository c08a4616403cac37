"""CIFAR-10 from the ``cifar-10-batches-py`` pickles (Krizhevsky 2009).

Why: these are the files everyone has (``cifar-10-python.tar.gz``), and no
registry reachable here ships them. Each batch is a Python 2 pickle of a dict
with b"data" (uint8 [N, 3072], channel-major 3x32x32) and b"labels" (a list of
ints); it is read through the restricted unpickler, so a tampered file cannot
run code. The five training batches are concatenated; ``test_batch`` is the test set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from adrnet.data.info import BUILT_IN, RawSplits, check_labels
from adrnet.data.paths import search_roots
from adrnet.data.safe_pickle import safe_load
from adrnet.errors import DataError

FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
#: A batch holds 10 000 images of 3072 bytes; its labels, file names and pickle
#: framing add about 0.3 MB (2 MiB allowed).
BATCH_LIMIT = 10_000 * 3072 + 2 * 2**20


def _field(batch: dict, key: str):
    return batch.get(key.encode(), batch.get(key))


def read_batch(path: Path, how_to_get: str) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N, 3, 32, 32] and int64 labels of one CIFAR-10 batch file."""
    batch = safe_load(path, "bytes", how_to_get, BATCH_LIMIT, "a CIFAR-10 batch")
    if not isinstance(batch, dict):
        raise DataError(f"{path}: expected a dict with b'data' and b'labels'; {how_to_get}")
    images, labels = _field(batch, "data"), _field(batch, "labels")
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8
            and images.ndim == 2 and images.shape[1] == 3072):
        found = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise DataError(f"{path}: b'data' is {found}, expected uint8 [N, 3072]; {how_to_get}")
    if not isinstance(labels, (list, tuple, np.ndarray)) or not all(
            isinstance(label, (int, np.integer)) for label in labels):
        raise DataError(f"{path}: b'labels' is not a list of integers; {how_to_get}")
    labels = check_labels(path, np.asarray(labels, dtype=np.int64).reshape(-1),
                          images.shape[0], 10, how_to_get)
    return images.reshape(-1, 3, 32, 32), labels


def read_cifar_folder(folder: Path, how_to_get: str) -> RawSplits:
    """All five training batches and the test batch in ``folder``."""
    parts = [read_batch(folder / name, how_to_get) for name in TRAIN_BATCHES]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return RawSplits(train=train, test=read_batch(folder / TEST_BATCH, how_to_get),
                     source=str(folder))


def find_cifar10(root) -> RawSplits:
    """CIFAR-10 from ``<root>/cifar-10-batches-py`` (or ``root`` itself)."""
    roots = search_roots(root)
    for base in roots:
        for folder in (base / FOLDER, base):
            if (folder / "data_batch_1").is_file():
                return read_cifar_folder(folder, BUILT_IN["cifar10"].how_to_get(base))
    tried = ", ".join(str(base / FOLDER) for base in roots)
    where = roots[0] if root is not None else "./data"
    raise DataError(f"CIFAR-10 not found (looked in {tried}); {BUILT_IN['cifar10'].how_to_get(where)}")
