"""Values a hostile user gives: step sizes too small to move a pixel, configs that are not
small regular files or that nest without end, values with no upper bound (seeds, threads,
learning rates, model widths, PGD steps), and signals during a long validation. Each ends
as one `error: ...` line with exit status 2 (or, for a signal, a prompt stop with a
resumable checkpoint), never as a traceback, an abort or a hang."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from adrnet.attacks import attack_settings
from adrnet.attacks.pgd import checking_each_step, pgd
from adrnet.attacks.threats import make_threat
from adrnet.cli import main
from adrnet.config import config_from_dict, load_config
from adrnet.config_values import MAX_ATTACK_STEPS
from adrnet.models.size import check_model_fits
from adrnet.errors import ConfigError
from adrnet.runs.checkpoint import checkpoint_files
from adrnet.train import TrainingInterrupted, train
from _train_helpers import (
    meta, records, same_tensors, tiny_config, wait_for_checkpoint, weights, without_timing,
    write_config,
)

EVAL = ["--attacks", "pgd", "--n", "20", "--no-diagnostics", "--no-progress"]


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def refused(capsys, *args) -> str:
    """The one error line of ``adrnet ARGS``, which must exit with status 2."""
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code == 2, err
    return one_error_line(err)


@pytest.fixture
def tiny_toml(tmp_path):
    return write_config(tmp_path / "tiny.toml", tiny_config(train={"epochs": 1}))


# ---- 11: a step size that cannot move an input by one grey level ----

def test_eval_step_size_too_small_to_move_a_grey_level_is_refused(tiny_toy_run, tmp_path, capsys):
    """--step-size 1e-30 reported 88.0% robust against 85.5% with the default step."""
    line = refused(capsys, "eval", tiny_toy_run, *EVAL, "--step-size", "1e-30",
                   "--out", tmp_path / "e.json")
    assert "--step-size" in line and "1/255" in line and "5 steps" in line
    # the same bound in L2 (a step of length s moves no pixel by more than s)
    line = refused(capsys, "eval", tiny_toy_run, *EVAL, "--norm", "l2", "--eps", "0.5",
                   "--step-size", "1e-4", "--out", tmp_path / "e.json")
    assert "--step-size" in line and "1/255" in line
    assert not (tmp_path / "e.json").exists()
    # a step size that can move a grey level in the whole attack is taken as given
    assert main(["eval", str(tiny_toy_run), *EVAL, "--step-size", "1e-3",
                 "--out", str(tmp_path / "e.json")]) == 0


def test_the_step_bound_is_relative_to_a_ball_smaller_than_a_grey_level():
    assert attack_settings("pgd", norm="linf", eps=1e-3, steps=10, step_size=1e-4).step_size == 1e-4
    with pytest.raises(ConfigError, match="less than eps = 0.001"):
        attack_settings("pgd", norm="linf", eps=1e-3, steps=10, step_size=1e-5)
    assert attack_settings("pgd", norm="linf", eps=0.0, steps=10, step_size=1e-30).steps == 10
    # the default 2.5 eps / steps always passes, also where steps x (a / steps) rounds down
    for steps in (1, 3, 7, 10, 200, MAX_ATTACK_STEPS):
        attack_settings("pgd", norm="linf", eps=1 / 255, steps=steps,
                        step_size=(1 / 255) / steps)


@pytest.mark.parametrize("override, key", [
    ("attack.step_size=1e-30", "'attack.step_size'"),
    ("eval.val_step_size=1e-30", "'eval.val_step_size'"),
    ("eval.test_step_size=1e-6", "'eval.test_step_size'"),
])
def test_config_step_sizes_below_a_grey_level_are_refused(tiny_toml, tmp_path, capsys,
                                                          override, key):
    line = refused(capsys, "train", "--config", tiny_toml, "--out", tmp_path / "run",
                   "--set", override)
    assert key in line and "1/255" in line and not (tmp_path / "run").exists()


# ---- 21: config files that are no small regular file; values nested without end ----

def test_a_fifo_config_is_refused_without_waiting_for_a_writer(tmp_path, capsys):
    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    line = refused(capsys, "train", "--config", fifo, "--out", tmp_path / "run")
    assert "FIFO" in line and "not a regular file" in line and "not found" not in line


def test_a_device_config_is_refused_without_reading_it(tmp_path, capsys):
    line = refused(capsys, "train", "--config", "/dev/zero", "--out", tmp_path / "run")
    assert "character device" in line and "not found" not in line


def test_a_huge_config_is_refused_by_its_size_unread(tmp_path, capsys):
    huge = tmp_path / "huge.toml"
    with open(huge, "wb") as handle:  # sparse: 2 GiB of zeros that take no disk
        handle.truncate(2 * 2**30)
    started = time.monotonic()
    line = refused(capsys, "train", "--config", huge, "--out", tmp_path / "run")
    assert "2.0 GiB" in line and "1.0 MiB" in line
    assert time.monotonic() - started < 30  # reading it whole took 4.4 GB and much longer
    missing = refused(capsys, "train", "--config", tmp_path / "nope.toml", "--out", tmp_path / "r")
    assert "not found" in missing


@pytest.mark.parametrize("depth, needle", [(20, "nested more than 16 levels"),
                                           (600, "too deeply"), (100_000, "too deeply")])
def test_deeply_nested_override_values(tmp_path, tiny_toml, capsys, depth, needle):
    value = "{a=" + "[" * depth + "]" * depth + "}"
    line = refused(capsys, "train", "--config", tiny_toml, "--out", tmp_path / "run",
                   "--set", f"model.options={value}")
    assert needle in line


def test_a_deeply_nested_config_file(tmp_path, capsys):
    deep = tmp_path / "deep.toml"
    deep.write_text("[model]\noptions = " + "{a=" * 50_000 + "}" * 50_000 + "\n")
    line = refused(capsys, "train", "--config", deep, "--out", tmp_path / "run")
    assert "deep.toml nests lists or tables too deeply" in line


def test_nesting_is_checked_in_records_too():
    raw = tiny_config(model={"options": {"hidden": [16], "x": [[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]}})
    with pytest.raises(ConfigError, match="nested more than 16 levels"):
        config_from_dict(raw)


# ---- 22: values with no upper bound ----

@pytest.mark.parametrize("overrides, needle", [
    (["data.split_seed=-5"], "'data.split_seed' (data set 'blobs', generated by numpy) must be "
                             "a whole number from 0 to 2**64 - 1"),
    (["data.split_seed=100000000000000000000000"], "'data.split_seed'"),
    (["train.seed=100000000000000000000000"], "'train.seed' must be a whole number from -2**63"),
    (["train.num_threads=2147483648"], "'train.num_threads' must be <= 1024"),
    (["optim.lr=1e300"], "'optim.lr' must be <= 1000"),
    (["optim.weight_decay=1e300"], "'optim.weight_decay' must be <= 1000"),
    (["schedule.milestones=[0.5]", "schedule.lr_factors=[1e300]"], "'schedule.lr_factors[0]'"),
    (["model.options={hidden=[1000000000000]}"], "layer stages.fc1.1.weight of shape "
                                                 "1000000000000 x 2"),
    (["model.options={hidden=[16, 1000000, 1000000]}"], "of shape 1000000 x 1000000"),
    (["model.options={hidden=[100000000000000000000]}"], "larger than any memory"),
    (["attack.steps=100000000000000000000"], "'attack.steps' must be <= 10000"),
    (["eval.val_steps=10001"], "'eval.val_steps' must be <= 10000"),
    (["eval.test_steps=100000000000000000000"], "'eval.test_steps' must be <= 10000"),
], ids=lambda v: v[-1].split("=")[0] if isinstance(v, list) else None)
def test_values_beyond_their_bound_are_one_error_line(tiny_toml, tmp_path, capsys, overrides,
                                                      needle):
    line = refused(capsys, "train", "--config", tiny_toml, "--out", tmp_path / "run",
                   "--set", *overrides)
    assert needle in line and not (tmp_path / "run").exists()


def test_libgomp_never_sees_a_hundred_thousand_threads(tiny_toml, tmp_path):
    """train.num_threads=100000 made libgomp abort the process with no error line."""
    result = subprocess.run([sys.executable, "-m", "adrnet.cli", "train", "--config", tiny_toml,
                             "--out", tmp_path / "run", "--set", "train.num_threads=100000"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "'train.num_threads' must be <= 1024" in \
        one_error_line(result.stderr)


def test_seeds_that_worked_still_work():
    """The bounds are what torch / numpy accept: a negative seed on image data stays valid."""
    cfg = load_config(None, ["train.seed=-5", "data.split_seed=-5", f"train.seed={2**64 - 1}"])
    assert cfg.train.seed == 2**64 - 1 and cfg.data.split_seed == -5


def test_model_size_is_checked_against_memory_without_building_it():
    cfg = config_from_dict(tiny_config(model={"options": {"hidden": [1000, 1000]}}))
    before = torch.get_rng_state()
    check_model_fits(cfg, memory=10**9)  # 1M + 2k + 3k parameters: 4 MB
    with pytest.raises(ConfigError, match=r"stages.fc2.0.weight of shape 1000 x 1000 = 1000000 "
                                          r"parameters \(3.8 MiB"):
        check_model_fits(cfg, memory=2 * 10**6)
    with pytest.raises(ConfigError, match="would hold 1007007 parameters"):  # and 4 buffers
        check_model_fits(cfg, memory=4_010_000)  # each layer fits, all of them do not
    assert torch.equal(before, torch.get_rng_state())  # no random draw was taken


def test_eval_seed_beyond_what_torch_and_numpy_accept(tiny_toy_run, tmp_path, capsys):
    for seed in ("100000000000000000000000", "-1", str(2**32)):
        line = refused(capsys, "eval", tiny_toy_run, *EVAL, "--seed", seed,
                       "--out", tmp_path / "e.json")
        assert "--seed must be a whole number from 0 to 2**32 - 1" in line


@pytest.mark.parametrize("section, key, value, needle", [
    ("model", "options", {"hidden": [10**12]}, "of shape 1000000000000 x 2"),
    ("train", "num_threads", 100000, "'train.num_threads' must be <= 1024"),
    ("optim", "lr", 1e300, "'optim.lr' must be <= 1000"),
    ("train", "seed", 10**23, "'train.seed'"),
])
def test_a_checkpoint_record_with_such_values_is_refused(tiny_toy_run, tmp_path, capsys,
                                                         section, key, value, needle):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(tiny_toy_run, run)
    path = checkpoint_files(run, "best").path("meta")  # the JSON record carries no checksum
    record = json.loads(path.read_text())
    record["config"][section][key] = value
    path.write_text(json.dumps(record))
    line = refused(capsys, "eval", run, *EVAL, "--force")
    assert "records a config this adrnet cannot use" in line and needle in line


def test_eval_steps_beyond_the_bound_are_refused_at_once(tiny_toy_run, tmp_path, capsys):
    """--steps 10**20 ran (and could only be killed) instead of being refused."""
    line = refused(capsys, "eval", tiny_toy_run, *EVAL, "--steps", "100000000000000000000",
                   "--out", tmp_path / "e.json")
    assert "steps must be at most 10000 (--steps)" in line


# ---- 17: signals during a long validation ----

def test_a_step_check_changes_no_number_and_can_stop_an_attack(tiny_trained_model):
    model, x, y = tiny_trained_model
    threat = make_threat("linf", 0.1)

    def attack():
        torch.manual_seed(3)
        return pgd(model, x, y, threat=threat, steps=7, step_size=0.02)
    plain, calls = attack(), []
    with checking_each_step(lambda: calls.append(1)):
        checked = attack()
    assert torch.equal(plain, checked) and len(calls) == 7

    def stop():
        calls.append(1)
        if len(calls) > 3:
            raise KeyboardInterrupt
    calls.clear()
    with checking_each_step(stop), pytest.raises(KeyboardInterrupt):
        attack()
    assert len(calls) == 4
    assert torch.equal(attack(), plain)  # the hook is gone after its block


LONG_VALIDATION = tiny_config(
    data={"train_subset": 64, "val_size": 2000}, model={"options": {"hidden": [256, 256]}},
    train={"epochs": 1, "checkpoint_every": 1},
    eval={"val_size": 0, "val_steps": MAX_ATTACK_STEPS, "batch_size": 2000})


def test_two_ctrl_c_during_a_long_validation_stop_it_at_once_and_save(tmp_path):
    """PGD-10000 on 2000 examples (minutes): two SIGINTs stop it within seconds, and the
    checkpoint resumes with that validation redone."""
    config = write_config(tmp_path / "long.toml", LONG_VALIDATION)
    proc = subprocess.Popen([sys.executable, "-m", "adrnet.cli", "train", "--config", config,
                             "--out", "run"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for_checkpoint(proc, tmp_path / "run", lambda m: m["global_step"] >= 1)
        time.sleep(1.5)  # the second (last) step, then well into the validation
        assert proc.poll() is None
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:  # it did not stop: leave no process behind
            proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + signal.SIGINT, err
    assert took < 10, took
    assert "stopped by SIGINT during the validation of epoch 1" in err and "Traceback" not in err
    assert "adrnet train --resume run" in err
    saved = meta(tmp_path / "run")
    assert (saved["epoch"], saved["step"], saved["global_step"]) == (1, 0, 2)
    assert saved["running"]["examples"] == 64 and records(tmp_path / "run") == []
    resumed = subprocess.run([sys.executable, "-m", "adrnet.cli", "train", "--resume", "run",
                              "--set", "eval.val_steps=3"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "validating epoch 1 again" in resumed.stdout
    (epoch,) = records(tmp_path / "run")
    assert epoch["val_examples"] == 2000 and epoch["is_best"] and epoch["global_step"] == 2


@pytest.mark.parametrize("stopped_epoch", [1, 2])
def test_a_validation_stopped_by_a_signal_resumes_bit_identical(tmp_path, monkeypatch,
                                                                stopped_epoch):
    """SIGTERM during the validation of epoch 1 (then training goes on) or of the last
    epoch: the resumed run writes what the uninterrupted one wrote."""
    cfg = config_from_dict(tiny_config(train={"epochs": 2}))
    train(cfg, tmp_path / "reference")
    from adrnet.train import loop
    real, calls = loop.attack_correct, []

    def signalling(*args, **kwargs):
        calls.append(1)
        if len(calls) == stopped_epoch:
            signal.raise_signal(signal.SIGTERM)
        return real(*args, **kwargs)
    monkeypatch.setattr(loop, "attack_correct", signalling)
    with pytest.raises(TrainingInterrupted,
                       match=f"SIGTERM during the validation of epoch {stopped_epoch}"):
        train(cfg, tmp_path / "run")
    monkeypatch.undo()
    saved = meta(tmp_path / "run")
    assert (saved["epoch"], saved["step"]) == (stopped_epoch, 0) and saved["running"]
    assert len(records(tmp_path / "run")) == stopped_epoch - 1
    train(cfg, tmp_path / "run", resume=True)
    for which in ("last", "best"):
        assert same_tensors(weights(tmp_path / "run", which),
                            weights(tmp_path / "reference", which)), which
    for kind in ("epoch", "step"):
        assert without_timing(records(tmp_path / "run", kind)) == \
            without_timing(records(tmp_path / "reference", kind))
    assert meta(tmp_path / "run")["running"] == {}
