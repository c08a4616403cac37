"""Fingerprints of short deterministic runs, to show that a refactor changed nothing.

Trains, through the ``adrnet`` command (so the check does not depend on where
anything lives inside the package), a few short runs: every objective on the toy
blobs with the MLP, and pgd_at, trades and adr_pgd for 30 MNIST steps with SmallCNN
(bf16 + channels_last, the quick presets' path). For each it records the SHA-256 of
the final weights file, and for one MNIST run the SHA-256 of ``adrnet eval``'s
output with its timing fields removed. Same CPU, same torch: the fingerprints must
be identical bit for bit before and after a change that claims to change nothing.

Usage: python benchmarks/golden.py OUT.json        # record
       python benchmarks/golden.py OUT.json --check BEFORE.json
Takes about 2 minutes on one core; needs MNIST (`adrnet data fetch mnist`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOY = """# the blobs (3 classes, 2-D) with a small MLP: about a second a run
[data]
name = "blobs"
train_subset = 256
[model]
name = "mlp"
options = {hidden = [16, 16]}
[attack]
eps = 0.05
steps = 3
step_size = 0.02
[optim]
name = "adam"
lr = 0.02
[schedule]
name = "constant"
[train]
epochs = 2
batch_size = 32
num_threads = 1
[eval]
val_size = 200
val_steps = 3
batch_size = 200
"""
TOY_RUNS = {f"toy_{name}": [f"objective.name='{name}'"]
            for name in ("pgd_at", "trades", "adr_pgd", "adr_trades", "mart", "adr_mart")}
TOY_RUNS["toy_adr_pgd_rms_warmup"] = ["objective.name='adr_pgd'", "objective.latent_norm='rms'",
                                      "objective.adr_warmup_epochs=1.5"]
TOY_RUNS["toy_trades_awp"] = ["objective.name='trades'", "optim.awp={gamma=0.01,warmup_epochs=1}"]
MNIST = {  # 30 steps of each quick preset's own path (SmallCNN, bf16, channels_last)
    "pgd_at": "configs/mnist_quick_pgd_at.toml",
    "trades": "configs/mnist_quick_trades.toml",
    "adr_pgd": "configs/mnist_quick_adr.toml",
}
MNIST_SHORT = ["data.train_subset=960", "train.epochs=1", "train.batch_size=32",
               "train.num_threads=1", "eval.val_size=200", "eval.val_steps=3"]
VARYING_KEYS = {"checkpoint", "created", "seconds", "images_per_s", "time_s", "started", "finished",
                "wall_seconds", "attack_seconds", "attack_images_per_s"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def adrnet(*args: str) -> None:
    subprocess.run([str(Path(sys.executable).with_name("adrnet")), *args], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)


def without_timing(value):
    """The eval record without the fields that differ run to run (clock, temporary path)."""
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in VARYING_KEYS}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def fingerprints(work: Path) -> dict:
    found = {}
    (work / "toy.toml").write_text(TOY)
    runs = [(label, work / "toy.toml", overrides) for label, overrides in TOY_RUNS.items()]
    runs += [(f"mnist_{name}", preset, MNIST_SHORT) for name, preset in MNIST.items()]
    for label, preset, overrides in runs:
        run_dir = work / label
        adrnet("train", "--config", str(preset), "--out", str(run_dir), "--no-progress",
               "--set", *overrides)
        found[label] = sha256(run_dir / "checkpoints" / "last.safetensors")
        print(label, found[label], flush=True)
    run_dir = work / "mnist_adr_pgd"
    adrnet("eval", str(run_dir), "--attacks", "fgsm,pgd,cw", "--n", "200", "--steps", "10",
           "--no-diagnostics", "--no-progress", "--out", str(work / "eval.json"))
    record = without_timing(json.loads((work / "eval.json").read_text()))
    found["eval_mnist_adr_pgd"] = hashlib.sha256(
        json.dumps(record, sort_keys=True).encode()).hexdigest()
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="where to write the fingerprints (JSON)")
    parser.add_argument("--check", metavar="BEFORE.json", help="compare with earlier fingerprints")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        found = fingerprints(Path(tmp))
    Path(args.out).write_text(json.dumps(found, indent=1) + "\n")
    if not args.check:
        return 0
    before = json.loads(Path(args.check).read_text())
    changed = sorted(k for k in before.keys() | found.keys() if before.get(k) != found.get(k))
    print("identical" if not changed else f"changed: {', '.join(changed)}")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
