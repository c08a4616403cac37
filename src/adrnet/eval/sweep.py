"""Accuracy-vs-ε sweeps for L∞ and L2 (drawn by ``figures``, tabulated by ``tables``).

Why: one ε says little; the curve shows whether robustness degrades smoothly
(as it should) or stays flat far past the training ε (a masking symptom), and
it is how Bui et al. (ECCV 2020) compare ADR with PGD-AT and TRADES. The
paper's L∞ lists are below (docs/method.md); the paper gives no L2 sweep, so the L2
lists are adrnet's own choice, centred on the usual L2 radii (MNIST 2.0,
CIFAR-10 0.5). Each point is the per-example worst case over the attacks run.
Threat models: L∞ and L2 balls inside [0, 1].
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from adrnet.attacks import build_attacks
from adrnet.eval.robust import robust_accuracy

_MNIST_LINF = [0.1, 0.2, 0.25, 0.3, 0.325, 0.35, 0.375, 0.4, 0.425, 0.45, 0.475, 0.5]
PAPER_EPS = {
    "cifar10": {"linf": [k / 255 for k in (2, 4, 6, 8, 10, 12, 14, 16, 20, 24, 32)],
                "l2": [0.125, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]},
    "mnist": {"linf": _MNIST_LINF, "l2": [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0]},
}
PAPER_EPS["fashion_mnist"] = PAPER_EPS["mnist"]


def default_eps_list(dataset: str, norm: str) -> list[float]:
    """The paper's sweep for ``dataset`` (MNIST's for unknown grey-scale sets)."""
    key = dataset if dataset in PAPER_EPS else ("cifar10" if "cifar" in dataset else "mnist")
    return list(PAPER_EPS[key][norm])


def eps_sweep(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str,
              eps_list: Sequence[float], attacks: Sequence[str] = ("pgd",), steps: int = 20,
              restarts: int = 1, batch_size: int = 256, progress: bool = False) -> list[dict]:
    """One row per ε: ``{"eps", "clean", <attack label>..., "worst_case", "n"}``.

    ``attacks`` are names in ``adrnet.attacks.ATTACKS`` (those that evaluate the whole
    set themselves, such as autoattack, are left out); ``steps`` and ``restarts`` go to
    the attacks that take them. The step size follows ε (2.5·ε/steps) so every point
    gets an equally strong attack.
    """
    rows = []
    for eps in tqdm(list(eps_list), desc=f"eps sweep ({norm})", disable=not progress):
        fns, _ = build_attacks(list(attacks), norm=norm, eps=eps, steps=steps, restarts=restarts)
        result = robust_accuracy(model, x, y, fns, batch_size=batch_size)
        rows.append({"eps": float(eps), "clean": result.clean_accuracy, **result.attack_accuracy,
                     "worst_case": result.worst_case_accuracy, "n": result.n})
    return rows
