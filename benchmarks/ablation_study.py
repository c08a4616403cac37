"""The paper's component study at the quick budget: which ADR component does what, read
against measured seed noise, and whether ADR's difference to PGD-AT changes with budget.

On MNIST and on Fashion-MNIST (configs/{mnist,fashion_mnist}_quick_adr.toml):
1. the ablation of ``adrnet ablate``: base (every ADR weight 0), full ADR, each of the five
   components alone on the base, and full ADR without each (seed 0);
2. seed noise: base and full at seeds 1 and 2 as well;
3. the budget: PGD-AT (the quick PGD-AT preset) and ADR-PGD (full) at the quick budget and at
   four times its epochs (the same recipe otherwise), seeds 0 and 1.
Every run is trained and evaluated alike by :func:`adrnet.study.run_study`: clean and PGD-40
(L∞, step 2.5ε/40) on the whole test split, AutoAttack (standard) on the first ``--aa-n``
test images, on the checkpoint chosen on the validation split.

A difference between two runs counts only beyond twice its seed noise: the standard deviation
of a difference of two single runs, sqrt(s_base² + s_full²), from the seeds of base and of
full (each s the sample standard deviation over seeds; verdicts start at two seeds each and
sharpen to three); a difference of means over k seeds each, beyond twice that over sqrt(k).
Three seeds give each s two degrees of freedom, so the 2σ cut is a rough rule, not a 95%
test. Every run is attacked on the same test images, so the seed spread already holds the
variation between runs on them; the binomial error shown beside AutoAttack says how far one
figure may lie from its whole-test value.

Resumable across sessions, as benchmarks/quality.py is: run directories live in ``--work``
(default ~/.cache/adrnet/ablation_study, outside the checkout), each finished run's summary
is saved in benchmarks/results/ablation/NAME.json (commit it) and never redone. The docs
(the ablation block of docs/results.md, docs/images/ablation_*.png and the README's study
paragraph) are rewritten from those files after every run, saying what is still to come.

Each run's JSON also keeps its training record (validation PGD accuracy after every epoch, the
epoch chosen), so the docs can say which runs fell during training: a figure of the checkpoint
chosen on validation cannot show that by itself.

Four runs of the study are trained elsewhere already with the same preset and seed, so they
are adopted, not trained again (ADOPTED below): the run directory is copied into ``--work``
and then goes through the study as any other, whose resume check refuses it unless its
recorded config is the study's (everything but how it executes); its summary names the
source. On one machine a retrained run would be bit-identical (training is deterministic);
adopting saves its training time.

Usage: python benchmarks/ablation_study.py [--aa-n 500] [--only NAME ...] [--docs-only] [--list]
(two processes, each with its own --only runs, use two cores; one without --only takes the
next run not done). A quick run costs what the quality table's rows do (its time columns);
the 4x runs train four times as long.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import math
import os
import shutil
import statistics
from pathlib import Path
from typing import NamedTuple

import torch

from quality import aa_flags, cpu_name, replace_block

from adrnet.atomic import write_json_atomic
from adrnet.config import Config, apply_overrides, load_config
from adrnet.objectives import objective_from_config
from adrnet.runs.checkpoint import checkpoint_files
from adrnet.runs.records import read_jsonl
from adrnet.study import EvalPlan, ablation_variants, check_comparable, run_study, weights_digest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "ablation"
DOCS, README, IMAGES = ROOT / "docs" / "results.md", ROOT / "README.md", ROOT / "docs" / "images"
PGD_STEPS, NOISE_MULTIPLE, BUDGET_FACTOR = 40, 2, 4
#: A run "falls" in an epoch whose validation PGD accuracy is more than this many points below
#: its best so far: 10 points is about seven binomial standard errors on the 1000 validation
#: images, so no seed or batch noise reads as a fall.
FALL_POINTS = 10
#: key -> (label, ADR preset, PGD-AT preset)
DATASETS = {"mnist": ("MNIST ε=0.3", "configs/mnist_quick_adr.toml", "configs/mnist_quick_pgd_at.toml"),
            "fashion": ("Fashion-MNIST ε=0.1", "configs/fashion_mnist_quick_adr.toml",
                        "configs/fashion_mnist_quick_pgd_at.toml")}
METRICS = (("clean", "clean"), ("pgd", f"PGD-{PGD_STEPS}"), ("autoattack", "AutoAttack"))
NOISE_SEEDS, BUDGET_SEEDS = (0, 1, 2), (0, 1)
#: study run -> the run trained elsewhere from the same preset and seed (relative to the
#: checkout): the eval-speed benchmark's models and the shipped Fashion-MNIST pair.
ADOPTED = {"mnist_full_s0": "benchmarks/results/eval_speed/runs/adr_pgd",
           "mnist_pgd_at_s0": "benchmarks/results/eval_speed/runs/pgd_at",
           "fashion_full_s0": "benchmarks/results/zoo/runs/fashion_mnist_adr_pgd",
           "fashion_pgd_at_s0": "benchmarks/results/zoo/runs/fashion_mnist_pgd_at"}


class Run(NamedTuple):
    dataset: str          # a key of DATASETS
    variant: str          # an ablation variant, "pgd_at", or either with the budget suffix
    seed: int
    preset: str
    overrides: tuple      # --set overrides on the variant's config


def variant_config(run: Run) -> Config:
    cfg = load_config(ROOT / run.preset)
    base_variant = run.variant.removesuffix(f"_x{BUDGET_FACTOR}")
    if base_variant != "pgd_at":
        cfg = ablation_variants(cfg)["full" if base_variant == "adr_pgd" else base_variant]
    return apply_overrides(cfg, [*run.overrides, f"train.seed={run.seed}", "train.progress=false"])


def planned() -> dict[str, Run]:
    """Every run by name, in the order of the work: the yardsticks (seeds) first, so that
    every later difference is read against a measured noise as soon as it exists."""
    runs = {}

    def add(dataset, variant, seed, preset, overrides=()):
        runs[f"{dataset}_{variant}_s{seed}"] = Run(dataset, variant, seed, preset, tuple(overrides))

    for dataset, (_, adr, _) in DATASETS.items():
        for seed in NOISE_SEEDS:
            add(dataset, "base", seed, adr)
            add(dataset, "full", seed, adr)
    for dataset, (_, adr, _) in DATASETS.items():
        for variant in ablation_variants(load_config(ROOT / adr)):
            if variant not in ("base", "full"):
                add(dataset, variant, 0, adr)
    for dataset, (_, adr, pgd_at) in DATASETS.items():
        epochs = load_config(ROOT / adr).train.epochs
        for seed in BUDGET_SEEDS:
            add(dataset, "pgd_at", seed, pgd_at)
        for seed in BUDGET_SEEDS:
            for variant, preset in (("pgd_at", pgd_at), ("adr_pgd", adr)):
                add(dataset, f"{variant}_x{BUDGET_FACTOR}", seed, preset,
                    [f"train.epochs={BUDGET_FACTOR * epochs}"])
    return runs


def load_results() -> dict:
    return {path.stem: json.loads(path.read_text()) for path in sorted(RESULTS.glob("*.json"))}


def adopt(name: str, work: Path) -> str | None:
    """Copy ADOPTED[name] into the study's run directory when that is still empty and the
    source has its resumable last checkpoint (a checkout elsewhere keeps best only: the run
    is then trained here); the source's path while the run holds its checkpoint, else None."""
    source, target = ADOPTED.get(name), work / name / name
    if source is None:
        return None
    source_last, target_last = (checkpoint_files(run, "last").path("meta") for run in (ROOT / source, target))
    if not source_last.is_file():
        return None
    if not target.exists():
        shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("*.lock", "*.claim"))
    same = target_last.is_file() and filecmp.cmp(source_last, target_last, shallow=False)
    return source if same else None


def run_one(name: str, run: Run, args) -> dict:
    cfg = variant_config(run)
    plan = EvalPlan(pgd_steps=PGD_STEPS, autoattack_n=args.aa_n, progress=False, diagnostics=False)
    adopted = adopt(name, Path(args.work))
    entry = run_study({name: cfg}, Path(args.work) / name, plan)[name]
    return {**entry, "adopted_from": adopted, "dataset": run.dataset, "variant": run.variant, "seed": run.seed,
            "preset": run.preset, "overrides": list(run.overrides), "machine": cpu_name(),
            "threads": torch.get_num_threads(), "torch": torch.__version__}


def training_record(run_dir: Path) -> dict:
    """What a finished run's metrics.jsonl says about its training, for reading the figures
    of the checkpoint chosen on validation: the validation PGD accuracy of every epoch, the
    epoch of that checkpoint, and the lowest epoch mean of global smoothness (whose
    different-class part is unbounded below, docs/method.md; None where the term is off).
    An epoch logged twice (a resume) counts once, as its last record."""
    by_epoch = {r["epoch"]: r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("kind") == "epoch"}
    epochs = [by_epoch[e] for e in sorted(by_epoch)]
    gs = [r["global_smoothness"] for r in epochs if r.get("global_smoothness")]
    return {"val_robust": [round(100 * r["val_acc_robust"], 2) for r in epochs],
            "chosen_epoch": max(r["epoch"] for r in epochs if r.get("is_best")),
            "global_smoothness_low": min(gs) if gs else None}


def record_training(results: dict, work: Path) -> None:
    """Give each finished run's JSON its :func:`training_record` where it has none yet: from
    its run directory in ``work`` when that still holds the evaluated weights, else from the
    committed directory it was adopted from. A run whose directory is gone keeps none (the
    docs name it); the runs before this record existed got theirs this way."""
    for name, entry in results.items():
        if "training" in entry:
            continue
        run_dir, which = work / name / name, entry["plan"]["which"]
        if (checkpoint_files(run_dir, which).path("meta").is_file()
                and weights_digest(run_dir, which) == entry["weights_sha256"]):
            source = run_dir
        elif entry.get("adopted_from") and (ROOT / entry["adopted_from"] / "metrics.jsonl").is_file():
            source = ROOT / entry["adopted_from"]
        else:
            continue
        entry["training"] = training_record(source)
        write_json_atomic(RESULTS / f"{name}.json", entry)


# ---------------------------------------------------------------- reading the results

def value(results: dict, name: str, key: str) -> float | None:
    """A run's accuracy (in %) under ``key``, None until it ran."""
    found = results.get(name, {}).get("summary", {}).get(key)
    return None if found is None else 100 * found


def seed_values(results: dict, dataset: str, variant: str, key: str, seeds) -> list[float]:
    return [v for seed in seeds if (v := value(results, f"{dataset}_{variant}_s{seed}", key)) is not None]


def difference_noise(results: dict, dataset: str, key: str) -> float | None:
    """Standard deviation (points) of the difference of two single runs: sqrt(s_base² +
    s_full²) over the seeds of base and full; None until each has at least two seeds."""
    spreads = [seed_values(results, dataset, variant, key, NOISE_SEEDS) for variant in ("base", "full")]
    if any(len(values) < 2 for values in spreads):
        return None
    return math.sqrt(sum(statistics.variance(values) for values in spreads))


def verdict(difference: float, noise: float | None, seeds: int = 1) -> str:
    """``difference`` (points, of means over ``seeds`` seeds each) against the noise of a
    difference of two single runs, scaled down by sqrt(seeds)."""
    if noise is None:
        return "noise not measured yet"
    if abs(difference) <= NOISE_MULTIPLE * noise / math.sqrt(seeds):
        return "within noise"
    return f"{'better' if difference > 0 else 'worse'}, beyond {NOISE_MULTIPLE}σ"


def paired_seeds(results: dict, dataset: str) -> list[int]:
    """The seeds at which both base and full have run."""
    return [seed for seed in NOISE_SEEDS
            if all(f"{dataset}_{variant}_s{seed}" in results for variant in ("base", "full"))]


def mean_over(results: dict, dataset: str, variant: str, key: str, seeds: list[int]) -> float | None:
    """``variant``'s mean under ``key`` over ``seeds``; None unless every one has run."""
    values = seed_values(results, dataset, variant, key, seeds)
    return statistics.mean(values) if values and len(values) == len(seeds) else None


def ablation_rows(results: dict, dataset: str) -> list[dict]:
    """Each ablation variant at seed 0 with its difference to base and its verdict per
    metric; full against base as the difference of their means over the seeds both have
    run (the study's headline question, so it gets every seed as soon as it lands: the
    mean of two seeds already halves the variance of one), with base's mean over those
    seeds as its ``reference``."""
    paired = paired_seeds(results, dataset)
    noise = {key: difference_noise(results, dataset, key) for key, _ in METRICS}
    rows = []
    for variant in ablation_variants(load_config(ROOT / DATASETS[dataset][1])):
        seeds = paired if variant == "full" and len(paired) > 1 else [0]
        row = {"variant": variant, "seeds": len(seeds), "reference": {}}
        for key, _ in METRICS:
            mine, base = (mean_over(results, dataset, v, key, seeds) for v in (variant, "base"))
            row[key] = mine
            if len(seeds) > 1:
                row["reference"][key] = base
            if mine is not None and base is not None and variant != "base":
                row[f"d_{key}"] = mine - base
                row[f"verdict_{key}"] = verdict(mine - base, noise[key], len(seeds))
        row["flagged"] = any(aa_flags(results.get(f"{dataset}_{variant}_s{seed}")) for seed in seeds)
        rows.append(row)
    return rows


def shown_name(row: dict) -> str:
    return row["variant"] + (f" (mean of {row['seeds']} seeds)" if row["seeds"] > 1 else "")


def cell(x: float | None, digits: int = 2, sign: bool = False) -> str:
    return "–" if x is None else f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def ablation_table(results: dict, dataset: str) -> list[str]:
    label = DATASETS[dataset][0]
    lines = [f"#### {label}: the ablation (seed 0; full against base over every seed both have), "
             "differences to base in points", "",
             "| run | clean | PGD-40 | AutoAttack | Δ clean | Δ PGD-40 | Δ AutoAttack | verdict (clean / PGD-40 / AA) |",
             "|---|---|---|---|---|---|---|---|"]
    for row in ablation_rows(results, dataset):
        verdicts = " / ".join(row.get(f"verdict_{key}", "–") for key, _ in METRICS)
        if row["reference"]:
            lines.append(f"| base (mean of the same {row['seeds']} seeds) | "
                         + " | ".join(cell(row["reference"][key]) for key, _ in METRICS)
                         + f" | | | | the reference of {row['variant']}'s mean |")
        lines.append(f"| {shown_name(row)} | {cell(row['clean'])} | {cell(row['pgd'])} | "
                     f"{cell(row['autoattack'])}{' †' if row['flagged'] else ''} | "
                     + " | ".join(cell(row.get(f"d_{key}"), sign=True) for key, _ in METRICS)
                     + f" | {verdicts if row['variant'] != 'base' else 'the reference'} |")
    noise = []
    for key, metric in METRICS:
        spread = {variant: seed_values(results, dataset, variant, key, NOISE_SEEDS) for variant in ("base", "full")}
        shown = "; ".join(f"{variant} {statistics.mean(v):.2f} ± {statistics.stdev(v):.2f} ({len(v)} seeds)"
                          if len(v) > 1 else f"{variant}: {len(v)} seed(s) so far" for variant, v in spread.items())
        sigma = difference_noise(results, dataset, key)
        noise.append(f"- {metric}: {shown}; σ of a difference: {cell(sigma)} points")
    n = next((r["summary"].get("autoattack_n") for r in results.values()
              if r["dataset"] == dataset and r["summary"].get("autoattack_n")), None)
    lines += ["", "Seed noise (mean ± standard deviation over seeds; a difference counts beyond "
              f"{NOISE_MULTIPLE}σ):", *noise]
    base_aa = value(results, f"{dataset}_base_s0", "autoattack")
    if n and base_aa is not None:
        p = base_aa / 100
        lines.append(f"- AutoAttack runs on the first {n} test images, the same for every run (so "
                     "the seed spread holds the variation between runs on them); one figure may "
                     f"lie about {100 * math.sqrt(p * (1 - p) / n):.2f} points (binomial standard "
                     "error at base's accuracy) from its value on the whole test split.")
    return lines


def budget_gaps(results: dict, dataset: str, key: str) -> dict[str, dict | None]:
    """ADR-PGD minus PGD-AT under ``key`` per budget label (None until both have every
    budget seed): the gap of the means, the gap per seed and its verdict. The verdict reads
    against the seed noise of the ablation's base and full (up to three seeds each, the
    same trainer and data), pooled into one yardstick for every comparison of the study,
    rather than against the spread of the budget's own two seeds per method."""
    gaps = {}
    for suffix, label in (("", "quick budget"), (f"_x{BUDGET_FACTOR}", f"{BUDGET_FACTOR}x the epochs")):
        adr = seed_values(results, dataset, "full" if not suffix else f"adr_pgd{suffix}", key, BUDGET_SEEDS)
        base = seed_values(results, dataset, f"pgd_at{suffix}", key, BUDGET_SEEDS)
        gaps[label] = None
        if len(adr) == len(base) == len(BUDGET_SEEDS):
            gap = statistics.mean(adr) - statistics.mean(base)
            gaps[label] = {"gap": gap, "each": [a - b for a, b in zip(adr, base)],
                           "verdict": verdict(gap, difference_noise(results, dataset, key), len(BUDGET_SEEDS))}
    return gaps


def budget_lines(results: dict, dataset: str) -> list[str]:
    """ADR-PGD minus PGD-AT at the quick budget and at BUDGET_FACTOR times it, per metric."""
    lines = []
    for key, metric in METRICS:
        parts = [f"{label}: still to run" if gap is None else
                 f"{label}: {gap['gap']:+.2f} (seeds {', '.join(f'{d:+.2f}' for d in gap['each'])}; {gap['verdict']})"
                 for label, gap in budget_gaps(results, dataset, key).items()]
        lines.append(f"- {DATASETS[dataset][0]}, {metric}, ADR-PGD minus PGD-AT: " + "; ".join(parts))
    return lines


def budget_summary(results: dict, dataset: str) -> str:
    """The README's budget clause for one data set: robust metrics only, per budget."""
    gaps = {key: budget_gaps(results, dataset, key) for key in ("pgd", "autoattack")}
    parts = []
    for label in gaps["pgd"]:
        measured = [f"{dict(METRICS)[key]} {by_label[label]['gap']:+.2f} ({by_label[label]['verdict']})"
                    for key, by_label in gaps.items() if by_label[label] is not None]
        parts.append(f"{label} {', '.join(measured)}" if measured else f"{label} still to run")
    return f"on {DATASETS[dataset][0]}, " + ", ".join(parts)


def falls(record: dict) -> list[int]:
    """The epochs whose validation PGD accuracy is more than FALL_POINTS below the best so far."""
    best, fell = 0.0, []
    for epoch, accuracy in enumerate(record["val_robust"], start=1):
        best = max(best, accuracy)
        if best - accuracy > FALL_POINTS:
            fell.append(epoch)
    return fell


def stability(results: dict, dataset: str) -> tuple[dict[bool, dict[str, list[str]]], list[str]]:
    """The data set's runs with a training record, by whether global smoothness is on: each
    group's runs and those of them that fell; and the runs without a record."""
    runs, missing = planned(), []
    groups = {on: {"recorded": [], "fell": []} for on in (True, False)}
    for name, entry in results.items():
        if entry["dataset"] != dataset:
            continue
        if "training" not in entry:
            missing.append(name)
            continue
        group = groups["global_smoothness" in objective_from_config(variant_config(runs[name])).active]
        group["recorded"].append(name)
        if falls(entry["training"]):
            group["fell"].append(name)
    return groups, missing


def stability_clause(groups: dict[bool, dict[str, list[str]]], dataset: str) -> str | None:
    """How many of the data set's runs fell, with global smoothness on and off (``groups``
    from :func:`stability`); None before any run has a record."""
    if not any(group["recorded"] for group in groups.values()):
        return None
    on, off = groups[True], groups[False]
    return (f"{len(on['fell'])} of {len(on['recorded'])} {DATASETS[dataset][0]} runs with global smoothness on "
            f"({len(off['fell'])} of {len(off['recorded'])} with it off)")


def stability_lines(results: dict) -> list[str]:
    """The training-stability block: the counts per data set, then each run that fell."""
    recorded = [entry for entry in results.values() if "training" in entry]
    if not recorded:
        return []
    val = recorded[0]["config"]["eval"]
    lines = [f"#### Training stability: validation PGD-{val['val_steps']} accuracy on {val['val_size']} held-out "
             "training images after every epoch", "",
             f"A run falls in an epoch whose validation accuracy is more than {FALL_POINTS} points below its best "
             "so far. Every figure above is of the checkpoint chosen on validation (the best epoch), so a run "
             "that fell is read at an epoch where it had not. Runs that fell, by whether global smoothness is on "
             "(under the presets' `latent_norm = \"rms\"` the one term left unbounded below, "
             "[method.md](method.md)):"]
    for dataset in DATASETS:
        groups, missing = stability(results, dataset)
        if clause := stability_clause(groups, dataset):
            lines.append(f"- {clause}" + (f" (no record: {', '.join(missing)}, whose run directory is gone)"
                                          if missing else ""))
    lines += ["", "| run | epochs | chosen epoch | its validation accuracy | last epoch's | epochs fallen in | "
              "lowest epoch mean of global smoothness |", "|---|---|---|---|---|---|---|"]
    for name, entry in results.items():
        record = entry.get("training")
        if record and falls(record):
            low = record["global_smoothness_low"]
            lines.append(f"| {name} | {len(record['val_robust'])} | {record['chosen_epoch']} | "
                         f"{record['val_robust'][record['chosen_epoch'] - 1]:.1f} | {record['val_robust'][-1]:.1f} | "
                         f"{', '.join(map(str, falls(record)))} | {'–' if low is None else f'{low:.3g}'} |")
    return lines + [""]


def draw(results: dict, dataset: str, path: Path) -> bool:
    """Each variant's difference to base (clean, PGD-40, AutoAttack) as bars, with the
    ±2σ band of seed noise per metric drawn behind them; False when nothing to draw yet.
    A row that is a mean over seeds gets its own narrower band (2σ/sqrt(seeds), the one its
    verdict uses), so a bar reads against the same yardstick in the figure as in the table."""
    rows = [row for row in ablation_rows(results, dataset) if row["variant"] != "base"]
    measured = [any(f"d_{key}" in row for key, _ in METRICS) for row in rows]
    if not any(measured):
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(METRICS), figsize=(12, 4), sharey=True)
    names = [shown_name(row) + ("" if has_difference else " (to come)") for row, has_difference in zip(rows, measured)]
    for ax, (key, metric) in zip(axes, METRICS):
        diffs = [row.get(f"d_{key}", 0.0) for row in rows]
        colors = ["tab:blue" if row.get(f"d_{key}") is not None else "white" for row in rows]
        ax.barh(names, diffs, color=colors, edgecolor="black", linewidth=0.5, zorder=2)
        sigma = difference_noise(results, dataset, key)
        if sigma is not None:
            ax.axvspan(-NOISE_MULTIPLE * sigma, NOISE_MULTIPLE * sigma, color="0.88", zorder=0,
                       label=f"±{NOISE_MULTIPLE}σ seed noise")
            for name, row in zip(names, rows):
                if row["seeds"] > 1:
                    width = NOISE_MULTIPLE * sigma / math.sqrt(row["seeds"])
                    ax.barh(name, 2 * width, left=-width, height=0.9, color="0.7", zorder=1,
                            label=f"±{NOISE_MULTIPLE}σ/√{row['seeds']} for a mean of {row['seeds']} seeds")
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_title(metric)
        ax.set_xlabel("difference to base (points)")
        if sigma is not None:
            ax.legend(loc="lower right", fontsize=7)
    axes[0].invert_yaxis()
    fig.suptitle(f"{DATASETS[dataset][0]}: each ADR variant against base (seed 0 unless marked)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def answer(results: dict) -> str:
    """The README's answer: which components moved robustness beyond the noise, what the
    budget did to ADR's difference to PGD-AT, and how many runs fell during training (the
    figures, all of checkpoints chosen on validation, do not show that)."""
    found, budget = [], []
    for dataset, (label, _, _) in DATASETS.items():
        judged = [row for row in ablation_rows(results, dataset)
                  if row.get("verdict_pgd", "noise not measured yet") != "noise not measured yet"]
        if not judged:
            continue
        moved = [f"{row['variant']} ({row['d_pgd']:+.1f}" + (f", mean of {row['seeds']} seeds)" if row["seeds"] > 1 else ")")
                 for row in judged if "beyond" in row["verdict_pgd"]]
        base, full = (len(seed_values(results, dataset, variant, "pgd", NOISE_SEEDS)) for variant in ("base", "full"))
        # Where full beats base, the removals that bring it back within noise name the
        # components its gain needs; the count of differing variants alone does not say so.
        full_gains = any(row["variant"] == "full" and row["verdict_pgd"].startswith("better") for row in judged)
        needed = [row["variant"].removeprefix("full-") for row in judged
                  if row["variant"].startswith("full-") and row["verdict_pgd"] == "within noise"]
        found.append(f"on {label}, {len(moved)} of {len(judged)} variants differ from the base under "
                     f"PGD-40 beyond {NOISE_MULTIPLE}σ of seed noise (σ from {base} seeds of base and {full} of full)"
                     + (f": {', '.join(moved)}" if moved else "")
                     + (f"; full without {' or without '.join(needed)} is back within noise of base"
                        if full_gains and needed else ""))
        if any(gap is not None for gap in budget_gaps(results, dataset, "pgd").values()):
            budget.append(budget_summary(results, dataset))
    if not found:
        text = "The ablation study (`python benchmarks/ablation_study.py`) has no measured difference yet."
    else:
        done, planned_runs = sum(name in results for name in planned()), len(planned())
        progress = f"all {done} runs" if done == planned_runs else f"{done} of {planned_runs} runs so far"
        figures = [f"[{label}](docs/images/ablation_{dataset}.png)" for dataset, (label, _, _) in DATASETS.items()
                   if (IMAGES / f"ablation_{dataset}.png").is_file()]
        text = (f"The component study at the quick budget ({progress}) found: "
                f"{'; '.join(found)} (tables in docs/results.md; figures: {', '.join(figures)}).")
        text += (f" ADR-PGD minus PGD-AT (points, mean of seeds {' and '.join(map(str, BUDGET_SEEDS))}): "
                 f"{'; '.join(budget)}." if budget else " The 4x-budget runs are still to come.")
    fell = [clause for dataset in DATASETS if (clause := stability_clause(stability(results, dataset)[0], dataset))]
    if fell:
        text += (f" During training, validation PGD accuracy fell more than {FALL_POINTS} points below its best so "
                 f"far in {' and in '.join(fell)}; every figure is of the checkpoint chosen on validation.")
    return text + "\n"


def write_docs(results: dict) -> None:
    planned_runs = planned()
    done = [name for name in planned_runs if name in results]
    machines = sorted({f"{r['machine']}, {r['threads']} thread(s), torch {r['torch']}" for r in results.values()})
    lines = [f"Written by `python benchmarks/ablation_study.py` ({len(done)} of {len(planned_runs)} runs "
             f"done; still to come: {', '.join(n for n in planned_runs if n not in results) or 'none'}). "
             f"Machine(s): {'; '.join(machines) or '–'}. Clean and PGD-40 on the whole test split, "
             "AutoAttack (standard) on the first test images, the checkpoint chosen on validation."]
    if len(machines) > 1:
        lines[0] += (" Runs from different machines (each run's JSON names its own) also differ by their "
                     "kernels' rounding, which the seed spread holds only where a variant's seeds span machines.")
    adopted = [f"{name} is {entry['adopted_from']}" for name, entry in results.items() if entry.get("adopted_from")]
    if adopted:
        lines[0] += (" Trained by another benchmark from the same preset and seed, and evaluated here "
                     f"like every run: {'; '.join(adopted)}.")
    lines.append("")
    for dataset in DATASETS:
        measured = {name: entry for name, entry in results.items() if entry["dataset"] == dataset}
        if measured:
            check_comparable(measured)  # one --aa-n, radius and PGD-k for every run of a table
        lines += ablation_table(results, dataset)
        image = IMAGES / f"ablation_{dataset}.png"
        if draw(results, dataset, image):
            lines += ["", f"![{DATASETS[dataset][0]} ablation](images/{image.name})"]
        lines.append("")
    lines += [f"#### The budget: ADR-PGD minus PGD-AT (points, mean over seeds {' and '.join(map(str, BUDGET_SEEDS))}; "
              "verdicts against the base/full seed noise above)", "",
              *[line for dataset in DATASETS for line in budget_lines(results, dataset)], "",
              *stability_lines(results)]
    flagged = [f"- † {name}: {flag}" for name in done for flag in aa_flags(results.get(name))]
    if flagged:
        lines += ["† AutoAttack flagged these figures itself:", *flagged, ""]
    replace_block(DOCS, "ablation-study", "\n".join(lines),
                  "## Which ADR component does what (`python benchmarks/ablation_study.py`)\n")
    replace_block(README, "study", answer(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aa-n", type=int, default=500, help="AutoAttack on the first N test images")
    parser.add_argument("--work", default=str(Path(os.environ.get("ADRNET_CACHE", Path.home() / ".cache" / "adrnet"))
                                              / "ablation_study"))
    parser.add_argument("--only", nargs="+", help="these runs only (names from --list)")
    parser.add_argument("--docs-only", action="store_true", help="rewrite the docs from the saved results")
    parser.add_argument("--list", action="store_true", help="print the planned runs and whether each is done")
    args = parser.parse_args()
    runs, results = planned(), load_results()
    if args.list:
        for name, run in runs.items():
            adopted = f", adopts {ADOPTED[name]}" if name in ADOPTED else ""
            print(f"{'done' if name in results else '    '}  {name}  ({run.preset} {' '.join(run.overrides)}{adopted})")
        return
    unknown = sorted(set(args.only or ()) - set(runs))
    if unknown:
        parser.error(f"unknown run(s) {', '.join(unknown)}; --list shows them")
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in [] if args.docs_only else (args.only or runs):
        if name in results:
            continue
        print(f"== {name}", flush=True)
        write_json_atomic(RESULTS / f"{name}.json", run_one(name, runs[name], args))
        results = load_results()
        record_training(results, Path(args.work))
        write_docs(results)
    results = load_results()
    record_training(results, Path(args.work))
    write_docs(results)
    print(f"docs written from {len(results)} of {len(runs)} runs")


if __name__ == "__main__":
    main()
