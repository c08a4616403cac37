"""Does ADR-PGD stay stable under Adam? The measurement behind the quick presets' weights.

ADR's compactness terms pull the adversarial latent z' towards a *detached* clean
latent sg(z). Their gradient moves z' and, through the shared weights, z with it, so
for a linearised network the update hardly changes |z − z'| but keeps shifting the
features in one direction. With SGD (lr 0.01, the paper's setting) that drift is
tiny next to the cross-entropy gradient; Adam rescales every parameter's step to
about lr, so on SmallCNN whose last layer starts at zero (no cross-entropy gradient
reaches the convolutions at first) the drift dominates and the latent scale blows up
(local compactness in the hundreds, accuracy back to chance).

This script trains SmallCNN on the first steps of MNIST (ε warm-up to 0.3 over 500
steps, PGD-10, bf16 + channels_last as in the quick preset) for several
(optimiser, compactness weight) pairs and prints, every 20 steps, the adversarial
cross-entropy, local compactness and the adversarial batch accuracy, and at the end
the largest local compactness seen: the divergence shows as a value far above 1.

Usage: python benchmarks/optimizer_stability.py [--steps 200]
Needs MNIST (`adrnet data fetch mnist`). Results are written to docs/optimizer_stability.json.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import torch

from adrnet.attacks import Linf, pgd
from adrnet.data import DATASETS, load_splits
from adrnet.models import build_model
from adrnet.objectives import make_objective

SETTINGS = {
    "sgd lr 0.01, weights 1 (paper)": ("sgd", 0.01, 1.0),
    "adam lr 1e-3, weights 1": ("adam", 1e-3, 1.0),
    "adam lr 2e-4, weights 1": ("adam", 2e-4, 1.0),
    "adam lr 1e-3, compactness 0.01 (quick preset)": ("adam", 1e-3, 0.01),
}


def run(optimiser: str, lr: float, compactness: float, steps: int, x, y) -> dict:
    torch.manual_seed(0)
    info = DATASETS["mnist"]
    model = build_model("smallcnn", num_classes=10, in_shape=info.shape, mean=info.mean, std=info.std)
    model = model.to(memory_format=torch.channels_last).train()
    opt = (torch.optim.Adam(model.parameters(), lr) if optimiser == "adam"
           else torch.optim.SGD(model.parameters(), lr, momentum=0.9))
    objective = make_objective("adr_pgd", local_compactness=compactness, global_compactness=compactness)
    trace = []
    for step in range(steps):
        xb = x[step * 128:(step + 1) * 128].contiguous(memory_format=torch.channels_last)
        yb = y[step * 128:(step + 1) * 128]
        eps = 0.3 * min(1.0, step / 500)
        attack = functools.partial(pgd, threat=Linf(eps), steps=10, step_size=eps / 4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = objective(model, xb, yb, attack)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        if step % 20 == 0 or step == steps - 1:
            acc = (out["logits_adv"].argmax(1) == yb).float().mean().item()
            trace.append({"step": step, "eps": eps, "ce_adv": out["ce_adv"].item(),
                          "local_compactness": out["local_compactness"].item(), "acc_adv": acc})
            print(f"  step {step:4d} eps {eps:.3f} ce_adv {trace[-1]['ce_adv']:.3f} "
                  f"lc {trace[-1]['local_compactness']:.3f} acc_adv {acc:.3f}", flush=True)
    return {"trace": trace, "max_local_compactness": max(t["local_compactness"] for t in trace)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "optimizer_stability.json"))
    args = parser.parse_args()
    x, y = load_splits("mnist").train
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(x), generator=generator)[: args.steps * 128]
    results = {}
    for label, (optimiser, lr, weight) in SETTINGS.items():
        print(label, flush=True)
        results[label] = run(optimiser, lr, weight, args.steps, x[order], y[order])
    for label, result in results.items():
        final = result["trace"][-1]
        print(f"{label:<48} max lc {result['max_local_compactness']:9.3f}  final acc_adv {final['acc_adv']:.3f}")
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
