"""Tests of adrnet.data loaders: real on-disk formats, errors, splits, values."""

from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from adrnet.data import DATASETS, default_cache_dir, default_val_size, load_splits
from adrnet.data.fetch import SHA256, sha256_of
from adrnet.errors import ConfigError, DataError

IMAGE_SETS = ["mnist", "fashion_mnist", "cifar10", "cifar100"]
TOY_SETS = ["moons", "circles", "blobs"]
FILE_KINDS = ["npz", "folder"]  # facts read from the file data.path names (tests/test_own_data.py)


def _rows(x: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in x.reshape(x.shape[0], -1)}


@pytest.mark.parametrize("name", [name for name in DATASETS if name not in FILE_KINDS])
def test_registry_entries_are_consistent(name):
    info = DATASETS[name]
    assert info.name == name
    assert len(info.mean) == len(info.std) == info.shape[0]
    assert all(s > 0 for s in info.std) and info.num_classes >= 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.num_classes = 3
    assert set(DATASETS) == set(IMAGE_SETS + TOY_SETS + FILE_KINDS)
    assert all(0 < default_val_size(name) < 10000 for name in DATASETS if name not in FILE_KINDS)


@pytest.mark.parametrize("layout,gz", [(".", False), (".", True), ("MNIST/raw", False),
                                       ("MNIST/raw", True), ("mnist", True)])
def test_mnist_idx_layouts_load_exact_values(tmp_path, data_writers, layout, gz):
    arrays = data_writers.mnist_idx(tmp_path / layout, gz=gz)
    splits = load_splits("mnist", tmp_path, val_size=7, seed=1)
    assert splits.train.x.shape == (23, 1, 28, 28) and splits.val.x.shape == (7, 1, 28, 28)
    assert splits.test.x.dtype == torch.float32 and splits.test.y.dtype == torch.int64
    expected = torch.from_numpy(arrays["test_x"]).float()[:, None] / 255
    assert torch.equal(splits.test.x, expected)
    assert torch.equal(splits.test.y, torch.from_numpy(arrays["test_y"]).long())
    train_rows = _rows(torch.from_numpy(arrays["train_x"]).float()[:, None] / 255)
    assert _rows(splits.train.x) | _rows(splits.val.x) == train_rows


def test_fashion_mnist_from_root_and_subfolder(tmp_path, data_writers):
    arrays = data_writers.mnist_idx(tmp_path / "fashion-mnist", gz=True, seed=5)
    splits = load_splits("fashion_mnist", tmp_path, val_size=5)
    assert torch.equal(splits.test.y, torch.from_numpy(arrays["test_y"]).long())
    assert load_splits("fashion_mnist", tmp_path / "fashion-mnist", val_size=5).test.x.shape[0] == 12


def test_default_lookup_order(tmp_path, data_writers, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ADRNET_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("ADRNET_CACHE", str(tmp_path / "cache"))
    data_writers.mnist_pickle(tmp_path / "cache" / "mnist.pkl.gz", sizes=(9, 4, 3))
    assert load_splits("mnist").test.x.shape[0] == 3
    data_writers.mnist_idx(tmp_path / "env" / "mnist", n_test=5)
    assert load_splits("mnist", val_size=2).test.x.shape[0] == 5
    data_writers.mnist_idx(tmp_path / "data" / "MNIST" / "raw", n_test=4)
    assert load_splits("mnist", val_size=2).test.x.shape[0] == 4


def test_missing_data_names_places_and_remedy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ADRNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ADRNET_DATA", raising=False)
    with pytest.raises(DataError, match="adrnet data fetch mnist"):
        load_splits("mnist")
    with pytest.raises(DataError, match="dataset-fashion-mnist"):
        load_splits("fashion_mnist", tmp_path)
    with pytest.raises(DataError, match="cifar-10-python.tar.gz"):
        load_splits("cifar10", tmp_path)


def _corrupt(kind: str, folder: Path) -> Path:
    images, labels = folder / "train-images-idx3-ubyte", folder / "train-labels-idx1-ubyte"
    if kind == "wrong_magic":
        images.write_bytes(b"\x00\x00\x09\x03" + images.read_bytes()[4:])
    elif kind == "truncated":
        images.write_bytes(images.read_bytes()[:-100])
    elif kind == "too_long":
        labels.write_bytes(labels.read_bytes() + b"\x00")
    elif kind == "wrong_ndim":
        images.write_bytes(b"\x00\x00\x08\x02" + images.read_bytes()[4:])
    elif kind == "not_28x28":
        data = bytearray(images.read_bytes())
        data[8:16] = (27).to_bytes(4, "big") + (28).to_bytes(4, "big")
        images.write_bytes(bytes(data[:16 + 30 * 27 * 28]))
    elif kind == "label_count":
        data = labels.read_bytes()  # a valid IDX file holding 29 labels for 30 images
        labels.write_bytes(data[:4] + (29).to_bytes(4, "big") + data[8:-1])
    elif kind == "label_range":
        labels.write_bytes(labels.read_bytes()[:-1] + b"\x0a")
    elif kind == "missing":
        labels.unlink()
    return labels if kind in ("too_long", "label_count", "label_range", "missing") else images


@pytest.mark.parametrize("kind", ["wrong_magic", "truncated", "too_long", "wrong_ndim",
                                  "not_28x28", "label_count", "label_range", "missing"])
def test_malformed_idx_raises_data_error_naming_file(tmp_path, data_writers, kind):
    folder = tmp_path / "MNIST" / "raw"
    data_writers.mnist_idx(folder, gz=False)
    bad_file = _corrupt(kind, folder)
    with pytest.raises(DataError) as caught:
        load_splits("mnist", tmp_path, val_size=5)
    assert bad_file.name in str(caught.value) and "adrnet data fetch mnist" in str(caught.value)


@pytest.mark.parametrize("damage", [lambda d: d[: len(d) // 2], lambda d: b"garbage" + d[7:]])
def test_broken_gzip_raises_data_error(tmp_path, data_writers, damage):
    data_writers.mnist_idx(tmp_path, gz=True)
    target = tmp_path / "t10k-images-idx3-ubyte.gz"
    target.write_bytes(damage(target.read_bytes()))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz"):
        load_splits("mnist", tmp_path, val_size=5)


def test_cifar_batches_load_channel_major(tmp_path, data_writers):
    written = data_writers.cifar(tmp_path / "cifar-10-batches-py")
    splits = load_splits("cifar10", tmp_path, val_size=3, seed=2)
    assert splits.train.x.shape == (17, 3, 32, 32) and splits.val.x.shape == (3, 3, 32, 32)
    data, labels = written["test_batch"]
    pixel = data[1, 2 * 1024 + 5 * 32 + 7]  # channel 2, row 5, column 7
    assert splits.test.x[1, 2, 5, 7] == torch.tensor(pixel / 255, dtype=torch.float32)
    assert splits.test.y.tolist() == labels
    every_train = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    assert _rows(splits.train.x) | _rows(splits.val.x) == _rows(
        torch.from_numpy(every_train).float() / 255)


def _cifar_damage(kind, folder, writers):
    target = folder / "data_batch_3"
    good = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2]}
    if kind == "missing":
        target.unlink()
    elif kind == "truncated":
        target.write_bytes(target.read_bytes()[:500])
    elif kind == "not_dict":
        writers.py2_pickle(target, [1, 2, 3])
    elif kind == "float_data":
        writers.py2_pickle(target, {**good, b"data": np.zeros((2, 3072), np.float32)})
    elif kind == "wrong_width":
        writers.py2_pickle(target, {**good, b"data": np.zeros((2, 3000), np.uint8)})
    elif kind == "label_count":
        writers.py2_pickle(target, {**good, b"labels": [1, 2, 3]})
    elif kind == "no_labels":
        writers.py2_pickle(target, {b"data": good[b"data"]})
    return target


@pytest.mark.parametrize("kind", ["missing", "truncated", "not_dict", "float_data",
                                  "wrong_width", "label_count", "no_labels"])
def test_malformed_cifar_raises_data_error(tmp_path, data_writers, kind):
    folder = tmp_path / "cifar-10-batches-py"
    data_writers.cifar(folder)
    target = _cifar_damage(kind, folder, data_writers)
    with pytest.raises(DataError) as caught:
        load_splits("cifar10", tmp_path)
    assert target.name in str(caught.value) and "cifar-10-python.tar.gz" in str(caught.value)


class _Payload:
    def __init__(self, call, argument):
        self.call, self.argument = call, argument

    def __reduce__(self):
        return self.call, (self.argument,)


@pytest.mark.parametrize("call", [os.system, eval, np.load])
@pytest.mark.parametrize("target", ["mnist.pkl.gz", "cifar-10-batches-py/data_batch_1"])
def test_pickle_with_foreign_global_is_refused_not_run(tmp_path, data_writers, call, target):
    marker = tmp_path / "pwned"
    data_writers.cifar(tmp_path / "cifar-10-batches-py")
    payload = _Payload(call, f"touch {marker}" if call is os.system else str(marker))
    data = pickle.dumps({b"data": payload, b"labels": [0]}, protocol=2)
    path = tmp_path / target
    path.write_bytes(gzip.compress(data) if target.endswith(".gz") else data)
    with pytest.raises(DataError, match="refused to unpickle") as caught:
        load_splits("cifar10" if "cifar" in target else "mnist", tmp_path)
    assert path.name in str(caught.value) and not marker.exists()


def test_mnist_pickle_uses_own_validation_and_rescales_exactly(tmp_path, data_writers):
    splits_written = data_writers.mnist_pickle(tmp_path / "mnist.pkl.gz", sizes=(20, 8, 6))
    splits = load_splits("mnist", tmp_path)
    assert [len(p.y) for p in splits] == [20, 8, 6]
    for (x_written, y_written), loaded in zip(splits_written, splits):
        levels = torch.from_numpy(np.rint(x_written * 256)).reshape(-1, 1, 28, 28)
        assert torch.equal(loaded.x, levels.float() / 255)
        assert torch.equal(loaded.y, torch.from_numpy(y_written))
    assert loaded.x.max() <= 1 and (splits.train.x * 255 - (splits.train.x * 255).round()).abs().max() < 1e-4
    repooled = load_splits("mnist", tmp_path, val_size=4, seed=3)
    assert [len(p.y) for p in repooled] == [24, 4, 6]


def test_every_pixel_level_maps_to_k_over_255(tmp_path, data_writers):
    levels = np.arange(256, dtype=np.float32) / 256
    images = np.resize(levels, (2, 784)).astype(np.float32)
    split = (images, np.array([3, 4], dtype=np.int64))
    data_writers.py2_pickle(tmp_path / "mnist.pkl.gz", (split, split, split))
    loaded = load_splits("mnist", tmp_path).test.x.reshape(-1)[:256]
    assert torch.equal(loaded, torch.arange(256, dtype=torch.float32) / 255)
    assert loaded.min() == 0 and loaded.max() == 1


@pytest.mark.parametrize("content", [
    "two_parts", "wrong_width", "not_multiple_of_1_256", "nan", "label_mismatch",
    "labels_float"])
def test_malformed_mnist_pickle_raises_data_error(tmp_path, data_writers, content):
    good = (np.zeros((3, 784), np.float32), np.zeros(3, np.int64))
    bad = {"two_parts": (good, good),
           "wrong_width": ((np.zeros((3, 783), np.float32), good[1]), good, good),
           "not_multiple_of_1_256": ((good[0] + 0.3, good[1]), good, good),
           "nan": (good, (good[0] * np.nan, good[1]), good),
           "label_mismatch": ((good[0], np.zeros(4, np.int64)), good, good),
           "labels_float": (good, good, (good[0], np.zeros(3, np.float32)))}[content]
    data_writers.py2_pickle(tmp_path / "mnist.pkl.gz", bad)
    with pytest.raises(DataError, match="mnist.pkl.gz.*adrnet data fetch mnist"):
        load_splits("mnist", tmp_path)


def test_validation_split_is_deterministic_and_disjoint(tiny_mnist_root):
    first = load_splits("mnist", tiny_mnist_root, val_size=8, seed=4)
    again = load_splits("mnist", tiny_mnist_root, val_size=8, seed=4)
    other = load_splits("mnist", tiny_mnist_root, val_size=8, seed=5)
    assert torch.equal(first.val.x, again.val.x) and torch.equal(first.train.x, again.train.x)
    assert not torch.equal(first.val.x, other.val.x)
    assert not _rows(first.train.x) & _rows(first.val.x)
    assert len(first.train.y) + len(first.val.y) == 30


@pytest.mark.parametrize("val_size", [-1, 30, 2.5, True])
def test_bad_val_size_is_a_config_error(tiny_mnist_root, val_size):
    with pytest.raises(ConfigError, match="val_size"):
        load_splits("mnist", tiny_mnist_root, val_size=val_size)


def test_unknown_dataset_is_a_config_error():
    with pytest.raises(ConfigError, match="cifar10"):
        load_splits("imagenet")


@pytest.mark.parametrize("name", TOY_SETS)
def test_toy_sets_are_seeded_2d_and_in_unit_box(name):
    splits = load_splits(name, seed=3)
    assert [tuple(p.x.shape) for p in splits] == [(2000, 2), (500, 2), (1000, 2)]
    for part in splits:
        assert part.x.dtype == torch.float32 and part.y.dtype == torch.int64
        assert part.x.min() >= 0 and part.x.max() <= 1
        assert set(part.y.tolist()) == set(range(DATASETS[name].num_classes))
    assert torch.equal(load_splits(name, seed=3).train.x, splits.train.x)
    assert not torch.equal(load_splits(name, seed=4).train.x, splits.train.x)


FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file(),
                    reason="real Fashion-MNIST absent (apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist():
    splits = load_splits("fashion_mnist", FASHION_DIR, val_size=0)
    assert splits.train.x.shape == (60000, 1, 28, 28) and splits.test.x.shape == (10000, 1, 28, 28)
    assert torch.equal(splits.train.y.bincount(), torch.full((10,), 6000))
    assert torch.equal(splits.test.y.bincount(), torch.full((10,), 1000))
    assert splits.train.x.min() == 0 and splits.train.x.max() == 1


REAL_PICKLE = default_cache_dir() / "mnist.pkl.gz"


@pytest.mark.skipif(not REAL_PICKLE.is_file(),
                    reason=f"{REAL_PICKLE} absent (run `adrnet data fetch mnist`)")
def test_real_mnist_pickle():
    assert sha256_of(REAL_PICKLE) == SHA256
    splits = load_splits("mnist", REAL_PICKLE.parent)
    assert [len(p.y) for p in splits] == [50000, 10000, 10000]
    assert splits.train.x.shape[1:] == (1, 28, 28) and splits.test.x.max() == 1
    official_test_counts = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert splits.test.y.bincount().tolist() == official_test_counts


# ---- gzip bombs: refused at once, with the memory a real file would take ----

def _bomb(path: Path, head: bytes = b"", gib: int = 4) -> Path:
    """A few-MB gzip file that inflates to ``head`` + ``gib`` GiB of zeros
    (one 16 MiB member repeated: concatenated members are one gzip stream)."""
    member = gzip.compress(b"\0" * 2**24, compresslevel=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(head) + member * (64 * gib))
    assert path.stat().st_size < 8 * 2**20
    return path


def _peak_bytes(load) -> tuple[int, Exception]:
    """(peak of Python's allocations, the DataError) while ``load()`` runs."""
    import tracemalloc
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as caught:
            load()
        return tracemalloc.get_traced_memory()[1], caught.value
    finally:
        tracemalloc.stop()


def test_mnist_pickle_bomb_is_refused_beyond_what_mnist_can_hold(tmp_path, monkeypatch):
    from adrnet.data import mnist
    assert 220e6 < mnist.PICKLE_LIMIT < 222e6  # 70 000 x (784 float32 + int64 label) + framing
    limit = 2**23  # the same reader with an 8 MiB bound: as strict, 27 times faster
    monkeypatch.setattr(mnist, "PICKLE_LIMIT", limit)
    _bomb(tmp_path / "mnist.pkl.gz")
    peak, error = _peak_bytes(lambda: load_splits("mnist", tmp_path))
    assert f"holds more than {limit} bytes once decompressed" in str(error)
    assert "mnist.pkl.gz" in str(error) and peak < 4 * limit  # not the 4 GiB


@pytest.mark.parametrize("claimed", [(100, 28, 28), (2**20, 28, 28)])
def test_idx_bomb_is_refused_by_its_header(tmp_path, data_writers, claimed):
    data_writers.mnist_idx(tmp_path, gz=True)
    header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in claimed)
    target = _bomb(tmp_path / "train-images-idx3-ubyte.gz", head=header)
    peak, error = _peak_bytes(lambda: load_splits("mnist", tmp_path))
    assert target.name in str(error) and peak < 2**24  # what the header allows, not 4 GiB
    assert ("but the file holds more" if claimed[0] == 100 else
            "more than any file of this data set holds") in str(error)


def test_oversized_cifar_batch_is_refused_unread(tmp_path, data_writers):
    from adrnet.data.cifar import BATCH_LIMIT
    folder = tmp_path / "cifar-10-batches-py"
    data_writers.cifar(folder)
    with open(folder / "data_batch_1", "r+b") as handle:
        handle.truncate(2**32)  # sparse: 4 GiB on paper, nothing on disk
    peak, error = _peak_bytes(lambda: load_splits("cifar10", tmp_path))
    assert f"holds more than {BATCH_LIMIT} bytes, more than a CIFAR-10 batch" in str(error)
    assert peak < 4 * BATCH_LIMIT
