"""``adrnet train`` under ``torchrun --standalone --nproc_per_node=2`` on CPU (gloo).

Why: the data-parallel path of ADR training (Bui et al., ECCV 2020; method.md,
"Under data-parallel training") only matters if the real command uses it: the
loop must wrap the model in DDP, pass ``gather_detached`` to the objective, let
rank 0 alone write, and sum validation over ranks. These tests run the CLI as a
user would, on tiny data, and compare a 2-process run with a 1-process run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

WORLD = 2


def _train_cli(out: Path, config: Path, procs: int, *sets: str) -> Path:
    """``adrnet train`` under ``torchrun --standalone`` (procs > 1) or plain python."""
    _run_cli(out, config, procs, *sets)
    return out


def _run_cli(out: Path, config: Path, procs: int, *sets: str) -> str:
    """Like :func:`_train_cli`; returns what the command printed on stdout."""
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                 f"--nproc_per_node={procs}", "-m", "adrnet.cli"] if procs > 1
                else [sys.executable, "-m", "adrnet.cli"])
    command = [*launcher, "train", "--config", str(config), "--out", str(out),
               "--no-progress", "--set", "train.device='cpu'", *sets]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    done = subprocess.run(command, env={**env, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done.stdout


def _write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


TINY_CIFAR_WRN = """
[data]
name = "cifar10"
root = "{root}"
val_size = 4
[model]
name = "wrn"
options = {{ depth = 10, width = 1 }}
[attack]
eps = 0.03
steps = 2
step_size = 0.01
[objective]
name = "adr_pgd"
[train]
epochs = 2
batch_size = 4
[eval]
val_size = 4
val_steps = 2
"""


def test_torchrun_cli_train_with_batchnorm_writes_checkpoint(tmp_path, data_writers):
    """2-process ADR-PGD of a BatchNorm WideResNet on tiny CIFAR files, via the CLI."""
    data_writers.cifar(tmp_path / "data" / "cifar-10-batches-py")  # 20 train images
    config = _write_config(tmp_path / "tiny.toml",
                           TINY_CIFAR_WRN.format(root=tmp_path / "data"))
    run_dir = _train_cli(tmp_path / "run", config, WORLD)
    meta = json.loads((run_dir / "checkpoints" / "last.json").read_text())
    assert meta["world_size"] == WORLD and meta["epoch"] == 2
    assert (run_dir / "checkpoints" / "last.safetensors").stat().st_size > 0
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in epochs if r.get("kind") == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]  # written once, by rank 0 only
    assert epochs[-1]["val_examples"] == 4  # validation shards summed over the ranks
    from adrnet import load_model
    model, _ = load_model(run_dir, which="last")
    bn = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bn and all(torch.isfinite(m.running_var).all() for m in bn)


TOY_MLP = """
[data]
name = "moons"
train_subset = 96
[model]
name = "mlp"
[attack]
eps = 0.1
steps = 3
step_size = 0.05
random_start = false
[objective]
name = "adr_pgd"
[optim]
lr = 0.1
[train]
epochs = 2
batch_size = {batch}
[eval]
val_size = 16
val_steps = 2
"""


def _epoch_records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("kind") == "epoch"]


def test_torchrun_cli_train_equals_single_process_training(tmp_path):
    """With a deterministic attack, 2 processes of batch 16 train the same weights as
    one process of batch 32: the gathered ADR objective is the full-batch one. The
    logged epoch averages cover both ranks' examples, so they match too, and only
    rank 0 prints the closing lines."""
    from safetensors.torch import load_file
    weights, epochs, printed = [], [], []
    for procs, batch in ((WORLD, 16), (1, 32)):
        config = _write_config(tmp_path / f"toy{procs}.toml", TOY_MLP.format(batch=batch))
        printed.append(_run_cli(tmp_path / f"run{procs}", config, procs))
        weights.append(load_file(tmp_path / f"run{procs}" / "checkpoints" / "last.safetensors"))
        epochs.append(_epoch_records(tmp_path / f"run{procs}"))
    assert [text.count("done:") for text in printed] == [1, 1]
    timing = ("images_per_s", "time_s")
    assert [r["epoch"] for r in epochs[0]] == [r["epoch"] for r in epochs[1]] == [1, 2]
    for two, one in zip(*epochs):
        assert two.keys() == one.keys() and {"loss", "acc_adv", "acc_clean"} <= one.keys()
        for key in one.keys() - set(timing):
            close = isinstance(one[key], float) and not isinstance(one[key], bool)
            expected = pytest.approx(one[key], rel=1e-4, abs=1e-6) if close else one[key]
            assert two[key] == expected, key
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        torch.testing.assert_close(weights[0][name], weights[1][name], rtol=1e-4, atol=1e-5,
                                   msg=lambda text, name=name: f"{name}: {text}")
