"""Where adrnet looks for data files when no directory is given.

Why one place: every loader and the CLI must agree on the search order, and the
user must be able to read it. With ``root=None`` the directories are tried in
this order, and the first one holding the files wins:

1. ``./data`` (relative to the current directory),
2. ``$ADRNET_DATA`` (if set),
3. ``~/.cache/adrnet`` (where ``adrnet data fetch`` puts what it downloads;
   ``$ADRNET_CACHE`` overrides it).

Fashion-MNIST also tries ``/usr/share/datasets/fashion-mnist`` last (Debian's
``dataset-fashion-mnist``). Loading never touches the network.
"""

from __future__ import annotations

import os
from pathlib import Path

DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def default_cache_dir() -> Path:
    """The fetch cache: ``$ADRNET_CACHE`` or ``~/.cache/adrnet``."""
    env = os.environ.get("ADRNET_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "adrnet"


def default_roots() -> list[Path]:
    """The data directories tried, in order, when ``root`` is None."""
    roots = [Path("data")]
    env = os.environ.get("ADRNET_DATA")
    if env:
        roots.append(Path(env).expanduser())
    roots.append(default_cache_dir())
    return roots


def search_roots(root: str | os.PathLike | None) -> list[Path]:
    """``[root]`` when given, else :func:`default_roots`."""
    return [Path(root).expanduser()] if root is not None else default_roots()


def first_existing(candidates: list[Path]) -> Path | None:
    """The first path in ``candidates`` that is a file, or None."""
    return next((path for path in candidates if path.is_file()), None)
