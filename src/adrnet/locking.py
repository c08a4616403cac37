"""Advisory locks: one process at a time writes a run directory or an output file.

Why: two trainings started on one ``--out`` (or a ``--resume-if-exists`` while the
first is still alive) would interleave their configs, checkpoints and metric
records into a run that never happened, and two evaluations writing one
``eval.json`` would merge results of different settings. Each writer therefore
holds an exclusive ``fcntl.flock`` on a lock file for its whole life. The kernel
drops the lock when the process ends, however it ends (SIGKILL, OOM kill, power
loss), so a stale lock never needs clearing by hand; the file only records the
holder's PID for the message a second process prints.

Why the lock file is opened without following links: adrnet truncates it and writes a
PID into it, so a ``.adrnet.lock`` that is a symbolic (or hard) link to another file
would have that file destroyed. A lock path that is a link, or anything but a regular
file with one name, is refused with one line and left as it is.

    with run_lock(run_dir):          # adrnet train, and anything calling adrnet.train.train
        ...
    with file_lock(out_path):        # adrnet eval writing out_path
        ...
"""

from __future__ import annotations

import fcntl
import os
import stat
from contextlib import contextmanager
from pathlib import Path

from adrnet.atomic import output_errors, write_failure
from adrnet.errors import OutputError

RUN_LOCK = ".adrnet.lock"


class Busy(OutputError):
    """Another live process holds the lock (its PID is in the message)."""


@contextmanager
def run_lock(run_dir: str | os.PathLike):
    """Hold the lock of run directory ``run_dir`` (created when missing) for the body.
    A directory this call created is removed again if it is left empty (a run that
    failed before writing anything leaves nothing behind)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise OutputError(f"{run_dir} is a file, not a run directory; choose another --out")
    created = not run_dir.exists()
    with output_errors(run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
    try:
        with _held(run_dir / RUN_LOCK, f"run directory {run_dir}"):
            yield
    finally:
        if created:
            _remove_if_empty(run_dir)


@contextmanager
def file_lock(path: str | os.PathLike):
    """Hold the lock of output file ``path`` (a lock file beside it, in a folder made
    when missing) for the body."""
    path = Path(path)
    with output_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    with _held(path.with_name(f".{path.name}.lock"), str(path)):
        yield


@contextmanager
def _held(lock_path: Path, subject: str):
    fd = _acquire(lock_path, subject)
    try:
        yield
    finally:
        try:  # safe while still holding it: _acquire re-checks the path after locking
            lock_path.unlink()
        except OSError:
            pass
        os.close(fd)


def _acquire(lock_path: Path, subject: str) -> int:
    """An open descriptor of ``lock_path`` holding its exclusive lock, else :class:`Busy`.

    The lock file is removed on release, so a process that opened it just before
    may lock a file no longer in the folder; it then sees another inode (or none)
    at the path and tries again with the new file."""
    while True:
        fd = _open_lock_file(lock_path, subject)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            stop = f", or stop it (kill {holder}) and rerun" if holder else ""
            raise Busy(f"{subject} is in use by another adrnet process (PID "
                       f"{holder or 'unknown'}); wait for it to finish{stop}") from None
        except OSError as exc:
            os.close(fd)
            raise OutputError(f"cannot lock {lock_path}: {exc.strerror}") from None
        if _is_current(fd, lock_path):
            _write_pid(fd)
            return fd
        os.close(fd)


def _open_lock_file(lock_path: Path, subject: str) -> int:
    """A read-write descriptor of the lock file ``lock_path`` (created when missing),
    refused unless it is a regular file of its own: ``O_NOFOLLOW`` makes a symbolic
    link at the path fail (a dangling one is not created through either), ``O_NONBLOCK``
    keeps a FIFO from hanging the open, and the descriptor's kind and link count are
    checked before anything is written."""
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(lock_path, flags, 0o666)
    except OSError as exc:
        try:
            why = _not_a_file_of_its_own(os.lstat(lock_path), lock_path)
        except OSError:
            why = ""
        if why:
            raise _not_a_lock_file(lock_path, subject, why) from None
        raise write_failure(lock_path, exc) from None
    why = _not_a_file_of_its_own(os.fstat(fd), lock_path)
    if why:
        os.close(fd)
        raise _not_a_lock_file(lock_path, subject, why)
    return fd


def _not_a_file_of_its_own(found: os.stat_result, lock_path: Path) -> str:
    """Why a lock file of status ``found`` must not be written ("" when it may)."""
    if stat.S_ISLNK(found.st_mode):
        return f"is a symbolic link (to {os.readlink(lock_path)})"
    if stat.S_ISDIR(found.st_mode):
        return "is a directory"
    if not stat.S_ISREG(found.st_mode):
        return "is not a regular file (a FIFO, device or socket)"
    if found.st_nlink > 1:
        return f"is a hard link: {found.st_nlink} names share its contents"
    return ""


def _not_a_lock_file(lock_path: Path, subject: str, why: str) -> OutputError:
    return OutputError(f"cannot lock {subject}: its lock file {lock_path} {why}; adrnet "
                       "writes its PID into that file and never writes through a link or into "
                       "anything it did not create: remove that path (a file it links to is "
                       "left as it is) and rerun")


def _is_current(fd: int, lock_path: Path) -> bool:
    try:
        now = os.stat(lock_path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def _write_pid(fd: int) -> None:
    """Record our PID (best effort: on a full disk the lock still holds without it)."""
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return text if text.isdigit() else ""


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass
