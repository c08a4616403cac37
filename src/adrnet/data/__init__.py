"""adrnet.data: MNIST, Fashion-MNIST, CIFAR-10 and toy 2-D sets from local files.

Why: adversarial training needs inputs in [0, 1] (the box every attack stays in), a
held-out validation split for checkpoint selection, and batches that are reproducible
for resumable and distributed runs. Loading never touches the network; ``fetch_mnist``
is the only function that does, and only when the user asks (``adrnet data fetch
mnist``). Default data locations: see :mod:`adrnet.data.paths`.
"""

from adrnet.data.batches import iterate_batches, random_crop_flip
from adrnet.data.fetch import fetch_mnist
from adrnet.data.info import DATASETS, DatasetInfo, Splits, TensorPair
from adrnet.data.paths import default_cache_dir, default_roots
from adrnet.data.splits import default_val_size, load_splits, register_dataset

__all__ = [
    "DATASETS", "DatasetInfo", "Splits", "TensorPair", "default_cache_dir", "default_roots",
    "default_val_size", "fetch_mnist", "iterate_batches", "load_splits", "random_crop_flip",
    "register_dataset",
]
