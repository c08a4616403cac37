"""PGD-AT and ADR on 2-D moons, side by side: what ADR's compactness looks like.

Trains two small MLPs with the library's own engine (``adrnet.train.train``) on the
moons toy set under an L∞ threat model, with the same seed, data and budget; one with
PGD-AT (Madry et al., 2018), one with ADR-PGD (Bui et al., ECCV 2020: all five ADR
weights 1, with the stabiliser the presets use). Then it draws, for each:

- the decision regions on [0, 1]², the test points, and the L∞ ε-balls (squares) of a
  few of them: a ball crossed by the boundary holds an adversarial example;
- the latent space z (the last hidden layer) projected on its first two principal
  components, clean points as dots and their PGD examples as crosses, coloured by
  class: ADR's compactness terms pull each cross onto its dot and onto its class.

Usage: python examples/toy.py [--out docs/images/toy.png] [--epochs 30]
About a minute on 2 CPU cores; the README's picture is made by this command.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
from pathlib import Path

import torch

from adrnet.attacks import Linf, pgd
from adrnet.config import config_from_dict
from adrnet.data import load_splits
from adrnet import load_model
from adrnet.train import train

EPS = 0.08
OBJECTIVES = {"PGD-AT": {"name": "pgd_at"},
              "ADR-PGD": {"name": "adr_pgd", "latent_norm": "rms"}}


def toy_config(objective: dict, epochs: int) -> dict:
    return {
        "data": {"name": "moons"},
        "model": {"name": "mlp", "options": {"hidden": [64, 64, 16]}},
        "attack": {"eps": EPS, "steps": 10, "step_size": EPS / 4},
        "objective": objective,
        "optim": {"name": "adam", "lr": 0.01},
        "schedule": {"name": "cosine"},
        "train": {"epochs": epochs, "batch_size": 128, "progress": False, "num_threads": 2},
        "eval": {"val_size": 500, "val_steps": 10, "batch_size": 500},
    }


def train_both(epochs: int, work: Path) -> dict:
    """{label: trained model (best on validation)} for PGD-AT and ADR-PGD."""
    models = {}
    for label, objective in OBJECTIVES.items():
        run_dir = work / label.lower()
        train(config_from_dict(toy_config(objective, epochs)), run_dir)
        models[label] = load_model(run_dir, which="best")[0].eval()
    return models


def latent_projection(model, x, x_adv):
    """z of clean and adversarial points on the clean latents' first two principal axes."""
    with torch.no_grad():
        z, z_adv = model(x, return_latent=True)[1], model(x_adv, return_latent=True)[1]
    mean = z.mean(0)
    _, _, v = torch.linalg.svd(z - mean, full_matrices=False)
    return (z - mean) @ v[:2].T, (z_adv - mean) @ v[:2].T


def draw(models: dict, x, y, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    grid = torch.stack(torch.meshgrid(torch.linspace(0, 1, 200), torch.linspace(0, 1, 200),
                                      indexing="xy"), -1).reshape(-1, 2)
    attack = functools.partial(pgd, threat=Linf(EPS), steps=20, step_size=EPS / 8)
    fig, axes = plt.subplots(2, len(models), figsize=(5 * len(models), 9.5))
    balls = torch.arange(0, len(y), len(y) // 24)[:24]
    colours = plt.get_cmap("coolwarm")
    for column, (label, model) in enumerate(models.items()):
        torch.manual_seed(0)
        x_adv = attack(model, x, y)
        with torch.no_grad():
            region = model(grid).argmax(1).reshape(200, 200)
            robust = (model(x_adv).argmax(1) == y).float().mean().item()
            clean = (model(x).argmax(1) == y).float().mean().item()
        top = axes[0, column]
        top.contourf(torch.linspace(0, 1, 200), torch.linspace(0, 1, 200), region, alpha=0.25,
                     cmap=colours, levels=[-0.5, 0.5, 1.5])
        top.scatter(x[:, 0], x[:, 1], c=y, cmap=colours, s=4)
        for i in balls.tolist():
            top.add_patch(Rectangle((x[i, 0] - EPS, x[i, 1] - EPS), 2 * EPS, 2 * EPS, fill=False, lw=0.8))
        top.set(xlim=(0, 1), ylim=(0, 1), aspect="equal",
                title=f"{label}: clean {clean:.1%}, PGD-20 {robust:.1%} (ε = {EPS})")
        z, z_adv = latent_projection(model, x, x_adv)
        bottom = axes[1, column]
        bottom.scatter(z[:, 0], z[:, 1], c=y, cmap=colours, s=6, label="clean")
        bottom.scatter(z_adv[:, 0], z_adv[:, 1], c=y, cmap=colours, s=10, marker="x", lw=0.5,
                       label="PGD-20")
        bottom.set(title=f"{label}: latent z (first two principal components)")
        bottom.legend(loc="best", fontsize=8)
    fig.suptitle("Moons, 2 classes; squares: L∞ ε-balls of test points; "
                 "bottom: dots clean, crosses adversarial")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "images" / "toy.png"))
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        models = train_both(args.epochs, Path(work))
    x, y = load_splits("moons").test
    draw(models, x[:600], y[:600], Path(args.out))
    print(f"figure: {args.out}")
    return Path(args.out)


if __name__ == "__main__":
    main()
