"""Tiny training configs and run-directory readers shared by the training/CLI tests."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomli_w
from safetensors.torch import load_file

from adrnet.runs.checkpoint import checkpoint_files

# blobs (3 classes, 2-D features in [0, 1]) with a small MLP: a whole run takes ~1 s.
TINY = {
    "data": {"name": "blobs", "train_subset": 256},
    "model": {"name": "mlp", "options": {"hidden": [16, 16]}},
    "attack": {"eps": 0.05, "steps": 3, "step_size": 0.02},
    "objective": {"name": "adr_pgd"},
    "optim": {"name": "adam", "lr": 0.02},
    "schedule": {"name": "constant"},
    "train": {"epochs": 3, "batch_size": 32, "num_threads": 1, "progress": False,
              "log_every": 4},
    "eval": {"val_size": 200, "val_steps": 3, "batch_size": 200},
}


def tiny_config(**sections):
    """TINY with some sections' keys replaced: tiny_config(train={"epochs": 2})."""
    raw = {name: dict(values) for name, values in TINY.items()}
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return raw


def write_config(path: Path, raw: dict) -> Path:
    path.write_text(tomli_w.dumps(raw))
    return path


def weights(run_dir: Path, which: str = "last") -> dict:
    return load_file(str(Path(run_dir) / "checkpoints" / f"{which}.safetensors"))


def meta(run_dir: Path, which: str = "last") -> dict:
    return json.loads((Path(run_dir) / "checkpoints" / f"{which}.json").read_text())


def records(run_dir: Path, kind: str = "epoch") -> list[dict]:
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and a[k].equal(b[k]) for k in a)


TIMING_KEYS = ("images_per_s", "time_s")


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


@pytest.fixture
def tiny_mnist(tmp_path, data_writers):
    """A directory with a small MNIST in IDX format (conftest's writer): 5100 train
    images (the default validation split takes 5000) and 50 test images."""
    root = tmp_path / "tiny_mnist"
    data_writers.mnist_idx(root, n_train=5100, n_test=50, gz=False)
    return root


def launch(*args, cwd):
    return subprocess.Popen([sys.executable, "-m", "adrnet.cli", "train", *map(str, args)],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(proc, run_dir, accept, timeout=180.0):
    """Poll last.json until ``accept(meta)``; fail if the process ends first."""
    path = checkpoint_files(run_dir, "last").path("meta")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"training ended (rc {proc.returncode}) before the checkpoint: {err[-2000:]}")
        try:
            if accept(json.loads(path.read_text())):
                return
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        time.sleep(0.002)
    proc.kill()
    pytest.fail("no such checkpoint appeared in time")
