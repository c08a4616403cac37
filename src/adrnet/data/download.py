"""Checked downloads: mirrors tried in order, resumable, verified before anything uses them.

Why each piece:

* **https only for the built-in sources**, and a redirect from https to anything else is
  refused, so no built-in download is ever silently downgraded. A user's own mirror
  (``--mirror URL``, ``$ADRNET_MIRROR``) may be http: they chose it (a proxy, a local
  copy), and the checksum below still holds it to the published bytes.
* **Mirrors in order, on any failure**: no network, an HTTP error, a transfer that breaks
  off, a wrong checksum; the final error lists each mirror's reason on one line.
* **Resumable**: bytes go to ``<name>.partial`` beside the target; a later attempt asks
  for the rest with ``Range: bytes=N-`` (a server answering 200 instead restarts the file).
  A transfer that breaks off keeps the ``.partial``; anything refused (wrong checksum,
  too large) deletes it, so nothing but a resumable ``.partial`` is ever left behind.
* **Checksum before use**: the file is renamed to its final name only once its MD5 is
  the published one (MD5 because that is what the publishers and torchvision list; it
  guards against damage and wrong files, and the https transport against tampering).
* **One writer per folder**: :func:`waiting_lock` holds an advisory lock
  (:mod:`adrnet.locking`) for the whole fetch; a second fetch into the same folder waits
  for the first and then finds the data there.
* **A bound on size**: a mirror announcing or sending more than the file can be is refused.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import quote, urlsplit

from adrnet.atomic import fsync_dir
from adrnet.errors import ConfigError, DataError
from adrnet.locking import Busy, file_lock

#: Extra mirrors (whitespace-separated base URLs) used instead of the built-in sources
#: when no ``--mirror`` is given.
MIRROR_ENV = "ADRNET_MIRROR"
CHUNK = 1 << 16
TIMEOUT = 60.0  # seconds without a byte before a mirror counts as failed

_LOCAL_HINTS = {
    errno.ENOSPC: "the disk is full; free some space and rerun (a download resumes where it "
                  "stopped)",
    errno.EDQUOT: "the disk quota is exceeded; free some space and rerun (a download resumes "
                  "where it stopped)",
    errno.EACCES: "permission denied; choose another --root or fix its permissions",
    errno.EPERM: "the operation is not permitted; choose another --root",
    errno.EROFS: "the file system is read-only; choose another --root",
    errno.ENOTDIR: "a part of the path is a file, not a directory; choose another --root",
    errno.EISDIR: "it is a directory",
}


def local_error(path, exc: OSError) -> DataError:
    """The one-line error for ``exc`` met while writing ``path`` on this machine."""
    return DataError(f"cannot write {path}: {_LOCAL_HINTS.get(exc.errno, exc.strerror or exc)}")


def md5_of(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, lambda: hashlib.md5(usedforsecurity=False)).hexdigest()


def prepare_dir(folder) -> Path:
    """``folder`` created when missing, or one clear error: it is a file, or not writable."""
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{folder} is a file, not a directory; choose another --root")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise local_error(folder, exc) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            raise local_error(folder, OSError(errno.EROFS, os.strerror(errno.EROFS)))
        raise DataError(f"cannot write in {folder}: permission denied; choose another --root "
                        "or fix its permissions")
    return folder


# ---- mirrors ----

def parse_mirrors(urls: Iterable[str], *, https_only: bool = False) -> list[str]:
    """Base URLs, each ending in ``/``; anything not http(s) with a host is a ConfigError."""
    bases = []
    for url in urls:
        parts = urlsplit(url)
        allowed = ("https",) if https_only else ("http", "https")
        if parts.scheme not in allowed or not parts.netloc or parts.query or parts.fragment:
            raise ConfigError(f"mirror {url!r} is not an {' or '.join(s + '://' for s in allowed)} "
                              "base URL (the file name is appended to it)")
        bases.append(url if url.endswith("/") else url + "/")
    return bases


def user_mirrors(given: Sequence[str] | None) -> list[str] | None:
    """The mirrors the user chose: ``given`` (``--mirror``), else ``$ADRNET_MIRROR``, else None
    (use the built-in sources)."""
    urls = list(given or ()) or os.environ.get(MIRROR_ENV, "").split()
    return parse_mirrors(urls) if urls else None


def file_url(base: str, filename: str) -> str:
    return base + quote(filename)


# ---- one transfer ----

class _MirrorFailed(Exception):
    """This mirror did not give the file; ``offline`` when it could not be reached at all."""

    def __init__(self, reason: str, offline: bool = False):
        super().__init__(reason)
        self.offline = offline


class _NotSatisfiable(Exception):
    """HTTP 416 to a resume request: the ``.partial`` may already be whole."""


class _NoDowngrade(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but never from https to anything else."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urlsplit(req.full_url).scheme == "https" and urlsplit(newurl).scheme != "https":
            raise urllib.error.URLError(f"refused a redirect from https to {newurl}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_NoDowngrade)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def _unreachable(err: BaseException) -> _MirrorFailed:
    reason = getattr(err, "reason", err)
    offline = isinstance(reason, (socket.gaierror, ConnectionRefusedError, socket.timeout,
                                  TimeoutError)) or getattr(reason, "errno", None) in (
        errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ECONNREFUSED)
    text = str(reason) or type(reason).__name__
    return _MirrorFailed(f"cannot connect ({text})", offline=offline)


def _user_agent() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return f"adrnet/{version('adrnet')} (python-urllib)"
    except PackageNotFoundError:
        return "adrnet (python-urllib)"


def _transfer(url: str, partial: Path, max_bytes: int, progress: bool | None, timeout: float,
              label: str) -> None:
    """Bring ``url`` into ``partial`` (appending when it already holds a prefix)."""
    start = partial.stat().st_size if partial.is_file() else 0
    headers = {"User-Agent": _user_agent(), "Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        response = _OPENER.open(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        err.close()
        if err.code == 416 and start:
            raise _NotSatisfiable() from None
        raise _MirrorFailed(f"HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as err:
        raise _unreachable(err) from None
    with response:
        total = _expected_total(response, start)
        if response.status == 200:
            start = 0  # the server ignored the Range: the file starts again
        if total is not None and total > max_bytes:
            raise _MirrorFailed(f"it announces {total} bytes, more than the {max_bytes} this "
                                "file can have")
        _receive(response, partial, start, total, max_bytes, progress, label)


def _expected_total(response, start: int) -> int | None:
    """The whole file's size as the response announces it (None when unknown)."""
    if start and response.status == 206:
        found = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
        if not found or int(found[1]) != start:
            raise _MirrorFailed(f"it answered a resume from byte {start} with Content-Range "
                                f"{response.headers.get('Content-Range')!r}")
        return None if found[3] == "*" else int(found[3])
    if response.status != 200:
        raise _MirrorFailed(f"unexpected HTTP status {response.status}")
    length = response.headers.get("Content-Length", "")
    return int(length) if length.strip().isdigit() else None


def _receive(response, partial: Path, start: int, total: int | None, max_bytes: int,
             progress: bool | None, label: str) -> None:
    from tqdm import tqdm
    try:
        handle = open(partial, "ab" if start else "wb")
    except OSError as exc:
        raise local_error(partial, exc) from None
    written = start
    with handle, tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=label, disable=None if progress is None else not progress,
                      file=sys.stderr, leave=False) as bar:
        while True:
            try:
                chunk = response.read(CHUNK)
            except (OSError, http.client.HTTPException) as err:
                _flush(handle, partial)
                raise _MirrorFailed(f"the transfer broke off after {written} bytes "
                                    f"({type(err).__name__}); {partial.name} is kept and the "
                                    "next fetch resumes it") from None
            if not chunk:
                break
            written += len(chunk)
            if written > max_bytes:
                handle.close()
                partial.unlink(missing_ok=True)
                raise _MirrorFailed(f"it sent more than the {max_bytes} bytes this file can have")
            try:
                handle.write(chunk)
            except OSError as exc:
                raise local_error(partial, exc) from None
            bar.update(len(chunk))
        _flush(handle, partial)
    if total is not None and written < total:
        raise _MirrorFailed(f"the transfer broke off after {written} of {total} bytes; "
                            f"{partial.name} is kept and the next fetch resumes it")


def _flush(handle, partial: Path) -> None:
    try:
        handle.flush()
        os.fsync(handle.fileno())
    except OSError as exc:
        raise local_error(partial, exc) from None


# ---- a file from the first mirror that has it right ----

class DownloadFailed(DataError):
    """No mirror gave the file with its published checksum (the reasons are in the message)."""


def download(filename: str, md5: str, mirrors: Sequence[str], folder: Path, *, max_bytes: int,
             progress: bool | None = None, timeout: float = TIMEOUT, hint: str = "",
             say: Callable[[str], None] | None = None) -> Path:
    """``folder/filename`` from the first of ``mirrors`` (base URLs) whose bytes have MD5
    ``md5``. Problems of this machine (full disk, no permission) stop at once with a
    :class:`DataError`; every mirror failing raises :class:`DownloadFailed`."""
    target, partial = folder / filename, folder / f"{filename}.partial"
    reasons: list[str] = []
    offline = True
    for base in mirrors:
        url = file_url(base, filename)
        for _ in range(2):  # a second pass from byte 0 when a resumed file proves wrong
            resumed = partial.is_file() and partial.stat().st_size > 0
            try:
                if say and resumed:
                    say(f"resuming {filename} from byte {partial.stat().st_size} ({url})")
                _transfer(url, partial, max_bytes, progress, timeout, filename)
            except _NotSatisfiable:
                if md5_of(partial) != md5:
                    partial.unlink()
                    continue
            except _MirrorFailed as failure:
                offline = offline and failure.offline
                reasons.append(f"{url}: {failure}")
                break
            found = md5_of(partial)
            if found == md5:
                try:
                    os.replace(partial, target)
                except OSError as exc:  # e.g. a folder of that name: the .partial is kept
                    raise local_error(target, exc) from None
                fsync_dir(folder)
                return target
            partial.unlink()
            if resumed:
                continue  # the kept part may be what was wrong: once more, whole
            offline = False
            reasons.append(f"{url}: MD5 {found}, expected {md5} (damaged, or not the "
                           "published file)")
            break
        else:
            offline = False
            reasons.append(f"{url}: MD5 wrong twice, resumed and whole")
    lead = "no network? " if offline and reasons else ""
    tried = "; ".join(reasons) or "no mirror given"
    raise DownloadFailed(f"{lead}could not download {filename}, every mirror failed: {tried}"
                         + (f"; {hint}" if hint else ""))


# ---- one fetch per folder at a time ----

@contextmanager
def waiting_lock(path: Path, what: str, say: Callable[[str], None] | None = None,
                 timeout: float = 6 * 3600.0, poll: float = 0.2):
    """Hold ``path``'s lock (:func:`adrnet.locking.file_lock`) for the body, waiting (up to
    ``timeout`` seconds) while another process holds it."""
    deadline = time.monotonic() + timeout
    told = False
    with ExitStack() as stack:
        while True:
            try:
                stack.enter_context(file_lock(path))
                break
            except Busy as busy:
                if time.monotonic() > deadline:
                    raise DataError(f"gave up waiting: {busy}") from None
                if say and not told:
                    say(f"another adrnet process is fetching {what}; waiting for it")
                    told = True
                time.sleep(poll)
        yield
