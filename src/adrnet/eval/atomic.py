"""Atomic file writes for evaluation outputs (eval.json, AutoAttack state).

Why: an evaluation may be killed at any moment (AutoAttack runs for hours on a
CPU); a half-written JSON file would make the run look finished or unreadable.
Writing to a temporary file, fsync-ing and renaming makes every write all or
nothing. No threat model: plain I/O.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old or the new file, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be shared
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, obj, indent: int | None = 2) -> None:
    """Atomic JSON write (UTF-8; ``indent=None`` for compact machine files)."""
    write_bytes_atomic(path, (json.dumps(obj, indent=indent) + "\n").encode("utf-8"))


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))
