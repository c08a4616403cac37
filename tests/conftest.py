"""Shared pytest fixtures. Each owner keeps its fixtures in its own section."""

from __future__ import annotations

# ======================================================================
# adrnet.data: writers of tiny files in the real on-disk formats
# (IDX as in LeCun's MNIST, Python-2 style pickles as in mnist.pkl.gz and
# cifar-10-batches-py). Use the `data_writers` fixture, or `tiny_mnist_root`
# for a ready-made directory of tiny MNIST IDX files.
# ======================================================================
import gzip
import pickle
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

try:
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct


# ======================================================================
# Tests whose numbers depend on a CPU's rounding
# ======================================================================
#: Test modules that compare floats with recorded or hand-computed values. They carry the
#: ``recorded_floats`` mark, and `make test` runs them a second time under
#: ATEN_CPU_CAPABILITY=default (scalar kernels, another rounding), so a test that holds on
#: one CPU only fails on every machine, not on the one CI happens to land on. A new
#: module that compares floats against written-down values belongs here.
RECORDED_FLOATS = frozenset({
    "test_golden", "test_terms", "test_objectives", "test_mart", "test_adr_options",
    "test_models", "test_attacks", "test_eval", "test_mt_bb", "test_sanity", "test_zoo",
})


def pytest_collection_modifyitems(items):
    unknown = sorted(n for n in RECORDED_FLOATS if not (Path(__file__).parent / f"{n}.py").is_file())
    if unknown:
        raise pytest.UsageError(f"RECORDED_FLOATS names test modules that do not exist: {unknown}")
    for item in items:
        if item.module.__name__ in RECORDED_FLOATS:
            item.add_marker("recorded_floats")


def write_idx(path: Path, array: np.ndarray) -> Path:
    """An IDX file of uint8 ``array`` (gzipped when ``path`` ends in .gz)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    data = header + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


class _Py2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle wrote: byte and ASCII strings as STRING
    opcodes (not _codecs.encode calls) and numpy's old module path."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj):
        data = obj if isinstance(obj, bytes) else obj.encode("ascii")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    def _save_str(self, obj):
        if obj.isascii():
            return self._save_py2_str(obj)
        return pickle._Pickler.save_str(self, obj)

    def save_global(self, obj, name=None):
        if obj is _np_reconstruct:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)

    dispatch[bytes] = _save_py2_str
    dispatch[str] = _save_str


def write_py2_pickle(path: Path, obj) -> Path:
    """``obj`` pickled (protocol 2) the way Python 2 wrote the real data files."""
    import io

    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=2).dump(obj)
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def write_mnist_idx(folder: Path, n_train: int = 30, n_test: int = 12, gz: bool = True,
                    seed: int = 0) -> dict:
    """The four MNIST IDX files in ``folder``; returns the arrays written."""
    rng = np.random.default_rng(seed)
    ext = ".gz" if gz else ""
    arrays = {
        "train_x": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_y": np.arange(n_train, dtype=np.uint8) % 10,
        "test_x": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_y": (np.arange(n_test, dtype=np.uint8) * 3) % 10,
    }
    names = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
             "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}
    for role, name in names.items():
        write_idx(folder / (name + ext), arrays[role])
    return arrays


def write_cifar(folder: Path, per_batch: int = 4, n_test: int = 6, seed: int = 0) -> dict:
    """``cifar-10-batches-py``-style batches in ``folder``; returns the arrays."""
    rng = np.random.default_rng(seed)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        count = n_test if name == "test_batch" else per_batch
        data = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, count)]
        write_py2_pickle(folder / name, {b"batch_label": b"tiny " + name.encode(),
                                         b"labels": labels, b"data": data,
                                         b"filenames": [b"x.png"] * count})
        written[name] = (data, labels)
    return written


def write_mnist_pickle(path: Path, sizes=(20, 8, 6), seed: int = 0) -> list:
    """A tiny mnist.pkl.gz: (train, valid, test) of (float32 k/256 [N, 784], int64)."""
    rng = np.random.default_rng(seed)
    splits = [(rng.integers(0, 256, (n, 784)).astype(np.float32) / np.float32(256),
               rng.integers(0, 10, n).astype(np.int64)) for n in sizes]
    write_py2_pickle(path, tuple(splits))
    return splits


@pytest.fixture
def data_writers():
    """Writers of tiny data files in the real formats (see the section above)."""
    return SimpleNamespace(idx=write_idx, py2_pickle=write_py2_pickle,
                           mnist_idx=write_mnist_idx, cifar=write_cifar,
                           mnist_pickle=write_mnist_pickle)


@pytest.fixture
def tiny_mnist_root(tmp_path) -> Path:
    """A data root holding tiny MNIST IDX files (torchvision layout, 30 train /
    12 test); load with ``load_splits("mnist", root, val_size=...)``."""
    root = tmp_path / "data"
    write_mnist_idx(root / "MNIST" / "raw")
    return root
# ====================== end of adrnet.data section ======================


# ======================================================================
# adrnet.eval: tiny synthetic image data, a normally trained tiny model,
# and a tiny trained toy run directory (adrnet.train on "blobs").
# ======================================================================
import torch as _torch


@pytest.fixture
def torch_one_thread():
    """One intra-op thread during the test (tiny models on a shared 2-core CPU are
    several times faster without thread contention); restored afterwards."""
    before = _torch.get_num_threads()
    _torch.set_num_threads(1)
    yield
    _torch.set_num_threads(before)


class TinyImageNet(_torch.nn.Module):
    """A 10-class MLP on 1x8x8 images with forward(x, return_latent) and forward_stages."""

    def __init__(self):
        super().__init__()
        self.features = _torch.nn.Sequential(_torch.nn.Flatten(), _torch.nn.Linear(64, 32),
                                             _torch.nn.ReLU())
        self.head = _torch.nn.Linear(32, 10)

    def forward(self, x, return_latent=False):
        z = self.features(x)
        logits = self.head(z)
        return (logits, z) if return_latent else logits

    def forward_stages(self, x):
        z = self.features(x)
        return {"features": z, "logits": self.head(z)}


def tiny_image_data(n: int, seed: int):
    """10 classes of 1x8x8 images in [0, 1]: fixed prototypes plus noise."""
    protos = _torch.rand(10, 1, 8, 8, generator=_torch.Generator().manual_seed(1234)) * 0.6 + 0.2
    gen = _torch.Generator().manual_seed(seed)
    y = _torch.randint(0, 10, (n,), generator=gen)
    x = (protos[y] + 0.15 * _torch.randn(n, 1, 8, 8, generator=gen)).clamp(0, 1)
    return x, y


@pytest.fixture(scope="session")
def tiny_trained_model():
    """(model, x_test, y_test): TinyImageNet trained normally for 200 Adam steps (< 1 s)."""
    threads = _torch.get_num_threads()
    _torch.set_num_threads(1)
    with _torch.random.fork_rng(devices=[]):
        _torch.manual_seed(0)
        model = TinyImageNet()
        opt = _torch.optim.Adam(model.parameters(), 1e-2)
        x, y = tiny_image_data(2000, 1)
        for _ in range(200):
            idx = _torch.randint(0, len(x), (128,))
            loss = _torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    _torch.set_num_threads(threads)
    x_test, y_test = tiny_image_data(100, 2)
    return model.eval(), x_test, y_test


@pytest.fixture(scope="session")
def tiny_toy_run(tmp_path_factory):
    """A run directory trained by adrnet.train (PGD-AT, MLP on 'blobs', 2 epochs, ~3 s)."""
    from adrnet.config import config_from_dict
    from adrnet.train import train
    cfg = config_from_dict({
        "data": {"name": "blobs"}, "model": {"name": "mlp", "options": {"hidden": [16, 16]}},
        "attack": {"eps": 0.05, "steps": 3, "step_size": 0.03}, "objective": {"name": "pgd_at"},
        "optim": {"name": "adam", "lr": 0.01}, "schedule": {"name": "constant"},
        "train": {"epochs": 2, "batch_size": 64, "progress": False},
        "eval": {"val_size": 100, "val_steps": 3, "test_steps": 5, "batch_size": 250}})
    run_dir = tmp_path_factory.mktemp("eval_runs") / "toy_pgd_at"
    threads = _torch.get_num_threads()
    _torch.set_num_threads(1)
    try:
        train(cfg, run_dir)
    finally:
        _torch.set_num_threads(threads)
    return run_dir
# ====================== end of adrnet.eval section ======================


# ======================================================================
# adrnet.registry: registrations a test (or an example it runs) makes
# ======================================================================
@pytest.fixture
def registries_restored():
    """Every registry as it was before the test: entries the test added are removed, so a
    test that registers (or runs a module that does) leaves no name behind for tests that
    parametrize over the registries."""
    from adrnet.attacks import ATTACKS, THREATS
    from adrnet.data import DATASETS
    from adrnet.models import MODELS
    from adrnet.objectives import OBJECTIVES, TERMS
    registries = (ATTACKS, THREATS, DATASETS, MODELS, OBJECTIVES, TERMS)
    before = [(registry, dict(registry)) for registry in registries]
    yield
    for registry, entries in before:
        for name in set(registry) - set(entries):
            registry.unregister(name)
