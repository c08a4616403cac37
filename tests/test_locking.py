"""One writer per run directory and per eval output: a second process is refused with
one line naming the PID of the first, and a killed holder never leaves a stale lock."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from adrnet.cli import main
from adrnet.eval.evaluate import EvalOptions, evaluate_run
from adrnet.locking import RUN_LOCK, Busy, file_lock, run_lock
from _train_helpers import launch, meta, tiny_config, wait_for_checkpoint, write_config

# 2000 blobs, batch 32: 63 steps per epoch, a checkpoint every 7 steps.
LONG = tiny_config(data={"train_subset": 0}, train={"epochs": 3, "checkpoint_every": 7})


def hold_in_subprocess(call: str):
    """A real second process that holds ``call`` (a lock context) until its stdin closes."""
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from adrnet.locking import file_lock, run_lock
        with {call}:
            print("held", flush=True)
            sys.stdin.read()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held", proc.stderr.read()
    return proc


def release(proc):
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_second_training_into_a_running_run_is_refused_and_a_killed_holder_frees_it(
        tmp_path, capsys):
    config = write_config(tmp_path / "long.toml", LONG)
    first = launch("--config", config, "--out", "run", cwd=tmp_path)
    run = tmp_path / "run"
    try:
        wait_for_checkpoint(first, run, lambda m: m["global_step"] >= 7)
        first.send_signal(signal.SIGSTOP)  # mid-run, holding the lock, writing nothing
        before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
        for extra in ([], ["--resume-if-exists"], ["--set", "optim.lr=0.5"]):
            code = main(["train", "--config", str(config), "--out", str(run), *extra])
            line = one_error_line(capsys.readouterr().err)
            assert code == 2 and f"PID {first.pid}" in line and str(run) in line
        code = main(["train", "--resume", str(run)])
        assert code == 2 and f"PID {first.pid}" in one_error_line(capsys.readouterr().err)
        after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
        assert after == before  # the refused processes wrote nothing
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate()
    stopped_at = meta(run)["global_step"]
    # The kernel dropped the dead process's lock: no stale lock to clear by hand.
    assert main(["train", "--resume", str(run), "--set", "train.epochs=1"]) == 0
    assert meta(run)["global_step"] > stopped_at and not (run / RUN_LOCK).exists()


def test_library_train_is_refused_while_another_process_holds_the_run(tmp_path):
    """What an `adrnet ablate` (or any caller of adrnet.train.train) meets."""
    from adrnet.config import config_from_dict
    from adrnet.train import train
    holder = hold_in_subprocess(f"run_lock({str(tmp_path / 'run')!r})")
    try:
        with pytest.raises(Busy, match=f"PID {holder.pid}"):
            train(config_from_dict(tiny_config(train={"epochs": 1})), tmp_path / "run")
        assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [RUN_LOCK]
    finally:
        release(holder)
    assert train(config_from_dict(tiny_config(train={"epochs": 1})),
                 tmp_path / "run").epochs_completed == 1


def test_second_eval_writing_the_same_output_is_refused(tiny_toy_run, tmp_path, capsys):
    out = tmp_path / "eval.json"
    holder = hold_in_subprocess(f"file_lock(Path({str(out)!r}))")
    try:
        code = main(["eval", str(tiny_toy_run), "--n", "10", "--steps", "1", "--no-progress",
                     "--no-diagnostics", "--out", str(out)])
        line = one_error_line(capsys.readouterr().err)
        assert code == 2 and f"PID {holder.pid}" in line and str(out) in line
        assert not out.exists()
    finally:
        release(holder)
    record = evaluate_run(tiny_toy_run, EvalOptions(attacks=("fgsm",), n=10, diagnostics=False,
                                                    progress=False, out=str(out)))
    assert record["n"] == 10 and out.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.json"]  # no lock file left


def test_a_lock_is_released_and_retaken_in_one_process(tmp_path):
    with run_lock(tmp_path / "r"):
        assert (tmp_path / "r" / RUN_LOCK).read_text().strip() == str(os.getpid())
    with run_lock(tmp_path / "r"), file_lock(tmp_path / "r" / "x.json"):
        pass
    assert not (tmp_path / "r").exists()  # created empty by the lock, removed with it
