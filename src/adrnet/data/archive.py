"""Safe extraction of a data set's ``.tar.gz`` archive.

Why not ``tarfile.extractall``: an archive names its own paths and member kinds, so a
hostile or damaged one can write outside the target (``/etc/...``, ``../evil``), plant a
link that a later write follows, create devices, or inflate to fill the disk. The
published data archives (``cifar-10-python.tar.gz``, ``cifar-100-python.tar.gz``) hold
one folder of a few regular files, so exactly that is accepted: each member must be the
folder itself or a regular file directly in it, of bounded size (per member and in
total, and a bounded count). The archive is read as a stream, each member checked
before a byte of it is written, into a fresh temporary folder beside the target that is
renamed into place only when everything passed; any refusal removes it, so nothing is
left behind. The archive's checksum is verified before this is called; the pickles
inside are only ever read with the restricted unpickler (:mod:`adrnet.data.safe_pickle`).
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from adrnet.atomic import fsync_dir, write_all
from adrnet.data.download import local_error
from adrnet.errors import DataError

CHUNK = 1 << 20


class _Refused(Exception):
    pass


def _member_file(name: str, top: str) -> str:
    """The file name ``name`` gives inside ``top`` ("" for ``top`` itself), else _Refused."""
    if "\\" in name or "\0" in name:
        raise _Refused(f"member {name!r} has a backslash or NUL in its name")
    if name.startswith("/"):
        raise _Refused(f"member {name!r} is an absolute path")
    parts = name.rstrip("/").split("/")
    if ".." in parts:
        raise _Refused(f"member {name!r} points outside the archive's folder ('..')")
    if parts[0] != top or len(parts) > 2 or (len(parts) == 2 and parts[1] in ("", ".")):
        raise _Refused(f"member {name!r} is not a file directly in {top}/")
    return parts[1] if len(parts) == 2 else ""


def _kind_refusal(member: tarfile.TarInfo) -> str | None:
    if member.issym():
        return f"member {member.name!r} is a symbolic link"
    if member.islnk():
        return f"member {member.name!r} is a hard link"
    if member.ischr() or member.isblk():
        return f"member {member.name!r} is a device"
    if member.isfifo():
        return f"member {member.name!r} is a FIFO"
    if not (member.isreg() or member.isdir()):
        return f"member {member.name!r} is not a regular file"
    return None


def copy_member(source, path: Path, size: int) -> None:
    """Exactly ``size`` bytes of ``source`` into the new file ``path`` (never through a link):
    never more, whatever the member really holds, so the size checked before is the size
    written. Write errors are :func:`local_error`; read errors (EOFError for a member cut
    short) are the caller's to name: a damaged download, not a fault of this machine."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644)
    except OSError as exc:
        raise local_error(path, exc) from None
    try:
        remaining = size
        while remaining:
            chunk = source.read(min(CHUNK, remaining))  # read errors: the caller's except
            if not chunk:
                raise EOFError(f"the archive ends inside {path.name}")  # the caller names it
            try:  # unbuffered: a failed write is reported here, never again at close
                write_all(fd, chunk)
            except OSError as exc:
                raise local_error(path, exc) from None
            remaining -= len(chunk)
        try:
            os.fsync(fd)
        except OSError as exc:
            raise local_error(path, exc) from None
    finally:
        os.close(fd)


def _extract_checked(archive: Path, into: Path, top: str, member_limit: int, total_limit: int,
                     max_members: int) -> None:
    folder = into / top
    try:
        folder.mkdir()
    except OSError as exc:
        raise local_error(folder, exc) from None
    seen: set[str] = set()
    total = count = 0
    with tarfile.open(archive, mode="r|gz") as tar:
        for member in tar:
            count += 1
            if count > max_members:
                raise _Refused(f"it holds more than {max_members} members")
            name = _member_file(member.name, top)
            refusal = _kind_refusal(member)
            if refusal:
                raise _Refused(refusal)
            if member.isdir():
                if name:
                    raise _Refused(f"member {member.name!r} is a sub-folder")
                continue
            if not name:
                raise _Refused(f"member {member.name!r} is a file where the folder should be")
            if name in seen:
                raise _Refused(f"member {member.name!r} appears twice")
            seen.add(name)
            if member.size > member_limit:
                raise _Refused(f"member {member.name!r} holds {member.size} bytes, more than "
                               f"the {member_limit} a file of this data set can")
            total += member.size
            if total > total_limit:
                raise _Refused(f"its members hold more than the {total_limit} bytes this data "
                               "set can")
            copy_member(tar.extractfile(member), folder / name, member.size)


def extract_tar(archive: Path, dest: Path, top: str, *, required: Sequence[str],
                member_limit: int, total_limit: int, max_members: int = 32) -> Path:
    """Extract ``archive`` (a .tar.gz holding the folder ``top``) into ``dest/top``, which
    must not exist; return that folder. Refusals and damage raise :class:`DataError` and
    leave nothing behind."""
    final = dest / top
    with scratch_folder(dest, top) as scratch:
        try:
            _extract_checked(archive, scratch, top, member_limit, total_limit, max_members)
        except _Refused as refused:
            raise DataError(f"refused to extract {archive}: {refused}; nothing was extracted "
                            "(adrnet extracts only regular files in one folder)") from None
        except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
            raise DataError(f"{archive}: truncated or corrupt ({type(err).__name__}: {err}); "
                            "nothing was extracted; remove it and rerun") from None
        missing = [name for name in required if not (scratch / top / name).is_file()]
        if missing:
            raise DataError(f"{archive}: lacks {top}/{missing[0]} (not the published archive); "
                            "nothing was extracted")
        try:
            os.rename(scratch / top, final)
        except OSError as exc:
            if final.exists():
                raise DataError(f"{final} exists but is incomplete; remove it and rerun") from None
            raise local_error(final, exc) from None
        fsync_dir(dest)
        return final


@contextmanager
def scratch_folder(dest: Path, label: str) -> Iterator[Path]:
    """A fresh folder of a unique name inside ``dest``, removed with all it holds when the
    body ends. Why: what is extracted is checked there before it is renamed into place, so
    two fetches never write one file and a refused or failed extraction leaves nothing."""
    try:
        scratch = Path(tempfile.mkdtemp(prefix=f".{label}.extract-", dir=dest))
    except OSError as exc:
        raise local_error(dest, exc) from None
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
