"""Atomic file writes: readers see the old file or the new one, never half of one.

Why: training and evaluation may be killed at any instant (SIGKILL, power loss,
a cluster pre-empting the job). Every file adrnet writes (checkpoints, metrics,
config.toml, eval.json, AutoAttack progress, reports) goes through a temporary
file beside its target, fsync, and a rename, then the folder is fsync-ed so the
rename itself is durable. A write that fails (full disk, no permission, a
read-only or immutable folder) removes its temporary and raises
:class:`~adrnet.errors.OutputError` naming the path, which the CLI prints as one
``error:`` line: the environment, not adrnet, is at fault, and the previous file
is untouched.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path

from adrnet.errors import AdrnetError, OutputError

# The process umask, read once: mkstemp's 0600 would hide runs from other users.
_UMASK = os.umask(0o022)
os.umask(_UMASK)

_HINTS = {
    errno.ENOSPC: "the disk is full; free some space and rerun (files written before are intact)",
    errno.EDQUOT: "the disk quota is exceeded; free some space and rerun (files written "
                  "before are intact)",
    errno.EACCES: "permission denied; choose another --out or fix the permissions",
    errno.EPERM: "the operation is not permitted (an immutable or append-only file or "
                 "folder?); choose another --out",
    errno.EROFS: "the file system is read-only; choose another --out",
    errno.EISDIR: "it is a directory; give a file name",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
}


def write_failure(path, exc: OSError) -> OutputError:
    """The one-line error for an OSError ``exc`` met while writing ``path``."""
    hint = _HINTS.get(exc.errno, exc.strerror or str(exc))
    return OutputError(f"cannot write {path}: {hint}")


@contextmanager
def output_errors(path):
    """Turn any OSError raised in the body into an :class:`OutputError` naming ``path``."""
    try:
        yield
    except OSError as exc:
        raise write_failure(path, exc) from None


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


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (a short write is not an error)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_temporary(path: Path, data: bytes) -> Path:
    """``data`` in a fsync-ed temporary file beside ``path``; returns its path.
    On failure nothing is left behind and :class:`OutputError` is raised."""
    with output_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o666 & ~_UMASK)
            write_all(fd, data)
            os.fsync(fd)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)
    return Path(tmp)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    path = Path(path)
    tmp = write_temporary(path, data)
    try:
        with output_errors(path):
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


def append_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Append ``data`` to ``path`` (not atomic: a reader of JSON lines skips a cut line)."""
    with output_errors(path):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            write_all(fd, data)
        finally:
            os.close(fd)


def output_file(path: str | os.PathLike) -> Path:
    """Where a write to the file ``path`` must go: through a symbolic link to its
    target (replacing the link would cut it), and never onto a directory, device,
    pipe or socket (a rename over those destroys or hangs; /dev/full never ends)."""
    path = Path(path)
    try:
        target = path.resolve() if path.is_symlink() else path
        mode = target.stat().st_mode
    except FileNotFoundError:
        return target
    except (RuntimeError, OSError) as exc:  # a loop: RuntimeError before Python 3.13, then ELOOP
        if isinstance(exc, RuntimeError) or exc.errno == errno.ELOOP:
            raise OutputError(f"cannot write {path}: it is a symbolic link that leads back to "
                              "itself (a loop); remove it or give another path") from None
        raise write_failure(path, exc) from None
    if stat.S_ISDIR(mode):
        raise OutputError(f"cannot write {path}: it is a directory; give a file name")
    if not stat.S_ISREG(mode):
        raise OutputError(f"cannot write {path}: it is not a regular file (a device, pipe "
                          "or socket); give the path of a file")
    return target


class NotRegularFile(OSError):
    """A path to be read is a directory, pipe, device or socket; ``kind`` says which."""

    def __init__(self, path, kind: str):
        super().__init__(f"{path} is {kind}, not a regular file")
        self.kind = kind


def file_kind(mode: int) -> str:
    """What a ``st_mode`` describes, in words ("a FIFO (named pipe)", ...)."""
    for test, kind in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file"


def open_regular_file(path: str | os.PathLike):
    """A binary handle of ``path`` opened for reading, once the open descriptor is seen
    to be a regular file (a symbolic link is followed). Why the descriptor: a path checked
    first and opened after may be swapped in between. Why ``O_NONBLOCK``: opening a FIFO
    would otherwise wait for a writer, and a device such as /dev/zero never ends; either
    raises :class:`NotRegularFile` at once and is closed unread. Other ``OSError`` s
    (``FileNotFoundError`` included) reach the caller, who knows what the file is for."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotRegularFile(path, file_kind(mode))
    return os.fdopen(fd, "rb")


def read_bounded(path: str | os.PathLike, limit: int, what: str,
                 error: type[AdrnetError] = AdrnetError, fix: str = "move it away") -> bytes | None:
    """The bytes of ``path`` (None when there is none), read only when it is a regular
    file (a symbolic link is followed) of at most ``limit`` bytes; anything else raises
    ``error`` saying what ``path`` is instead of a ``what``, and ``fix``. The one reader of
    the files adrnet reads but did not just write (records, configs, progress files): a
    FIFO is refused without waiting for a writer, /dev/zero or a 2 GB file unread."""
    try:
        with open_regular_file(path) as handle:
            size = os.fstat(handle.fileno()).st_size
            data = handle.read(limit + 1) if size <= limit else b""
    except FileNotFoundError:
        return None
    except NotRegularFile as exc:
        raise error(f"{path} is {exc.kind}, not a regular file (no {what}); {fix}") from None
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror or exc}") from None
    if size > limit or len(data) > limit:  # (or it grew after the look at its size)
        raise error(f"{path} is {in_bytes(max(size, len(data)))}, larger than any {what} "
                    f"({in_bytes(limit)} at most); {fix}")
    return data


def in_bytes(n: float) -> str:
    """A size for people: 512 bytes, 3.8 MiB, 2.0 GiB."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.0f} bytes"  # not reached


def read_small_file(path: Path, limit: int, what: str) -> bytes | None:
    """The bytes of an earlier output ``path`` (None when there is none), read only
    when it is a regular file of at most ``limit`` bytes: anything else is refused,
    because adrnet would otherwise merge, and then overwrite, a file it did not write."""
    return read_bounded(output_file(path), limit, what, OutputError)
