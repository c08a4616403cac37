"""Checkpoints that lose nothing: bit-identical resume after SIGKILL (a real subprocess),
SIGTERM saves and exits, and every damaged or hostile checkpoint is refused."""

import hashlib
import json
import os
import pickle
import re
import shutil
import signal
from pathlib import Path

import pytest
import torch

from adrnet import load_model
from adrnet.atomic import write_bytes_atomic
from adrnet.cli import main
from adrnet.config import config_from_dict
from adrnet.errors import CheckpointError, ConfigError, OutputError
from adrnet.runs.checkpoint import checkpoint_files, load_state_bytes
from adrnet.train import train
from adrnet.train.signals import stop_on_signals
from _train_helpers import (  # noqa: F401 (tiny_mnist is a fixture)
    launch, meta, records, same_tensors, tiny_config, tiny_mnist, wait_for_checkpoint, weights,
    without_timing, write_config,
)

# 2000 blobs, batch 32: 63 steps per epoch, a resumable checkpoint every 7 steps.
RESUMABLE = tiny_config(data={"train_subset": 0}, optim={"name": "sgd", "lr": 0.05},
                        train={"epochs": 3, "checkpoint_every": 7, "log_every": 10})


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference: the same run, never interrupted (in this process)."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    train(config_from_dict(RESUMABLE), run_dir)
    return run_dir


def assert_same_run(run_dir, reference):
    for which in ("last", "best"):
        assert same_tensors(weights(run_dir, which), weights(reference, which)), which
        assert (run_dir / f"checkpoints/{which}.safetensors").read_bytes() == \
            (reference / f"checkpoints/{which}.safetensors").read_bytes()
    assert without_timing(records(run_dir)) == without_timing(records(reference))
    assert without_timing(records(run_dir, "step")) == without_timing(records(reference, "step"))


def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path, uninterrupted):
    config = write_config(tmp_path / "tiny.toml", RESUMABLE)
    proc = launch("--config", config, "--out", "run", cwd=tmp_path)
    wait_for_checkpoint(proc, tmp_path / "run", lambda m: m["epoch"] >= 1 and m["step"] > 0)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    stopped_at = meta(tmp_path / "run")
    assert stopped_at["global_step"] < 3 * 63
    resumed = launch("--resume", "run", cwd=tmp_path)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "resuming at epoch" in out
    assert_same_run(tmp_path / "run", uninterrupted)


def test_sigterm_saves_a_resumable_checkpoint_and_says_how_to_resume(tmp_path, uninterrupted):
    config = write_config(tmp_path / "tiny.toml", RESUMABLE)
    proc = launch("--config", config, "--out", "run", cwd=tmp_path)
    wait_for_checkpoint(proc, tmp_path / "run", lambda m: m["global_step"] >= 7)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and "adrnet train --resume run" in err
    assert "Traceback" not in err
    saved = meta(tmp_path / "run")
    assert 7 <= saved["global_step"] < 3 * 63
    assert saved["global_step"] == saved["epoch"] * 63 + saved["step"]
    resumed = launch("--resume", "run", cwd=tmp_path)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert_same_run(tmp_path / "run", uninterrupted)


def test_sigint_only_sets_the_stop_flag():
    # The handler in force before (Python's default, or SIG_IGN for a background job) comes back.
    before = signal.getsignal(signal.SIGINT)
    with stop_on_signals() as flag:
        assert not flag
        signal.raise_signal(signal.SIGINT)
        assert flag and flag.signum == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is before


# ---- damaged and hostile checkpoints ----

SMALL = tiny_config(train={"epochs": 1})


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    train(config_from_dict(SMALL), run_dir)
    return run_dir


@pytest.fixture
def run_copy(finished, tmp_path):
    shutil.copytree(finished, tmp_path / "run")
    return tmp_path / "run"


def rehash(run_dir, which="last"):
    """Make the JSON record vouch for the current files (as an attacker could)."""
    files = checkpoint_files(run_dir, which)
    record = json.loads(files.path("meta").read_text())
    for role in ("weights", "state"):
        data = files.path(role).read_bytes()
        record["files"][role] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    files.path("meta").write_text(json.dumps(record))


def resume(run_dir):
    train(config_from_dict(SMALL), run_dir, resume=True)


@pytest.mark.parametrize("role", ["weights", "state", "meta"])
def test_truncated_checkpoint_is_refused(run_copy, role):
    path = checkpoint_files(run_copy, "last").path(role)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        resume(run_copy)
    if role != "state":
        with pytest.raises(CheckpointError, match="truncated or corrupt"):
            load_model(run_copy, which="last")


def test_flipped_byte_is_detected(run_copy):
    path = checkpoint_files(run_copy, "best").path("weights")
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_model(run_copy)


@pytest.mark.parametrize("field, value, needle", [
    ("step", 100000, "step = 100000, not a step from 0 to 0"),
    ("epoch", -3, "epoch = -3, not a whole number of epochs from 0 to 1"),
    ("epoch", 1e300, "epoch = 1e+300"),
    ("global_step", 5, "global_step = 5, not epoch 1 x 8 steps + step 0"),
    ("best", {"metric": "val_acc_robust", "value": "high", "epoch": 1}, "not an accuracy"),
    ("best", {"metric": "val_acc_robust", "value": 0.5, "epoch": 2}, "not a finished epoch"),
    ("best", {"metric": "val_acc_robust", "value": 0.5, "epoch": None}, "without its epoch"),
    ("metrics", "garbage", "metrics = 'garbage', not a list of step and epoch records"),
    ("metrics", [{"kind": "epoch"}, 3], "not a list of step and epoch records"),
    ("running", {"examples": "many"}, "not a table of running sums"),
])
def test_a_damaged_record_is_refused_before_any_training(run_copy, capsys, field, value, needle):
    """A hand-edited last.json (its SHA-256 only vouches for the two other files)."""
    path = checkpoint_files(run_copy, "last").path("meta")
    record = json.loads(path.read_text())
    record[field] = value
    path.write_text(json.dumps(record))
    before = (run_copy / "metrics.jsonl").read_bytes()
    with pytest.raises(CheckpointError, match=re.escape(needle)):
        train(config_from_dict({**SMALL, "train": {**SMALL["train"], "epochs": 2}}), run_copy,
              resume=True)
    code = main(["train", "--resume", str(run_copy), "--set", "train.epochs=2"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and needle in err
    assert (run_copy / "metrics.jsonl").read_bytes() == before  # nothing trained


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_execute_code_is_refused_without_running(run_copy, tmp_path):
    marker = tmp_path / "pwned"
    state = checkpoint_files(run_copy, "last").path("state")
    state.write_bytes(pickle.dumps({"optimizer": RunsCode(marker)}, protocol=2))
    rehash(run_copy)
    with pytest.raises(CheckpointError, match="refused .* could execute code"):
        resume(run_copy)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused"):
        load_state_bytes(pickle.dumps(RunsCode(marker), protocol=2), Path("x.pt"))
    assert not marker.exists()


def test_checkpoint_of_another_model_is_refused(run_copy, tmp_path):
    other = tmp_path / "other"
    train(config_from_dict(tiny_config(model={"options": {"hidden": [8]}},
                                       train={"epochs": 1})), other)
    for which in ("last", "best"):
        shutil.copy(checkpoint_files(other, which).path("weights"),
                    checkpoint_files(run_copy, which).path("weights"))
        rehash(run_copy, which)
    with pytest.raises(CheckpointError, match="different architecture.*stages.fc1"):
        load_model(run_copy)
    with pytest.raises(CheckpointError, match="different architecture"):
        resume(run_copy)
    with pytest.raises(ConfigError, match="different config: model.options"):
        train(config_from_dict(tiny_config(model={"options": {"hidden": [8]}})), run_copy,
              resume=True)


def test_missing_best_points_to_last(run_copy):
    for role in ("weights", "state", "meta"):
        checkpoint_files(run_copy, "best").path(role).unlink()
    with pytest.raises(CheckpointError, match="no best checkpoint yet.*--which last"):
        load_model(run_copy)
    model, _ = load_model(run_copy, which="last")
    assert same_tensors(model.state_dict(), weights(run_copy, "last"))  # the run's last weights


def test_paths_that_are_not_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "missing")
    (tmp_path / "weights.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not an adrnet checkpoint"):
        load_model(tmp_path / "weights.pt")
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(CheckpointError, match="not an adrnet run directory"):
        load_model(tmp_path / "empty_run")
    with pytest.raises(CheckpointError, match="no checkpoint to resume|has no checkpoint"):
        train(config_from_dict(SMALL), tmp_path / "empty_run", resume=True)


def test_interrupted_save_falls_back_to_the_previous_generation(run_copy):
    """A kill between the three renames of a save leaves last.* mixed; prev is used."""
    last = checkpoint_files(run_copy, "last")
    prev = last.sibling("last.prev")
    good = weights(run_copy)
    for role in ("weights", "state", "meta"):
        os.link(last.path(role), prev.path(role))
    tampered = {k: v + 1 for k, v in good.items()}
    from adrnet.runs.checkpoint import encode_weights
    last.path("weights").unlink()  # a save replaces files (new inode): prev keeps the old
    last.path("weights").write_bytes(encode_weights(tampered))  # new weights, old JSON
    with pytest.warns(UserWarning, match="interrupted save"):
        model, _ = load_model(run_copy, which="last")
    assert same_tensors(model.state_dict(), good)
    with pytest.warns(UserWarning, match="interrupted save"):
        train(config_from_dict(tiny_config(train={"epochs": 2})), run_copy, resume=True)
    assert not prev.path("meta").exists() and meta(run_copy)["epoch"] == 2


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    target = tmp_path / "file.json"
    write_bytes_atomic(target, b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OutputError, match="cannot write"):
        write_bytes_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["file.json"]


def test_state_file_loads_only_tensors_and_plain_data(finished):
    state = load_state_bytes(checkpoint_files(finished, "last").path("state").read_bytes(),
                             Path("last.state.pt"))
    assert set(state) >= {"optimizer", "rng", "scaler"}
    assert isinstance(state["rng"]["torch"], torch.Tensor)


def test_interrupt_and_resume_is_bit_identical_with_dropout_bf16_channels_last(
        tmp_path, tiny_mnist, monkeypatch):
    """SmallCNN (dropout) in bf16 + channels_last: a SIGTERM in mid-epoch (raised from
    inside the 6th step, in this process) then a resume equals the uninterrupted run."""
    raw = tiny_config(
        data={"name": "mnist", "root": str(tiny_mnist), "val_size": 40, "train_subset": 64},
        model={"name": "smallcnn", "options": {}},
        attack={"eps": 0.3, "steps": 2, "step_size": 0.1, "eps_warmup_epochs": 1.0},
        optim={"name": "sgd", "lr": 0.05, "nesterov": True},
        train={"epochs": 2, "batch_size": 16, "precision": "bf16", "channels_last": True},
        eval={"val_size": 40, "val_steps": 2})
    cfg = config_from_dict(raw)
    train(cfg, tmp_path / "reference")
    from adrnet.train import state as state_module
    real = state_module.objective_from_config

    def interrupting(config):
        objective, calls = real(config), []

        def call(*args, **kwargs):
            calls.append(1)
            if len(calls) == 6:  # epoch 2, step 2 of 4
                signal.raise_signal(signal.SIGTERM)
            return objective(*args, **kwargs)
        call.attack_loss = objective.attack_loss
        return call
    monkeypatch.setattr(state_module, "objective_from_config", interrupting)
    from adrnet.train import TrainingInterrupted
    with pytest.raises(TrainingInterrupted, match="SIGTERM at epoch 2, before step 3"):
        train(cfg, tmp_path / "run")
    monkeypatch.undo()
    assert (meta(tmp_path / "run")["epoch"], meta(tmp_path / "run")["step"]) == (1, 2)
    train(cfg, tmp_path / "run", resume=True)
    assert_same_run(tmp_path / "run", tmp_path / "reference")


def test_a_signal_after_the_last_step_is_not_swallowed(tmp_path, monkeypatch):
    """SIGTERM just after the final validation: the run finishes and saves, then train()
    raises, so a caller running several trainings (adrnet ablate) stops too. (A signal
    during a validation cuts it short: tests/test_value_faults.py.)"""
    from adrnet.train import TrainingInterrupted, loop
    real = loop.validate

    def validate_then_signal(run, epoch):
        result = real(run, epoch)
        if epoch + 1 == run.cfg.train.epochs:
            signal.raise_signal(signal.SIGTERM)
        return result
    monkeypatch.setattr(loop, "validate", validate_then_signal)
    cfg = config_from_dict(tiny_config(train={"epochs": 2}))
    with pytest.raises(TrainingInterrupted, match="after the run's last step") as stopped:
        train(cfg, tmp_path / "run")
    assert stopped.value.signum == signal.SIGTERM
    assert meta(tmp_path / "run")["epoch"] == 2  # complete and saved
    monkeypatch.setattr(loop, "validate", real)
    real_build = loop.build_run

    def build_then_signal(*args):
        signal.raise_signal(signal.SIGTERM)
        return real_build(*args)
    monkeypatch.setattr(loop, "build_run", build_then_signal)
    with pytest.raises(TrainingInterrupted):  # the same when there is nothing left to do
        train(cfg, tmp_path / "run", resume=True)
