"""Reader for the IDX format of LeCun's MNIST files (also used by Fashion-MNIST).

Why our own reader: torchvision is not a dependency (design.md), and the format
is tiny: 2 zero bytes, a type code (0x08 = unsigned byte), the number of
dimensions, that many big-endian int32 sizes, then the raw values. Reading with
``numpy.frombuffer`` keeps loading all of MNIST well under a second, and checking
the header against the file size turns truncation into a clear error.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from adrnet.errors import DataError

_UBYTE = 0x08


def _decompressed_bytes(path: Path, how_to_get: str) -> bytes:
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if path.name.endswith(".gz") else raw
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; {how_to_get}") from None
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(
            f"{path}: truncated or corrupt gzip data ({err}); {how_to_get}"
        ) from None


def _header(path: Path, data: bytes, ndim: int, how_to_get: str) -> tuple[int, ...]:
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != _UBYTE or data[3] != ndim:
        magic = data[:4].hex() or "empty file"
        expected = f"0000{_UBYTE:02x}{ndim:02x}"
        raise DataError(
            f"{path}: not an IDX file of {ndim}-d unsigned bytes (magic {magic}, "
            f"expected {expected}); {how_to_get}"
        )
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataError(f"{path}: truncated IDX header; {how_to_get}")
    return tuple(int(d) for d in np.frombuffer(data, ">i4", count=ndim, offset=4))


def read_idx(path: Path, ndim: int, how_to_get: str) -> np.ndarray:
    """Return the uint8 array stored in the IDX file ``path`` (``.gz`` or raw).

    Raises DataError naming the file when it is missing, not IDX, of another
    number of dimensions, or shorter/longer than its header says.
    """
    data = _decompressed_bytes(path, how_to_get)
    dims = _header(path, data, ndim, how_to_get)
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims, dtype=np.int64))
    if len(data) - offset != expected:
        raise DataError(
            f"{path}: header says {dims} = {expected} values but the file holds "
            f"{len(data) - offset} (truncated or corrupt); {how_to_get}"
        )
    return np.frombuffer(data, np.uint8, offset=offset).reshape(dims)
