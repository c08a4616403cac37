"""Checkpoints that are not what their record says: weights holding NaN or inf, files
that are pipes, devices or far larger than recorded, and a checkpoint read while the
training that writes it saves again. Each is refused with one clear line naming the
file (or read correctly, for the save in progress), never scored, never a hang or a
memory blow-up, and a sound checkpoint is never called corrupt."""

import hashlib
import json
import os
import re
import shutil
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from adrnet.cli import main
from adrnet.config import config_from_dict
from adrnet.errors import CheckpointError
from adrnet.models import model_from_config
from adrnet.runs import load_checkpoint, load_model
from adrnet.runs.checkpoint import checkpoint_files, encode_weights
from adrnet.runs.weights import load_weights
from _bounded import bounded
from _train_helpers import launch, tiny_config, wait_for_checkpoint, write_config

EVAL = ["--attacks", "pgd", "--n", "20", "--no-diagnostics", "--no-progress"]


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def run(tiny_toy_run, tmp_path):
    """A private copy of the shared toy run (its checkpoints are changed here)."""
    return shutil.copytree(tiny_toy_run, tmp_path / "run")


def vouch(files) -> None:
    """Make the record of ``files`` state the size and SHA-256 of its files as they are
    now, as a checkpoint written from these weights would."""
    record = json.loads(files.path("meta").read_text())
    for role in ("weights", "state"):
        data = files.path(role).read_bytes()
        record["files"][role] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    files.path("meta").write_text(json.dumps(record))


# ---- 10: weights holding NaN or inf ----

def test_a_checkpoint_of_non_finite_weights_is_refused_naming_the_tensor(run, capsys):
    """NaN weights were scored: 49% "robust", the argmax of NaN being class 0."""
    files = checkpoint_files(run, "best")
    tensors = load_file(str(files.path("weights")))
    tensors["stages.fc2.0.weight"][3, :2] = float("nan")   # 2 of its 16 x 16 values
    tensors["stages.logits.bias"][0] = float("inf")
    save_file(tensors, str(files.path("weights")))
    vouch(files)  # a sound file: its record vouches for it
    with pytest.raises(CheckpointError, match=r"non-finite weights: tensor stages\.fc2\.0\.weight "
                                              r"has 2 NaN or inf value\(s\) of 256 \(and 1 more"):
        load_model(run)
    assert main(["eval", str(run), *EVAL]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "best.safetensors holds non-finite weights" in line and "stages.fc2.0.weight" in line
    assert not (run / "eval.json").exists()
    model, _ = load_model(run, which="last")  # the other checkpoint, as the message says
    assert all(bool(torch.isfinite(v).all()) for v in model.state_dict().values())


def test_weights_given_with_model_holding_inf_are_refused(run, tmp_path):
    """--weights FILE: the same refusal for weights trained outside adrnet."""
    _, cfg = load_model(run)
    tensors = load_file(str(checkpoint_files(run, "best").path("weights")))
    tensors["stages.logits.weight"][1, 5] = -float("inf")
    save_file(tensors, str(tmp_path / "w.safetensors"))
    with pytest.raises(CheckpointError, match=r"--weights .*w\.safetensors holds non-finite "
                                              r"weights: tensor stages\.logits\.weight has 1 "):
        load_weights(cfg, tmp_path / "w.safetensors")
    tensors["stages.logits.weight"][1, 5] = 0.0
    save_file(tensors, str(tmp_path / "w.safetensors"))
    assert load_weights(cfg, tmp_path / "w.safetensors").model is not None


def test_infinities_of_the_model_itself_are_kept():
    """A model may hold -inf of its own (an attention mask buffer): only values that are
    non-finite where the freshly built model's are finite count as damage."""
    from adrnet.runs.checkpoint import check_finite
    fresh = {"mask": torch.tensor([0.0, -float("inf")]), "w": torch.ones(3), "steps": torch.tensor(4)}
    check_finite({"mask": torch.tensor([0.0, -float("inf")]), "w": torch.full((3,), 2.0),
                  "steps": torch.tensor(9)}, "w.safetensors", fresh)
    for damaged, count in (({"mask": torch.tensor([float("nan"), -float("inf")])}, 1),
                           ({"w": torch.tensor([1.0, float("inf"), float("nan")])}, 2)):
        with pytest.raises(CheckpointError, match=f"tensor {next(iter(damaged))} has {count} NaN"):
            check_finite({**fresh, **damaged}, "w.safetensors", fresh)


# ---- 15: checkpoint files read only as regular files of their recorded size ----

def test_pipes_devices_and_huge_files_in_a_checkpoint_are_refused_unread(run, tmp_path, capsys):
    """A FIFO hung eval, state.pt linked to /dev/zero filled the memory, and a 3 GB
    sparse weights file took 3.4 GB: each file is now refused by its kind or by the
    size its record states, before a byte of it is read."""
    files = checkpoint_files(run, "last")
    recorded = json.loads(files.path("meta").read_text())["files"]["weights"]["bytes"]
    sound = {role: files.path(role).read_bytes() for role in ("weights", "state", "meta")}

    def restore():
        for role, data in sound.items():
            files.path(role).unlink()
            files.path(role).write_bytes(data)

    def refusal() -> str:
        with bounded(memory=512 * 2**20), pytest.raises(CheckpointError) as caught:
            load_model(run, which="last")
        return str(caught.value)

    os.mkfifo(files.path("weights").with_suffix(".fifo"))
    files.path("weights").unlink()
    os.rename(files.path("weights").with_suffix(".fifo"), files.path("weights"))
    assert re.search(r"checkpoint weights file .*last\.safetensors is a FIFO \(named pipe\), "
                     r"not a regular file; nothing was read", refusal())
    with bounded(memory=512 * 2**20):
        assert main(["eval", str(run), "--which", "last", *EVAL]) == 2
    assert "is a FIFO" in one_error_line(capsys.readouterr().err)
    restore()
    files.path("state").unlink()
    files.path("state").symlink_to("/dev/zero")
    assert re.search(r"state file .*last\.state\.pt is a character device", refusal())
    restore()
    with open(files.path("weights"), "r+b") as handle:
        handle.truncate(3 * 2**30)  # sparse: 3 GB long, almost nothing on disk
    assert f"is truncated or corrupt ({3 * 2**30} bytes, its record says {recorded})" in refusal()
    restore()
    files.path("meta").unlink()
    with open(files.path("meta"), "wb") as handle:
        handle.truncate(2**30)
    assert "larger than any checkpoint record" in refusal()
    files.path("meta").unlink()
    files.path("meta").symlink_to("/dev/zero")
    assert re.search(r"record file .*last\.json is a character device", refusal())
    restore()
    record = json.loads(sound["meta"])
    record["files"]["weights"]["bytes"] = "2108"
    files.path("meta").write_text(json.dumps(record))
    assert "lists no weights file with its size" in refusal()
    restore()
    model, _ = load_model(run, which="last")  # the sound files again: read as before
    assert encode_weights(model.state_dict()) == sound["weights"]


def test_weights_given_as_a_pipe_or_device_are_refused_unread(run, tmp_path):
    _, cfg = load_model(run)
    os.mkfifo(tmp_path / "pipe.safetensors")
    (tmp_path / "zero.pt").symlink_to("/dev/zero")
    for name, kind in (("pipe.safetensors", "a FIFO"), ("zero.pt", "a character device")):
        with bounded(memory=512 * 2**20), pytest.raises(CheckpointError, match=f"--weights .*{name} is {kind}"):
            load_weights(cfg, tmp_path / name)


def test_a_resume_refuses_such_checkpoint_files_too(run, capsys):
    """--resume reads the last checkpoint's files with the same checks as eval."""
    files = checkpoint_files(run, "last")
    state = files.path("state").read_bytes()
    files.path("state").unlink()
    files.path("state").symlink_to("/dev/zero")
    with bounded(memory=512 * 2**20):
        assert main(["train", "--resume", str(run)]) == 2
    assert "last.state.pt is a character device" in one_error_line(capsys.readouterr().err)
    files.path("state").unlink()
    files.path("state").write_bytes(state)
    tensors = load_file(str(files.path("weights")))
    tensors["stages.fc1.1.bias"][7] = float("nan")
    save_file(tensors, str(files.path("weights")))
    vouch(files)
    assert main(["train", "--resume", str(run)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "non-finite weights: tensor stages.fc1.1.bias has 1 NaN or inf value(s) of 16" in line


# ---- 16: a run read while it trains ----

def test_a_run_read_while_it_trains_is_never_called_corrupt(tmp_path):
    """Loading the last checkpoint in a loop while a training saves it every step: 72 of
    297 loads said "truncated or corrupt ... retrain" before. Every load must now
    succeed, with weights that are those its record vouches for."""
    raw = tiny_config(train={"epochs": 2, "checkpoint_every": 1, "log_every": 1000})
    model_from_config(config_from_dict(raw))  # imports done before the training starts
    config = write_config(tmp_path / "tiny.toml", raw)
    run_dir = tmp_path / "run"
    proc = launch("--config", config, "--out", run_dir, cwd=tmp_path)
    loads, failures, generations = 0, [], set()
    try:
        wait_for_checkpoint(proc, run_dir, lambda m: m["global_step"] >= 1)
        while proc.poll() is None:
            try:
                with warnings.catch_warnings():
                    # an interrupted-save warning may come when the trainer is paused between
                    # two renames: the load is still right (the previous generation)
                    warnings.simplefilter("ignore")
                    loaded = load_checkpoint(run_dir, which="last")
            except CheckpointError as exc:
                failures.append(str(exc))
                continue
            loads += 1
            generations.add(loaded.weights_sha256)
            weights_bytes = encode_weights(loaded.model.state_dict())
            assert hashlib.sha256(weights_bytes).hexdigest() == loaded.weights_sha256
        out, err = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert failures == []
    assert loads >= 10 and len(generations) >= 3, (loads, len(generations))  # reads met saves

