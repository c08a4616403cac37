"""Your data, your model: an .npz file and an image folder, a model named by import path.

What it does (docs/own_data.md explains each step), with the commands a user types:

1. writes ``shapes.npz`` (x_train, y_train, x_test, y_test: 8x8 RGB images, uint8, NHWC)
   and trains ADR (``adr_pgd``) on it with the model ``own_data_models:build`` (a plain
   ``nn.Module`` factory in ``examples/own_data_models.py``)::

       adrnet train --config npz.toml --out runs/npz
       adrnet eval runs/npz --import own_data_models

2. writes an image folder ``images/{train,test}/{dark,light}/*.png`` and does the same::

       adrnet train --config folder.toml --out runs/folder
       adrnet eval --model own_data_models:build --weights runs/folder/checkpoints/last.safetensors \\
           --data folder --data-path images --eps 8/255

3. trains the same module with plain PyTorch (outside adrnet), saves its state dict, and
   evaluates it with the same attacks (identity normalisation: it saw raw [0, 1] pixels)::

       adrnet eval --model own_data_models:build --weights plain/model.pt --data npz \\
           --data-path shapes.npz --eps 8/255 --set data.mean=[0] data.std=[1]

``python examples/own_data.py [--out DIR] [--epochs N]`` runs all three in a few seconds
on a CPU (the commands run in this process, through ``adrnet.cli.main``) and prints each
evaluation's accuracies. Every eval.json can go into ``adrnet report``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import tomli_w
import torch

HERE = Path(__file__).resolve().parent
EPS = "8/255"


def write_npz(path: Path, seed: int = 0) -> Path:
    """Three classes of 8x8 RGB images: class k is brightest in channel k (plus noise)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, 400)
    x = rng.normal(0.4, 0.2, (400, 8, 8, 3))
    x[np.arange(400), :, :, y] += 0.15
    x = (np.clip(x, 0, 1) * 255).astype(np.uint8)  # NHWC uint8: the rule reads it as channels-last
    np.savez(path, x_train=x[:300], y_train=y[:300], x_test=x[300:], y_test=y[300:])
    return path


def write_folder(root: Path, seed: int = 0) -> Path:
    """Two classes of 8x8 grey PNGs, ``dark`` and ``light``, in train/ and test/."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    for split, count in (("train", 60), ("test", 20)):
        for label, (name, level) in enumerate((("dark", 0.45), ("light", 0.55))):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = np.clip(rng.normal(level, 0.2, (8, 8)), 0, 1)
                Image.fromarray((pixels * 255).astype(np.uint8), "L").save(folder / f"{i:03d}.png")
    return root


def config(data: dict, epochs: int) -> dict:
    return {
        "data": data,
        "model": {"name": "own_data_models:build", "latent": "embedding", "options": {"width": 8}},
        "attack": {"eps": 8 / 255, "steps": 3, "step_size": 4 / 255},
        "objective": {"name": "adr_pgd"},
        "optim": {"name": "adam", "lr": 0.02},
        "schedule": {"name": "constant"},
        "train": {"epochs": epochs, "batch_size": 50, "progress": False, "num_threads": 1},
        "eval": {"val_size": 30, "val_steps": 3, "batch_size": 200},
    }


def adrnet(*args) -> None:
    """``adrnet ARGS``, as typed on the command line (run in this process)."""
    from adrnet.cli import main
    code = main([str(a) for a in args])
    if code:
        raise SystemExit(f"adrnet {' '.join(map(str, args))} failed with status {code}")


def train_outside_adrnet(npz: Path, out: Path) -> Path:
    """The same module trained with plain PyTorch (clean training, a few hundred steps)."""
    from own_data_models import build
    arrays = np.load(npz, allow_pickle=False)
    x = torch.from_numpy(arrays["x_train"].transpose(0, 3, 1, 2).astype(np.float32) / 255)
    y = torch.from_numpy(arrays["y_train"]).long()
    torch.manual_seed(0)
    model = build(num_classes=3, in_shape=(3, 8, 8), width=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for step in range(120):
        batch = torch.randint(0, len(y), (50,))
        loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "model.pt")
    return out / "model.pt"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="where everything goes (default: a temporary folder)")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)
    out = (args.out or Path(tempfile.mkdtemp(prefix="adrnet_own_data_"))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if str(HERE) not in sys.path:  # `own_data_models` is found as from this folder
        sys.path.insert(0, str(HERE))
    quick = ("--steps", "5", "--no-progress", "--no-diagnostics")

    # 1. an .npz file; the run's eval imports the model's module because we say so
    npz = write_npz(out / "shapes.npz")
    (out / "npz.toml").write_text(tomli_w.dumps(config({"name": "npz", "path": str(npz)}, args.epochs)))
    adrnet("train", "--config", out / "npz.toml", "--out", out / "runs" / "npz")
    adrnet("eval", "--import", "own_data_models", out / "runs" / "npz", "--which", "last", *quick)

    # 2. an image folder; evaluated from its weights file with --model
    images = write_folder(out / "images")
    (out / "folder.toml").write_text(tomli_w.dumps(config({"name": "folder", "path": str(images)},
                                                          args.epochs)))
    adrnet("train", "--config", out / "folder.toml", "--out", out / "runs" / "folder")
    weights = out / "runs" / "folder" / "checkpoints" / "last.safetensors"
    adrnet("eval", "--model", "own_data_models:build", "--weights", weights, "--data", "folder",
           "--data-path", images, "--eps", EPS, "--set", "model.latent=embedding",
           "--out", out / "runs" / "folder" / "eval.json", *quick)

    # 3. a model trained outside adrnet, evaluated by the same attacks
    plain = train_outside_adrnet(npz, out / "plain")
    adrnet("eval", "--model", "own_data_models:build", "--weights", plain, "--data", "npz",
           "--data-path", npz, "--eps", EPS, "--set", "data.mean=[0]", "data.std=[1]", *quick)

    results = {where: json.loads(path.read_text()) for where, path in (
        ("npz", out / "runs" / "npz" / "eval.json"),
        ("folder", out / "runs" / "folder" / "eval.json"),
        ("plain", out / "plain" / "eval.json"))}
    for where, result in results.items():
        print(f"{where:7s} clean {result['clean_accuracy']:.3f}  "
              + "  ".join(f"{k} {v:.3f}" for k, v in result["attack_accuracy"].items())
              + f"  worst case {result['worst_case_accuracy']:.3f}")
    return {"out": out, **results}


if __name__ == "__main__":
    main()
