"""Accuracy-vs-ε sweeps for L∞ and L2, as a table and a plot.

Why: one ε says little; the curve shows whether robustness degrades smoothly
(as it should) or stays flat far past the training ε (a masking symptom), and
it is how Bui et al. (ECCV 2020) compare ADR with PGD-AT and TRADES. The
paper's L∞ lists are below (method.md); the paper gives no L2 sweep, so the L2
lists are adrnet's own choice, centred on the usual L2 radii (MNIST 2.0,
CIFAR-10 0.5). Each point is the per-example worst case over the attacks run.
Threat models: L∞ and L2 balls inside [0, 1].
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from adrnet.errors import ConfigError
from adrnet.eval.attacks_suite import build_attacks, check_eps
from adrnet.eval.robust import robust_accuracy

_MNIST_LINF = [0.1, 0.2, 0.25, 0.3, 0.325, 0.35, 0.375, 0.4, 0.425, 0.45, 0.475, 0.5]
PAPER_EPS = {
    "cifar10": {"linf": [k / 255 for k in (2, 4, 6, 8, 10, 12, 14, 16, 20, 24, 32)],
                "l2": [0.125, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]},
    "mnist": {"linf": _MNIST_LINF, "l2": [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0]},
}
PAPER_EPS["fashion_mnist"] = PAPER_EPS["mnist"]


def parse_number(text: str | float, what: str) -> float:
    """``"8/255"`` or ``"0.3"`` -> float (±inf beyond float range, for the range checks
    to refuse by name); ``what`` names the option in the message for anything else."""
    try:
        fraction = Fraction(str(text).strip())
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"cannot read {what} {text!r}; write a number like 0.3 or a "
                          "fraction like 8/255") from None
    try:
        return float(fraction)
    except OverflowError:
        return math.inf if fraction > 0 else -math.inf


def parse_eps(text: str | float) -> float:
    """``"8/255"`` or ``"0.3"`` -> float, refusing anything else with a clear message."""
    value = parse_number(text, "eps")
    if value < 0:
        raise ConfigError(f"eps must be >= 0, got {text}")
    return value


def default_eps_list(dataset: str, norm: str) -> list[float]:
    """The paper's sweep for ``dataset`` (MNIST's for unknown grey-scale sets)."""
    key = dataset if dataset in PAPER_EPS else ("cifar10" if "cifar" in dataset else "mnist")
    return list(PAPER_EPS[key][norm])


def parse_eps_list(text: str, *, dataset: str = "mnist", norm: str = "linf") -> list[float]:
    """``"paper"`` -> :func:`default_eps_list`; else comma-separated ε values."""
    if text.strip().lower() in ("paper", "default"):
        return default_eps_list(dataset, norm)
    values = [parse_eps(part) for part in text.split(",") if part.strip()]
    if not values:
        raise ConfigError("the eps sweep list is empty; give e.g. --sweep 0.1,0.2,0.3 or --sweep paper")
    return sorted(set(values))


def eps_sweep(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str,
              eps_list: Sequence[float], attacks: Sequence[str] = ("pgd",), steps: int = 20,
              restarts: int = 1, batch_size: int = 256, progress: bool = False) -> list[dict]:
    """One row per ε: ``{"eps", "clean", <attack label>..., "worst_case", "n"}``.

    The step size follows ε (2.5·ε/steps) so every point gets an equally strong attack.
    """
    rows = []
    for eps in tqdm(list(eps_list), desc=f"eps sweep ({norm})", disable=not progress):
        check_eps(eps, norm)
        fns, _ = build_attacks(list(attacks), norm=norm, eps=eps, steps=steps, restarts=restarts)
        result = robust_accuracy(model, x, y, fns, batch_size=batch_size)
        rows.append({"eps": float(eps), "clean": result.clean_accuracy, **result.attack_accuracy,
                     "worst_case": result.worst_case_accuracy, "n": result.n})
    return rows


def _fmt_eps(eps: float, norm: str) -> str:
    k = eps * 255
    return f"{round(k)}/255" if norm == "linf" and abs(k - round(k)) < 1e-6 and eps < 0.1 else f"{eps:g}"


def sweep_table_markdown(rows: Sequence[dict], norm: str = "linf") -> str:
    """A Markdown table of a sweep (accuracies in %)."""
    if not rows:
        return "_no sweep_\n"
    keys = [k for k in rows[0] if k not in ("eps", "n")]
    lines = ["| ε | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for row in rows:
        lines.append(f"| {_fmt_eps(row['eps'], norm)} | " +
                     " | ".join(f"{100 * row[k]:.1f}" for k in keys) + " |")
    return "\n".join(lines) + "\n"


def plot_sweep(ax, curves: dict[str, Sequence[dict]], norm: str = "linf") -> None:
    """Worst-case accuracy vs ε, one line per run, on a matplotlib axis."""
    for label, rows in curves.items():
        ax.plot([r["eps"] for r in rows], [100 * r["worst_case"] for r in rows], marker="o", label=label)
    ax.set_xlabel("ε (L∞)" if norm == "linf" else "ε (L2)")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
