"""Every figure of adrnet's evaluation, drawn from run files (metrics.jsonl, eval.json).

Why one module: the numbers are computed elsewhere in ``adrnet.eval`` and written
to eval.json; this is the only module that draws them (training curves, robust
accuracy vs ε, divergence across layers, t-SNE of the latent z), so matplotlib
stays an optional dependency touched in one place. Figures are built on
matplotlib's object API (no pyplot global state, no display) and returned as
PNG bytes; the ``plot_*`` helpers draw on an axis the caller owns. Run names and layer
names are shown as written: never parsed as mathtext or LaTeX (a run named ``a$\\foo$b``
would otherwise stop the report) and never hidden from a legend (a leading ``_``).
"""

from __future__ import annotations

import functools
import io
import math
from typing import Mapping, Sequence

import numpy as np

ACC_KEYS = ("acc_clean", "acc_adv", "val_acc_clean", "val_acc_robust")


#: PNG metadata of every figure: how a later report recognises an image it may overwrite.
PNG_SOFTWARE = "adrnet report"


def plain(text) -> str:
    """``text`` as matplotlib shows it literally: every ``$`` escaped (no mathtext), and a
    leading ``_`` (which hides a legend entry) preceded by a space."""
    text = str(text).replace("$", r"\$")
    return " " + text if text.startswith("_") else text


def _no_tex(draw):
    """Draw with LaTeX off, whatever the user's matplotlibrc says (``text.usetex``)."""
    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        import matplotlib
        with matplotlib.rc_context({"text.usetex": False}):
            return draw(*args, **kwargs)
    return wrapper


def _figure(width: float, height: float):
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def to_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": PNG_SOFTWARE})
    return buffer.getvalue()


def _curve(records: list[dict], key: str) -> tuple[list, list]:
    points = [(r["epoch"] if _number(r.get("epoch")) else i, r[key]) for i, r in enumerate(records)
              if _number(r.get(key))]
    return [p[0] for p in points], [p[1] for p in points]


def _number(value) -> bool:
    """A number an axis can hold: JSON allows NaN, Infinity and 1e308, none of which can."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value) and abs(value) <= 1e100


@_no_tex
def training_curves(metrics: Mapping[str, list[dict]]) -> bytes | None:
    """Loss and accuracies per epoch (step records when a run has no epoch yet). A run
    keeps one colour in both panels and each accuracy one line style, so the legends
    list runs and accuracies once each: one entry per (run, accuracy) pair made the
    legend of an ablation's 12 runs taller than the figure."""
    if not any(metrics.values()):
        return None
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator
    fig = _figure(10, 3.6)
    ax_loss, ax_acc = fig.subplots(1, 2)
    styles = dict(zip(ACC_KEYS, ("-", "--", ":", "-.")))
    for label, records in metrics.items():
        epochs = [r for r in records if r.get("kind") == "epoch"] or records
        xs, ys = _curve(epochs, "loss")
        line = ax_loss.plot(xs, ys, marker=".", label=plain(label))[0]
        for key, style in styles.items():
            xs, ys = _curve(epochs, key)
            if xs:
                ax_acc.plot(xs, [100 * y for y in ys], style, color=line.get_color())
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy (train batches and validation)")
    ax_loss.legend(fontsize=7, ncol=1 + len(metrics) // 8)
    ax_acc.legend([Line2D([], [], linestyle=style, color="grey") for style in styles.values()],
                  list(styles), fontsize=7)
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    return to_png(fig)


@_no_tex
def sweep_figure(sweeps: Mapping[str, Mapping[str, list[dict]]]) -> bytes | None:
    """Robust accuracy vs ε, one panel per norm, one line per run."""
    norms = sorted({norm for per_run in sweeps.values() for norm in per_run})
    if not norms:
        return None
    fig = _figure(5 * len(norms), 3.6)
    axes = fig.subplots(1, len(norms), squeeze=False)[0]
    for ax, norm in zip(axes, norms):
        plot_sweep(ax, {label: s[norm] for label, s in sweeps.items() if norm in s}, norm)
        ax.set_title(f"worst-case accuracy vs ε ({norm})")
    return to_png(fig)


@_no_tex
def divergence_figure(curves: Mapping[str, Mapping[str, float]]) -> bytes | None:
    if not curves:
        return None
    fig = _figure(6.5, 3.8)
    ax = fig.subplots()
    plot_divergence(ax, curves)
    ax.set_title("clean vs adversarial representation, per layer")
    return to_png(fig)


@_no_tex
def tsne_figure(embeddings: Mapping[str, Mapping[str, list]]) -> bytes | None:
    """Side-by-side t-SNE panels (one per run) of clean (o) and adversarial (x) z."""
    if not embeddings:
        return None
    fig = _figure(4.2 * len(embeddings), 4.2)
    axes = fig.subplots(1, len(embeddings), squeeze=False)[0]
    for ax, (label, embedding) in zip(axes, embeddings.items()):
        plot_tsne(ax, embedding, title=f"{label}: latent z (o clean, x adversarial)")
    return to_png(fig)


def plot_sweep(ax, curves: dict[str, Sequence[dict]], norm: str = "linf") -> None:
    """Worst-case accuracy vs ε, one line per run, on a matplotlib axis."""
    for label, rows in curves.items():
        ax.plot([r["eps"] for r in rows], [100 * r["worst_case"] for r in rows], marker="o", label=plain(label))
    ax.set_xlabel("ε (L∞)" if norm == "linf" else "ε (L2)")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8)


def plot_divergence(ax, curves: Mapping[str, Mapping[str, float]]) -> None:
    """D_s across layers, one line per run."""
    for label, divergence in curves.items():
        ax.plot([plain(k) for k in divergence], list(divergence.values()), marker="o", label=plain(label))
    ax.set_xlabel("layer (stage)")
    ax.set_ylabel("mean |z(x') − z(x)| / mean |z(x)|")
    ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8)


def plot_tsne(ax, embedding: Mapping[str, list], title: str = "") -> None:
    """Clean points as dots, adversarial as crosses, coloured by true class."""
    clean, adv = np.asarray(embedding["clean"]), np.asarray(embedding["adv"])
    labels = np.asarray(embedding["labels"])
    vmax = max(9, int(labels.max(initial=0)))
    cmap = "tab10" if vmax < 10 else "tab20"
    ax.scatter(clean[:, 0], clean[:, 1], c=labels, cmap=cmap, vmin=0, vmax=vmax, s=8, marker="o", label="clean")
    ax.scatter(adv[:, 0], adv[:, 1], c=labels, cmap=cmap, vmin=0, vmax=vmax, s=14, marker="x", label="adversarial")
    ax.set_title(plain(title), fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    from matplotlib.lines import Line2D
    grey = dict(color="0.3", linestyle="none")
    ax.legend(handles=[Line2D([], [], marker="o", label="clean", **grey),
                       Line2D([], [], marker="x", label="adversarial", **grey)], fontsize=7, loc="best")
