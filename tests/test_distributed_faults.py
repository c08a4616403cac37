"""Faults that only a multi-process run shows: real ``torchrun`` groups (gloo, CPU).

Why: under torchrun every rank reads the data itself and computes its own step numbers.
A rank that reads other files must stop the run on every rank with one line naming it
(not a gloo "collective mismatch" abort, nor a run that silently mixes two data sets),
and the step records must describe the global batch, as one process's records do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from adrnet.config import config_from_dict
from adrnet.train import train
from _train_helpers import records, write_config

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]

# A script torchrun starts on each rank: the CLI, with the data root this rank's "node" has.
PER_RANK_ROOT = """
import os, sys
from adrnet.cli import main
root = sys.argv[1 + int(os.environ["RANK"])]
sys.exit(main([*sys.argv[3:], "--set", f"data.root={root!r}"]))
"""


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    return subprocess.run([*TORCHRUN, *args], env={**env, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=240)


def test_a_rank_reading_other_data_stops_every_rank_with_one_line(tmp_path, data_writers):
    # two "nodes" whose data.root hold MNIST files of the same size but other images:
    # without the check this trains, silently mixing the two data sets
    for node, seed in (("node0", 0), ("node1", 1)):
        data_writers.mnist_idx(tmp_path / node / "MNIST" / "raw", n_train=24, n_test=4, seed=seed)
    config = write_config(tmp_path / "c.toml", {
        "data": {"name": "mnist", "val_size": 4},
        "model": {"name": "mlp", "options": {"hidden": [8]}},
        "attack": {"eps": 0.1, "steps": 1, "step_size": 0.1},
        "objective": {"name": "adr_pgd"},
        "train": {"epochs": 1, "batch_size": 4, "device": "cpu", "progress": False},
        "eval": {"val_size": 4, "val_steps": 1}})
    script = tmp_path / "per_rank_root.py"
    script.write_text(PER_RANK_ROOT)
    done = _torchrun(str(script), str(tmp_path / "node0"), str(tmp_path / "node1"),
                     "train", "--config", str(config), "--out", str(tmp_path / "run"))
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-3000:]
    lines = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 2, output[-3000:]  # one line from each rank, the same line
    assert lines[0] == lines[1]
    assert lines[0].startswith("error: rank 1 read other data than rank 0 (rank 0: 20 "
                               "training, 4 validation examples, SHA-256 "), lines[0]
    assert "data.root" in lines[0]
    assert "collective mismatch" not in output.lower()
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing trained


MOONS_ADR = {
    "data": {"name": "moons", "train_subset": 96},
    "model": {"name": "mlp"},
    "attack": {"eps": 0.1, "steps": 3, "step_size": 0.05, "random_start": False},
    "objective": {"name": "adr_pgd"},
    "optim": {"lr": 0.1},
    "train": {"epochs": 1, "batch_size": 32, "device": "cpu", "progress": False,
              "log_every": 1},
    "eval": {"val_size": 16, "val_steps": 2},
}


def test_step_records_of_two_processes_are_the_global_batch(tmp_path, torch_one_thread):
    # 2 processes of batch 16 take the steps 1 process of batch 32 takes (a deterministic
    # attack; tests/test_distributed_cli.py checks the weights): every step record must
    # hold that step's numbers, not rank 0's half of the batch
    two = {**MOONS_ADR, "train": {**MOONS_ADR["train"], "batch_size": 16}}
    config = write_config(tmp_path / "two.toml", two)
    done = _torchrun("-m", "adrnet.cli", "train", "--config", str(config),
                     "--out", str(tmp_path / "two"))
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    train(config_from_dict(MOONS_ADR), tmp_path / "one")
    steps_two, steps_one = records(tmp_path / "two", "step"), records(tmp_path / "one", "step")
    assert [r["global_step"] for r in steps_two] == [r["global_step"] for r in steps_one] == [1, 2, 3]
    for two_record, one_record in zip(steps_two, steps_one):
        assert two_record.keys() == one_record.keys()
        assert {"loss", "acc_clean", "acc_adv"} <= one_record.keys()
        for key, value in one_record.items():
            close = isinstance(value, float)
            assert two_record[key] == (pytest.approx(value, rel=1e-5, abs=1e-6) if close
                                       else value), key
    # the file holds each record once (rank 0 wrote it)
    lines = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert sum(json.loads(line)["kind"] == "step" for line in lines) == 3
