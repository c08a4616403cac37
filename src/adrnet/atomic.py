"""Atomic file writes: readers see the old file or the new one, never half of one.

Why: training and evaluation may be killed at any instant (SIGKILL, power loss,
a cluster pre-empting the job). Every file adrnet writes (checkpoints, metrics,
config.toml, eval.json, AutoAttack progress, reports) goes through a temporary
file beside its target, fsync, and a rename, then the folder is fsync-ed so the
rename itself is durable. Plain I/O, no threat model.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

# The process umask, read once: mkstemp's 0600 would hide runs from other users.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def fsync_dir(folder: Path) -> None:
    """Make renames inside ``folder`` durable (best effort: not every file system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_temporary(path: Path, data: bytes) -> Path:
    """``data`` in a fsync-ed temporary file beside ``path``; returns its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    path = Path(path)
    tmp = write_temporary(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj, indent: int | None = 2) -> None:
    """Atomic JSON write (UTF-8; ``indent=None`` for compact machine files)."""
    write_text_atomic(path, json.dumps(obj, indent=indent) + "\n")
