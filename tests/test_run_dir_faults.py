"""What surrounds a run directory (issue 22, items 1, 3 and 23): a new run never
replaces a file adrnet did not write nor a run it cannot resume, lock files are never
written through links, and an odd ``checkpoints`` is one `error:` line. Each fault is
made with real files, links and FIFOs; each ends in exit 2 with the files as they were."""

import hashlib
import os
import shutil
import threading
from pathlib import Path

import pytest

from adrnet.cli import main
from adrnet.errors import OutputError
from adrnet.locking import RUN_LOCK, file_lock, run_lock
from adrnet.runs.directory import RUN_CONFIG_HEADER
from _train_helpers import tiny_config, weights, write_config


def run_cli(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def snapshot(folder: Path) -> dict:
    """Every entry under ``folder``: a file's SHA-256, a link's target, a folder's mark."""
    found = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            found[key] = f"-> {os.readlink(path)}"
        elif path.is_dir():
            found[key] = "dir"
        elif path.is_file():
            found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            found[key] = "other"
    return found


@pytest.fixture
def tiny_toml(tmp_path):
    return write_config(tmp_path / "tiny.toml", tiny_config(train={"epochs": 1}))


@pytest.fixture
def trained(tmp_path, tiny_toml, capsys):
    """A finished one-epoch run (about a second)."""
    run = tmp_path / "run"
    assert main(["train", "--config", str(tiny_toml), "--out", str(run)]) == 0
    capsys.readouterr()
    return run


# ---- item 1: a new run destroys nothing ----

OWN_CONFIG = b"# my notes on this experiment\n[train]\nepochs = 7\n"
OWN_METRICS = b"epoch,acc\n1,0.5\n"


@pytest.mark.parametrize("files, named", [
    ({"config.toml": OWN_CONFIG, "metrics.csv": OWN_METRICS}, ["config.toml", "metrics.csv"]),
    ({"metrics.csv": OWN_METRICS}, ["metrics.csv"]),  # no config.toml: nothing of adrnet's
    # adrnet's own config.toml beside a file of the user's, or an evaluation whose weights
    # are gone: a new run would leave the one beside its files and the other stale
    ({"config.toml": RUN_CONFIG_HEADER.encode(), "notes.txt": b"mine\n"}, ["notes.txt"]),
    ({"config.toml": RUN_CONFIG_HEADER.encode(), "eval.json": b"{}\n"}, ["eval.json"]),
], ids=["own-config-and-metrics", "own-metrics", "notes-beside-a-run-config", "stale-eval"])
def test_a_new_run_never_overwrites_what_adrnet_did_not_write(
        tmp_path, tiny_toml, capsys, monkeypatch, files, named):
    folder = tmp_path / "work"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    before = snapshot(folder)
    monkeypatch.chdir(folder)  # the issue's `adrnet train --out .`
    code, err = run_cli(capsys, "train", "--config", tiny_toml, "--out", ".")
    line = one_error_line(err)
    assert code == 2 and "never overwrites a file it did not write" in line
    assert all(name in line for name in named), line
    assert snapshot(folder) == before  # nothing written, nothing removed, no lock left


def test_a_run_with_best_but_no_last_is_never_replaced(trained, tiny_toml, capsys):
    """The issue's reproduction: last.* removed, then --resume-if-exists started a new run
    and deleted best.*."""
    for path in (trained / "checkpoints").glob("last.*"):
        path.unlink()
    before = snapshot(trained)
    for extra in (["--resume-if-exists"], []):
        code, err = run_cli(capsys, "train", "--config", tiny_toml, "--out", trained, *extra)
        line = one_error_line(err)
        assert code == 2 and "holds a best checkpoint" in line and "but no last" in line, line
        assert snapshot(trained) == before


def test_the_leftovers_of_a_run_stopped_before_its_first_checkpoint_are_replaced(
        trained, tiny_toml, capsys):
    """What a run killed before its first checkpoint leaves (config.toml, metrics, a
    stale lock, temporaries, an uncommitted weights file, an objects.json of an earlier
    attempt) is adrnet's: a requeued --resume-if-exists starts again there."""
    shutil.rmtree(trained / "checkpoints")
    (trained / "checkpoints").mkdir()
    (trained / "checkpoints" / "last.safetensors").write_bytes(b"cut short")
    (trained / "checkpoints" / ".last.json.k3j2x.tmp").write_bytes(b"{")
    (trained / ".metrics.jsonl.a8c1q.tmp").write_bytes(b"")
    (trained / RUN_LOCK).write_text("12345\n")
    (trained / "objects.json").write_text('{"model": "an earlier attempt\'s"}\n')
    code, err = run_cli(capsys, "train", "--config", tiny_toml, "--out", trained,
                        "--resume-if-exists")
    assert code == 0, err
    assert not (trained / "objects.json").exists()  # this run passed no objects
    assert (trained / "config.toml").read_text().startswith(RUN_CONFIG_HEADER)
    assert weights(trained, "last").keys() == weights(trained, "best").keys()


# ---- item 23: an odd checkpoints/ ----

def _checkpoints_file(run):
    (run / "checkpoints").write_text("not a folder\n")


def _checkpoints_loop(run):
    (run / "a").symlink_to("b")
    (run / "b").symlink_to("a")
    (run / "checkpoints").symlink_to("a")


def _best_json_folder(run):
    (run / "checkpoints" / "best.json").mkdir(parents=True)


@pytest.mark.parametrize("make, says", [
    (_checkpoints_file, "checkpoints is a regular file, not a checkpoint folder"),
    (_checkpoints_loop, "checkpoints is a symbolic link that cannot be followed"),
    (_best_json_folder, "checkpoints/best.json (a directory)"),
], ids=["checkpoints-a-file", "checkpoints-a-link-loop", "best-json-a-folder"])
def test_an_odd_checkpoints_folder_is_one_error_line(tmp_path, tiny_toml, capsys, make, says):
    run = tmp_path / "run"
    run.mkdir()
    make(run)
    before = snapshot(run)
    code, err = run_cli(capsys, "train", "--config", tiny_toml, "--out", run)
    assert code == 2 and says in one_error_line(err)
    assert snapshot(run) == before


# ---- item 3: lock files are never written through links ----

def _symlink(lock, victim):
    lock.symlink_to(victim)


def _dangling_symlink(lock, victim):
    victim.unlink()
    lock.symlink_to(victim)


def _hard_link(lock, victim):
    os.link(victim, lock)


def _fifo(lock, victim):
    os.mkfifo(lock)


LOCK_FAULTS = pytest.mark.parametrize("make, says", [
    (_symlink, "is a symbolic link"), (_dangling_symlink, "is a symbolic link"),
    (_hard_link, "is a hard link"), (_fifo, "is not a regular file"),
], ids=["symlink", "dangling-symlink", "hard-link", "fifo"])


def _in_thread(body, seconds=10.0):
    """Run ``body`` in a thread and return what it raised: a FIFO must never hang it."""
    raised = []

    def target():
        try:
            body()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            raised.append(exc)
    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "taking the lock hung"
    return raised[0] if raised else None


@LOCK_FAULTS
def test_a_lock_file_that_is_a_link_or_no_file_is_refused_untouched(tmp_path, make, says):
    victim = tmp_path / "victim.txt"
    for lock, take in ((tmp_path / "run" / RUN_LOCK, lambda: run_lock(tmp_path / "run")),
                       (tmp_path / ".eval.json.lock", lambda: file_lock(tmp_path / "eval.json"))):
        victim.write_text("the user's file\n")
        lock.parent.mkdir(exist_ok=True)
        make(lock, victim)

        def hold(take=take):
            with take():
                pytest.fail("the lock was taken")
        error = _in_thread(hold)
        assert isinstance(error, OutputError) and says in str(error), error
        assert "never writes through a link" in str(error)
        if make is _dangling_symlink:
            assert not victim.exists()  # not created through the link
        else:
            assert victim.read_text() == "the user's file\n"
        assert os.path.lexists(lock)  # left for the user, who is told to remove it
        lock.unlink()


def test_train_resume_and_eval_never_write_a_pid_through_a_linked_lock(trained, capsys):
    """The issue's reproduction, through the commands: `train --resume` and `eval`."""
    victim = trained.parent / "victim.txt"
    victim.write_text("the user's file\n")
    for lock, args in ((trained / RUN_LOCK, ["train", "--resume", trained]),
                       (trained / ".eval.json.lock",
                        ["eval", trained, "--attacks", "pgd", "--n", "10", "--steps", "1",
                         "--no-diagnostics", "--no-progress"])):
        lock.symlink_to(victim)
        code, err = run_cli(capsys, *args)
        assert code == 2 and "is a symbolic link" in one_error_line(err)
        assert victim.read_text() == "the user's file\n"
        lock.unlink()
    assert not (trained / "eval.json").exists()
