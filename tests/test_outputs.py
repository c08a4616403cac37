"""Faults of the environment and of output paths: a full disk, an unwritable or odd
--out, symbolic links, stale stored results. Each ends in exit 2 with one `error:`
line, loses nothing that was written before and leaves no temporary behind."""

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from adrnet.cli import main
from adrnet.report import write_report
from _train_helpers import meta, tiny_config, write_config


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith((".tmp", ".lock"))]


@pytest.fixture
def tiny_toml(tmp_path):
    return write_config(tmp_path / "tiny.toml", tiny_config(train={"epochs": 1}))


def full_disk_under(monkeypatch, folder: Path, name_part: str = ""):
    """Make every os.write into a file under ``folder`` (whose name holds ``name_part``)
    fail with ENOSPC, as on a full disk; writes elsewhere go through."""
    real_write = os.write

    def write(fd, data):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target.startswith(str(folder)) and name_part in Path(target).name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)
    monkeypatch.setattr(os, "write", write)


# ---- a full disk ----

def test_enospc_during_a_checkpoint_save_keeps_the_previous_one_and_no_temporaries(
        tmp_path, tiny_toml, capsys, monkeypatch):
    run = tmp_path / "run"
    assert main(["train", "--config", str(tiny_toml), "--out", str(run)]) == 0
    capsys.readouterr()
    saved = {p: p.read_bytes() for p in (run / "checkpoints").iterdir()}
    # the weights temporary is written, then the state temporary meets a full disk
    full_disk_under(monkeypatch, run / "checkpoints", ".state.pt.")
    code = main(["train", "--resume", str(run), "--set", "train.epochs=2"])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and "disk is full" in line and "last.state.pt" in line
    assert {p: p.read_bytes() for p in (run / "checkpoints").iterdir()} == saved
    assert no_temporaries(run)
    monkeypatch.undo()
    assert main(["train", "--resume", str(run), "--set", "train.epochs=2"]) == 0
    assert meta(run)["epoch"] == 2


def test_fresh_run_on_a_full_disk_leaves_no_empty_checkpoints_folder(
        tmp_path, tiny_toml, capsys, monkeypatch):
    run = tmp_path / "run"
    full_disk_under(monkeypatch, run / "checkpoints")
    assert main(["train", "--config", str(tiny_toml), "--out", str(run)]) == 2
    assert "disk is full" in one_error_line(capsys.readouterr().err)
    assert not (run / "checkpoints").exists() and no_temporaries(run)
    full_disk_under(monkeypatch, tmp_path / "other")
    assert main(["train", "--config", str(tiny_toml), "--out", str(tmp_path / "other")]) == 2
    assert "disk is full" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "other").exists()  # nothing at all: not even the folder


def _mount_tmpfs(folder: Path) -> bool:
    folder.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)],
                          capture_output=True)
    return done.returncode == 0


def _fill(folder: Path) -> None:
    """Write until the disk is full (unbuffered: a partial last write must not fail again
    at close, which depends on how the free space divides into 64 KiB chunks)."""
    with open(folder / "filler", "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
        except OSError:
            pass


def test_a_real_full_tmpfs(tmp_path, tiny_toml):
    """A real full disk (a 2 MiB tmpfs; needs root to mount, else skipped)."""
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk):
        pytest.skip("mounting a tmpfs needs root")
    try:
        cli = [sys.executable, "-m", "adrnet.cli", "train", "--config", str(tiny_toml)]
        assert subprocess.run(cli + ["--out", str(disk / "a")], capture_output=True).returncode == 0
        saved = {p: p.read_bytes() for p in (disk / "a" / "checkpoints").iterdir()}
        _fill(disk)
        for args in (["--out", str(disk / "b")], ["--resume-if-exists", "--out", str(disk / "a"),
                                                  "--set", "train.epochs=2"]):
            done = subprocess.run(cli + args, capture_output=True, text=True)
            line = one_error_line(done.stderr)
            assert done.returncode == 2 and "disk is full" in line
        assert not (disk / "b").exists() and no_temporaries(disk)
        assert {p: p.read_bytes() for p in (disk / "a" / "checkpoints").iterdir()} == saved
    finally:
        subprocess.run(["umount", str(disk)], check=True)


# ---- output paths that cannot be written ----

def test_train_out_that_cannot_be_a_run_directory(tmp_path, tiny_toml, capsys):
    (tmp_path / "file").write_text("mine")
    for out, needle in ((tmp_path / "file", "is a file, not a run directory"),
                        (tmp_path / "file" / "run", "a part of the path is a file")):
        assert main(["train", "--config", str(tiny_toml), "--out", str(out)]) == 2
        assert needle in one_error_line(capsys.readouterr().err)
    assert (tmp_path / "file").read_text() == "mine"


EVAL = ["--attacks", "fgsm", "--n", "10", "--no-diagnostics", "--no-progress"]


def test_eval_out_that_is_not_an_eval_json_is_refused_untouched(
        tiny_toy_run, tmp_path, capsys):
    (tmp_path / "folder").mkdir()
    (tmp_path / "notes.txt").write_text("my notes")
    with open(tmp_path / "huge.json", "wb") as handle:
        handle.truncate(2**30)  # a sparse 1 GiB file: never read into memory
    (tmp_path / "to_full").symlink_to("/dev/full")
    (tmp_path / "loop_a").symlink_to(tmp_path / "loop_b")
    (tmp_path / "loop_b").symlink_to(tmp_path / "loop_a")
    cases = {"loop_a": "a symbolic link that leads back to itself", "folder": "is a directory",
             "notes.txt": "not an eval.json written by adrnet eval", "huge.json": "larger than any eval.json", "to_full": "not a regular file",
             "folder/../notes.txt/x": "a part of the path is a file"}
    for name, needle in cases.items():
        code = main(["eval", str(tiny_toy_run), *EVAL, "--out", str(tmp_path / name)])
        assert code == 2 and needle in one_error_line(capsys.readouterr().err), name
    assert main(["eval", str(tiny_toy_run), *EVAL, "--out", "/dev/full"]) == 2
    assert "not a regular file" in one_error_line(capsys.readouterr().err)
    assert (tmp_path / "notes.txt").read_text() == "my notes"
    assert (tmp_path / "huge.json").stat().st_size == 2**30
    assert not Path("/dev/.full.lock").exists() and no_temporaries(tmp_path)


def test_eval_out_at_a_symlink_writes_through_it(tiny_toy_run, tmp_path, capsys):
    (tmp_path / "results").mkdir()
    link = tmp_path / "latest.json"
    link.symlink_to(tmp_path / "results" / "eval.json")
    for _ in range(2):  # a dangling link first, then a link to the earlier result
        assert main(["eval", str(tiny_toy_run), *EVAL, "--out", str(link)]) == 0
        assert link.is_symlink()
        assert json.loads((tmp_path / "results" / "eval.json").read_text())["n"] == 10
    assert no_temporaries(tmp_path)


def test_eval_out_in_a_folder_yet_to_be_made(tiny_toy_run, tmp_path):
    assert main(["eval", str(tiny_toy_run), *EVAL, "--out", str(tmp_path / "a/b/e.json")]) == 0
    assert sorted(p.name for p in (tmp_path / "a/b").iterdir()) == ["e.json"]


def test_report_out_that_cannot_be_written(tiny_toy_run, tmp_path, capsys):
    (tmp_path / "r.html").mkdir()
    (tmp_path / "file").write_text("x")
    for out, needle in ((tmp_path / "r.html", "is a directory"),
                        (tmp_path / "file" / "r.html", "a part of the path is a file")):
        assert main(["report", str(tiny_toy_run), "--out", str(out)]) == 2
        assert needle in one_error_line(capsys.readouterr().err)


def test_eval_into_an_unwritable_folder(tiny_toy_run, tmp_path, capsys, monkeypatch):
    real_write = os.write

    def write(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(tmp_path / "ro")):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_write(fd, data)
    monkeypatch.setattr(os, "write", write)
    (tmp_path / "ro").mkdir()
    assert main(["eval", str(tiny_toy_run), *EVAL, "--out", str(tmp_path / "ro/e.json")]) == 2
    assert "read-only" in one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in (tmp_path / "ro").iterdir()) == []


# ---- stored results and configs that must stay true ----

def test_a_sweep_of_earlier_weights_is_dropped_not_reported(tiny_toy_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_toy_run, run)
    sweep = ["--which", "last", "--attacks", "pgd", "--steps", "2", "--n", "20",
             "--no-diagnostics", "--no-progress"]
    assert main(["eval", str(run), *sweep, "--sweep", "0.02,0.05"]) == 0
    first = json.loads((run / "eval.json").read_text())
    assert first["weights_sha256"] == meta(run)["files"]["weights"]["sha256"]
    assert main(["train", "--resume", str(run), "--set", "train.epochs=3"]) == 0
    capsys.readouterr()
    html, _ = write_report([run], tmp_path / "report.html")  # before re-evaluating: set aside
    assert "computed on earlier weights" in html.read_text()
    assert f"{100 * first['worst_case_accuracy']:.2f}" not in html.read_text()
    assert main(["eval", str(run), *sweep]) == 0
    out = capsys.readouterr().out
    assert "note: dropped the earlier ε sweep(s) (linf): computed on other weights" in out
    second = json.loads((run / "eval.json").read_text())
    assert second["sweeps"] == {} and second["weights_sha256"] != first["weights_sha256"]
    assert second["weights_sha256"] == meta(run)["files"]["weights"]["sha256"]


def test_a_resume_with_nothing_to_train_keeps_config_toml(tmp_path, capsys):
    config = write_config(tmp_path / "c.toml", tiny_config(train={"epochs": 2}))
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(run)]) == 0
    saved = (run / "config.toml").read_bytes()
    for epochs in (1, 2):
        assert main(["train", "--resume", str(run), "--set", f"train.epochs={epochs}"]) == 0
        assert "nothing to do" in capsys.readouterr().out
        assert (run / "config.toml").read_bytes() == saved
    assert main(["train", "--resume", str(run), "--set", "train.epochs=3"]) == 0
    assert "epochs = 3" in (run / "config.toml").read_text()
