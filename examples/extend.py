"""Extending adrnet from your own module: a data set, a model, a loss term and an attack.

The four ``adrnet.register_*`` calls below run when this module is imported, so the same
file serves the command line and Python:

- command line, from this folder: ``adrnet train --import extend --config rings.toml``
  and ``adrnet eval --import extend RUN --attacks corners,pgd`` (a config may also name
  its modules under ``[plugins] modules = ["extend"]``);
- Python: ``import extend`` (or these calls in a notebook), then ``adrnet.train.train``
  with a config naming them, or with the objects themselves
  (``train(cfg, out, model=my_module)``).

``python examples/extend.py [--out DIR] [--epochs N]`` does all of it on a toy problem
(two rings in the unit square) in well under a minute on 2 CPU cores, and prints each
run's accuracies. Registrations use ``replace=True`` so that re-running the module in
one process (a notebook cell, this script and its own import) is not refused as a
duplicate name.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import tomli_w
from torch import nn

import adrnet
from adrnet.models import Classifier

EPS = 0.05
HERE = Path(__file__).resolve().parent


# 1. A data set: two noisy concentric rings in [0, 1]², made from a fixed seed (a real
#    loader would read files under ``root``, the config's data.root).
def load_rings(root):
    rng = np.random.default_rng(0)
    angle = rng.uniform(0, 2 * math.pi, 3000)
    label = rng.integers(0, 2, 3000)
    radius = np.where(label == 1, 0.35, 0.18) + rng.normal(0, 0.03, 3000)
    points = 0.5 + radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1)
    x = np.clip(points, 0, 1).astype(np.float32)
    return (x[:2500], label[:2500]), (x[2500:], label[2500:])


adrnet.register_dataset("rings", load_rings, shape=(2,), num_classes=2, val_size=300,
                        replace=True)


# 2. A model: any nn.Module fits in a Classifier by its stages; the "features" stage's
#    output is ADR's latent z.
def build_tanh_mlp(*, num_classes, in_shape, mean, std, latent=None, width: int = 32):
    features = nn.Sequential(nn.Flatten(1), nn.Linear(math.prod(in_shape), width), nn.Tanh(),
                             nn.Linear(width, width), nn.Tanh())
    return Classifier({"features": features, "logits": nn.Linear(width, num_classes)},
                      in_shape=in_shape, mean=mean, std=std, latent=latent or "features")


adrnet.register_model("tanh_mlp", build_tanh_mlp, replace=True)


# 3. A loss term, and a preset using it: adversarial logit pairing (Kannan et al., 2018),
#    the squared distance between clean and adversarial logits, on top of PGD-AT.
def logit_pairing(logits_clean, logits_adv):
    return (logits_clean.float() - logits_adv.float()).square().sum(1).mean()


adrnet.register_term("logit_pairing", logit_pairing, ("logits_clean", "logits_adv"), "alp",
                     replace=True)
adrnet.register_objective("pgd_alp", {"ce_adv": 1.0, "logit_pairing": 0.5}, replace=True)


# 4. An attack for `adrnet eval`: the best of the 2^d corners of the L∞ ball for 2-D
#    inputs (exhaustive, so it finds what PGD may miss on such a tiny input).
def corners(model, x, y, *, threat):
    best = x.clone()
    with torch.no_grad():
        for signs in torch.cartesian_prod(*[torch.tensor([-1.0, 1.0])] * x[0].numel()):
            candidate = threat.project(x + threat.eps * signs.to(x).view(1, *x.shape[1:]), x)
            fooled = model(candidate).argmax(1) != y
            best[fooled] = candidate[fooled]
    return best


def build_corners(threat):
    """The attack in ``threat``'s ball: ``attack(model, x, y) -> x_adv``."""
    return lambda model, x, y: corners(model, x, y, threat=threat)


adrnet.register_attack("corners", build_corners, replace=True,
                       description="every corner of the L∞ ball (2-D inputs)")


def config(epochs: int, objective: str = "pgd_alp") -> dict:
    return {
        "data": {"name": "rings"},
        "model": {"name": "tanh_mlp", "options": {"width": 32}},
        "attack": {"eps": EPS, "steps": 5, "step_size": EPS / 2},
        "objective": {"name": objective},
        "optim": {"name": "adam", "lr": 0.01},
        "schedule": {"name": "constant"},
        "train": {"epochs": epochs, "batch_size": 100, "progress": False, "num_threads": 1,
                  "log_every": 5},
        "eval": {"val_size": 300, "val_steps": 5, "batch_size": 500},
    }


def adrnet_command(*args, cwd: Path) -> None:
    """``adrnet ARGS`` in a fresh process, as a user would type it (from ``cwd``)."""
    subprocess.run([sys.executable, "-m", "adrnet", *map(str, args)], cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="where the runs go (default: a temporary folder)")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="adrnet_extend_"))
    out.mkdir(parents=True, exist_ok=True)
    from adrnet.config import config_from_dict
    from adrnet.data import load_splits
    from adrnet.eval import evaluate_model
    from adrnet.train import train

    # Python, by name: the registered data set, model and term in a config.
    train(config_from_dict(config(args.epochs)), out / "python")
    model, _ = adrnet.load_model(out / "python")
    x, y = load_splits("rings").test
    by_name = evaluate_model(model, x, y, attacks=["corners", "pgd"], eps=EPS, steps=10)

    # Python, by object: a module of your own, never registered; loading it back needs it.
    module = build_tanh_mlp(num_classes=2, in_shape=(2,), mean=(0.0,), std=(1.0,), width=16)
    train(config_from_dict(config(args.epochs, "adr_pgd")), out / "objects", model=module)
    fresh = build_tanh_mlp(num_classes=2, in_shape=(2,), mean=(0.0,), std=(1.0,), width=16)
    by_object = evaluate_model(adrnet.load_model(out / "objects", model=fresh)[0], x, y,
                         attacks=["corners", "pgd"], eps=EPS, steps=10)

    # The command line: the config names this module under [plugins]; eval imports it.
    toml = out / "rings.toml"
    toml.write_text(tomli_w.dumps({**config(args.epochs), "plugins": {"modules": ["extend"]}}))
    adrnet_command("train", "--config", toml, "--out", out / "cli", cwd=HERE)
    adrnet_command("eval", "--import", "extend", out / "cli", "--attacks", "corners,fgsm,pgd",
                   "--steps", "10", "--no-diagnostics", "--no-progress", cwd=HERE)
    from_cli = json.loads((out / "cli" / "eval.json").read_text())
    results = {"python": by_name.to_dict(), "objects": by_object.to_dict(), "cli": from_cli}
    for where, result in results.items():
        print(f"{where:8s} clean {result['clean_accuracy']:.3f}  "
              + "  ".join(f"{k} {v:.3f}" for k, v in result["attack_accuracy"].items())
              + f"  worst case {result['worst_case_accuracy']:.3f}")
    return {"out": out, **results}


if __name__ == "__main__":
    main()
