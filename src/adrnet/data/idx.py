"""Reader for the IDX format of LeCun's MNIST files (also used by Fashion-MNIST).

Why our own reader: torchvision is not a dependency, and the format
is tiny: 2 zero bytes, a type code (0x08 = unsigned byte), the number of
dimensions, that many big-endian int32 sizes, then the raw values. Reading with
``numpy.frombuffer`` keeps loading all of MNIST well under a second, and checking
the header against the file size turns truncation into a clear error. The file is
inflated only as far as its header says (and the header only up to the caller's
``max_values``), so a gzip bomb is refused at once (``bounded.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from adrnet.data.bounded import open_data
from adrnet.errors import DataError

_UBYTE = 0x08


def _header(path: Path, data: bytes, ndim: int, how_to_get: str) -> tuple[int, ...]:
    """The sizes in the header bytes ``data`` (the magic number and ``ndim`` sizes)."""
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
    dims = tuple(int(d) for d in np.frombuffer(data, ">i4", count=ndim, offset=4))
    if min(dims) < 0:
        raise DataError(f"{path}: IDX header holds a negative size {dims}; {how_to_get}")
    return dims


def read_idx(path: Path, ndim: int, how_to_get: str, max_values: int) -> np.ndarray:
    """Return the uint8 array stored in the IDX file ``path`` (``.gz`` or raw).

    Raises DataError naming the file when it is missing, not IDX, of another
    number of dimensions, shorter/longer than its header says, or when the header
    claims more than ``max_values`` values. The file is inflated only as far as
    its header allows, so a gzip bomb is refused without filling the memory.
    """
    header_size = 4 + 4 * ndim
    with open_data(path, how_to_get) as stream:
        dims = _header(path, stream.read(header_size), ndim, how_to_get)
        expected = int(np.prod(dims, dtype=np.int64))
        if expected > max_values:
            raise DataError(f"{path}: header claims {dims} = {expected} values, more than any "
                            f"file of this data set holds ({max_values}); {how_to_get}")
        data = stream.read(expected + 1)  # one byte more tells a longer file
    if len(data) != expected:
        holds = "more" if len(data) > expected else f"{len(data)} (truncated or corrupt)"
        raise DataError(f"{path}: header says {dims} = {expected} values but the file holds "
                        f"{holds}; {how_to_get}")
    return np.frombuffer(data, np.uint8).reshape(dims)
