"""``describe`` and ``load``: a run's data set from its ``[data]`` config, whatever its kind.

Why one entry point: most data sets have fixed facts (:data:`adrnet.data.DATASETS` holds
MNIST's shape and classes), but the ``npz`` and ``folder`` kinds (data/own.py) read theirs
from the file ``data.path`` names. Everything that needs a data set's facts (the model's
input shape and normalisation, the bound of an L2 radius, the evaluation's data) asks
:func:`describe`, and everything that needs its tensors asks :func:`load`; both dispatch
through the registry: an entry registered with ``from_file=True`` provides
``describe(data)``, ``read(data)`` and ``keys`` (those of :data:`FILE_KEYS` it reads);
any other is the registry's record and its
``load(root, val_size, seed)``. For the built-in data sets nothing changes: ``describe``
returns the registry's record unless ``data.mean`` / ``data.std`` are set.
"""

from __future__ import annotations

import dataclasses

from adrnet.data.info import DATASETS, DatasetInfo, Splits
from adrnet.errors import ConfigError

#: The [data] keys only a data set kind that reads a file takes.
FILE_KEYS = ("path", "layout", "resize", "num_classes")


def reads_file(name: str) -> bool:
    """Whether data set ``name`` reads its facts from the file ``data.path`` names."""
    return name in DATASETS and bool(DATASETS.metadata(name).get("from_file"))


def file_kinds() -> list[str]:
    return [name for name in DATASETS if reads_file(name)]


def check_data_keys(data) -> None:
    """The keys of ``data`` (a DataConfig) that fit its kind: ``path`` set for a kind that
    reads a file, the file keys unset for any other; ``resize`` two sizes; ``std`` > 0."""
    name = data.name
    if name not in DATASETS:
        return
    if reads_file(name):
        if not getattr(data, "path", None):
            raise ConfigError(f"data.name = {name!r} reads a file: set config key 'data.path' "
                              f"(e.g. --set data.path=mine.{'npz' if name == 'npz' else 'dir'}); "
                              "see docs/own_data.md")
        takes = DATASETS.metadata(name).get("keys", FILE_KEYS)
        other = [key for key in FILE_KEYS if key not in takes and getattr(data, key, None) is not None]
        if other:
            raise ConfigError(f"config key 'data.{other[0]}' is not read by data.name = {name!r} "
                              f"(it reads {', '.join(takes)}); remove it")
    else:
        given = [key for key in FILE_KEYS if getattr(data, key, None) is not None]
        if given:
            raise ConfigError(f"config key 'data.{given[0]}' is only read by the data set kinds "
                              f"that read a file ({', '.join(file_kinds())}), not by "
                              f"data.name = {name!r}; remove it")
    resize = getattr(data, "resize", None)
    if resize is not None and (len(resize) != 2 or min(resize) < 1):
        raise ConfigError(f"config key 'data.resize' must be [height, width], two sizes >= 1 "
                          f"(got {list(resize)})")
    std = getattr(data, "std", None)
    if std is not None and (not std or min(std) <= 0):
        raise ConfigError(f"config key 'data.std' must hold numbers > 0 (got {list(std)})")
    mean = getattr(data, "mean", None)
    if mean is not None and not mean:
        raise ConfigError("config key 'data.mean' must hold at least one number")


def describe(data) -> DatasetInfo:
    """The :class:`DatasetInfo` of the data set ``data`` (a DataConfig, or any object with
    its attributes) configures: shape, classes, normalisation (``data.mean``/``data.std``
    when set) and, for a file, its class names and SHA-256."""
    info = DATASETS.get(data.name)
    check_data_keys(data)
    if reads_file(data.name):
        return DATASETS.metadata(data.name)["describe"](data)
    mean, std = getattr(data, "mean", None), getattr(data, "std", None)
    if mean is None and std is None:
        return info
    channels = info.shape[0] if info.shape else 1
    values = {}
    for key, given in (("mean", mean), ("std", std)):
        if given is None:
            continue
        given = tuple(float(v) for v in given)
        if len(given) not in (1, channels):
            raise ConfigError(f"config key 'data.{key}' has {len(given)} values but "
                              f"{data.name} has {channels} channels: give one per channel "
                              "(or one for all)")
        values[key] = given * channels if len(given) == 1 else given
    return dataclasses.replace(info, **values)


def load(data) -> Splits:
    """Train / validation / test tensors of the data set ``data`` configures (its name,
    root or path, val_size and split_seed); see :func:`adrnet.data.load_splits`."""
    from adrnet.data.splits import load_splits
    DATASETS.get(data.name)
    check_data_keys(data)
    if reads_file(data.name):
        return DATASETS.metadata(data.name)["read"](data)
    return load_splits(data.name, root=getattr(data, "root", None),
                       val_size=getattr(data, "val_size", None),
                       seed=getattr(data, "split_seed", 0))


def data_record(info: DatasetInfo | None) -> dict:
    """What a checkpoint records about a data set read from a file (``{}`` for any other):
    its SHA-256, shape, classes and normalisation, so a resume can tell the same file."""
    if info is None or not info.sha256:
        return {}
    return {"data": {"name": info.name, "sha256": info.sha256, "shape": list(info.shape),
                     "num_classes": info.num_classes, "classes": list(info.classes),
                     "mean": list(info.mean), "std": list(info.std)}}


def splits_sha256(splits: dict) -> str:
    """SHA-256 of the tensors of ``splits`` (name -> (inputs, labels, ...)): their dtypes,
    shapes and bytes, in order. Why: it names the data a run trains and validates on
    whatever the source (a built-in set under any ``data.root``, a file, tensors passed to
    ``train()``), so a resume can tell the same data at another place from other data."""
    import hashlib

    import torch
    digest = hashlib.sha256()
    for tensors in splits.values():
        for tensor in tensors:
            flat = tensor.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
            digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()
