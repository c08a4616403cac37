"""CIFAR-10 and CIFAR-100 from their python pickles (Krizhevsky 2009).

Why: these are the files everyone has (``cifar-10-python.tar.gz``,
``cifar-100-python.tar.gz``; ``adrnet data fetch`` downloads and checks them). Each
CIFAR-10 batch is a Python 2 pickle of a dict with b"data" (uint8 [N, 3072],
channel-major 3x32x32) and b"labels" (a list of ints); the five training batches are
concatenated and ``test_batch`` is the test set. CIFAR-100 has one ``train`` (50 000
images) and one ``test`` (10 000) pickle in ``cifar-100-python``, of the same layout
with b"fine_labels" (the 100 classes used here) and b"coarse_labels" (20 superclasses,
unused). Every file is read through the restricted unpickler, so a tampered file
cannot run code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from adrnet.data.info import BUILT_IN, RawSplits, check_labels, refuse_empty
from adrnet.data.paths import search_roots
from adrnet.data.safe_pickle import safe_load
from adrnet.errors import DataError

FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
#: A batch holds 10 000 images of 3072 bytes; its labels, file names and pickle
#: framing add about 0.3 MB (2 MiB allowed).
BATCH_LIMIT = 10_000 * 3072 + 2 * 2**20

FOLDER_100 = "cifar-100-python"
TRAIN_100, TEST_100 = "train", "test"
#: CIFAR-100's ``train`` pickle holds 50 000 images of 3072 bytes; its two label lists,
#: file names and framing add about 2 MB (8 MiB allowed).
TRAIN_100_LIMIT = 50_000 * 3072 + 8 * 2**20


def _field(batch: dict, key: str):
    return batch.get(key.encode(), batch.get(key))


def read_batch(path: Path, how_to_get: str, *, label_key: str = "labels", num_classes: int = 10,
               limit: int = BATCH_LIMIT, what: str = "a CIFAR-10 batch",
               ) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N, 3, 32, 32] and int64 labels of one CIFAR batch file (CIFAR-10's
    b"labels" by default; CIFAR-100 passes ``label_key="fine_labels"``)."""
    batch = safe_load(path, "bytes", how_to_get, limit, what)
    if not isinstance(batch, dict):
        raise DataError(f"{path}: expected a dict with b'data' and b'{label_key}'; {how_to_get}")
    images, labels = _field(batch, "data"), _field(batch, label_key)
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8
            and images.ndim == 2 and images.shape[1] == 3072):
        found = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise DataError(f"{path}: b'data' is {found}, expected uint8 [N, 3072]; {how_to_get}")
    if not isinstance(labels, (list, tuple, np.ndarray)) or not all(
            isinstance(label, (int, np.integer)) for label in labels):
        raise DataError(f"{path}: b'{label_key}' is not a list of integers; {how_to_get}")
    labels = check_labels(path, np.asarray(labels, dtype=np.int64).reshape(-1),
                          images.shape[0], num_classes, how_to_get)
    return images.reshape(-1, 3, 32, 32), labels


def read_cifar_folder(folder: Path, how_to_get: str) -> RawSplits:
    """All five training batches and the test batch in ``folder``."""
    parts = [read_batch(folder / name, how_to_get) for name in TRAIN_BATCHES]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    refuse_empty(folder, len(train[1]), "train", how_to_get)
    test = read_batch(folder / TEST_BATCH, how_to_get)
    refuse_empty(folder / TEST_BATCH, len(test[1]), "test", how_to_get)
    return RawSplits(train=train, test=test, source=str(folder))


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


def read_cifar100_folder(folder: Path, how_to_get: str) -> RawSplits:
    """The ``train`` and ``test`` pickles of CIFAR-100 in ``folder`` (fine labels)."""
    def read(name: str, limit: int) -> tuple[np.ndarray, np.ndarray]:
        pair = read_batch(folder / name, how_to_get, label_key="fine_labels", num_classes=100,
                          limit=limit, what="a CIFAR-100 pickle")
        refuse_empty(folder / name, len(pair[1]), name, how_to_get)  # name: "train" or "test"
        return pair
    return RawSplits(train=read(TRAIN_100, TRAIN_100_LIMIT), test=read(TEST_100, BATCH_LIMIT),
                     source=str(folder))


def find_cifar100(root) -> RawSplits:
    """CIFAR-100 from ``<root>/cifar-100-python`` (or ``root`` itself when so named)."""
    roots = search_roots(root)
    for base in roots:
        for folder in (base / FOLDER_100, base):
            if folder.name == FOLDER_100 and (folder / TRAIN_100).is_file():
                return read_cifar100_folder(folder, BUILT_IN["cifar100"].how_to_get(base))
    tried = ", ".join(str(base / FOLDER_100) for base in roots)
    where = roots[0] if root is not None else "./data"
    raise DataError(f"CIFAR-100 not found (looked in {tried}); "
                    f"{BUILT_IN['cifar100'].how_to_get(where)}")
