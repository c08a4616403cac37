"""Reading data files with a bound on how much they may hold once decompressed.

Why: a 4 MB gzip file can inflate to 4 GiB (a "gzip bomb"), and reading it whole
before looking fills the memory of the machine long before any check runs. Each
data format knows the most it can hold (the MNIST pickle: 70 000 float32 images
of 784 pixels, about 220 MB; an IDX file: what its header's sizes say; a CIFAR-10
batch: 10 000 images of 3072 bytes), so every reader streams the file, inflating
on the fly, takes at most that many bytes plus one, and refuses the file at once
when that extra byte exists.
"""

from __future__ import annotations

import gzip
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

from adrnet.errors import DataError


@contextmanager
def open_data(path: Path, how_to_get: str) -> Iterator[BinaryIO]:
    """A binary stream of ``path``, inflated on the fly when it ends in .gz; read
    errors (missing, truncated, corrupt) become :class:`DataError` naming the file."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as stream:
            yield stream
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; {how_to_get}") from None
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: truncated or corrupt ({type(err).__name__}: {err}); "
                        f"{how_to_get}") from None


def read_at_most(stream: BinaryIO, limit: int, path: Path, what: str, how_to_get: str) -> bytes:
    """The next bytes of ``stream``, refusing the file when more than ``limit`` remain."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        inflated = " once decompressed" if path.name.endswith(".gz") else ""
        raise DataError(f"{path}: holds more than {limit} bytes{inflated}, more than {what} "
                        f"can hold; it is not one (or it was tampered with); {how_to_get}")
    return data


def read_bounded(path: Path, limit: int, what: str, how_to_get: str) -> bytes:
    """All of ``path`` (inflated), or :class:`DataError` if it holds more than ``limit`` bytes."""
    with open_data(path, how_to_get) as stream:
        return read_at_most(stream, limit, path, what, how_to_get)
