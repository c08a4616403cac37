"""Ship the headline runs as ``zoo:NAME`` models: their best checkpoints as safetensors in
src/adrnet/zoo/, each with its config and the figures measured here on those very weights.

For each entry (ENTRIES below) the run is trained from its preset when it does not exist
yet (``adrnet train --resume-if-exists``: an interrupted training resumes on the next call),
then measured and shipped:
- ``clean_test``: clean accuracy on the whole test split, the figure ``adrnet eval zoo:NAME``
  reproduces;
- ``clean_first_500`` / ``pgd20_first_200``: the number of the first 500 test images
  classified correctly, and of the first 200 still correct under PGD-20 (the run's eval ε,
  step 2.5·ε/20, seed 0): tests/test_zoo.py checks them again on whatever CPU it runs;
- ``evaluations``: the worst-case figures of the run's recorded evaluations (eval files the
  entry names), with the attacks, n and any reliability flag, as measured there.
Then docs/zoo.md is rewritten from the records of every shipped model.

Usage: python benchmarks/zoo.py [--only NAME ...] [--no-train]
(--no-train ships only the entries whose runs exist.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

from attack_speed import cpu_model

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "benchmarks" / "results" / "zoo" / "runs"
DOC = ROOT / "docs" / "zoo.md"

#: name -> (preset, run directory, its evaluation files to record, description)
ENTRIES = {
    "mnist_pgd_at": ("configs/mnist_quick_pgd_at.toml", "benchmarks/results/eval_speed/runs/pgd_at", (),
                     "PGD-AT, quick MNIST preset (5 epochs), seed 0"),
    "mnist_adr_pgd": ("configs/mnist_quick_adr.toml", "benchmarks/results/eval_speed/runs/adr_pgd", (),
                      "ADR on PGD-AT, quick MNIST preset (5 epochs), seed 0"),
    "mnist_trades": ("configs/mnist_quick_trades.toml", None, (),
                     "TRADES, quick MNIST preset (5 epochs), seed 0"),
    "mnist_adr_trades": ("configs/mnist_quick_adr_trades.toml", None, (),
                         "ADR on TRADES, quick MNIST preset (5 epochs), seed 0"),
    "fashion_mnist_pgd_at": ("configs/fashion_mnist_quick_pgd_at.toml", None, (),
                             "PGD-AT, quick Fashion-MNIST preset, seed 0"),
    "fashion_mnist_adr_pgd": ("configs/fashion_mnist_quick_adr.toml", None, (),
                              "ADR on PGD-AT, quick Fashion-MNIST preset, seed 0"),
    "mnist_recipe": ("configs/mnist_recipe_overshoot_pgd5.toml", "benchmarks/results/recipe_square/run",
                     ("eval_square.json",),
                     "the MNIST recipe (PGD-AT with AWP, 22 epochs, trained at eps 0.4), seed 0"),
}


def run_dir(name: str) -> Path:
    given = ENTRIES[name][1]
    return ROOT / given if given else RUNS / name


def has_best(run: Path) -> bool:
    return (run / "checkpoints" / "best.json").is_file()


def train(name: str) -> None:
    """Train (or resume) the entry's run from its preset."""
    subprocess.run([sys.executable, "-m", "adrnet", "train", "--config", str(ROOT / ENTRIES[name][0]),
                    "--out", str(run_dir(name)), "--resume-if-exists", "--no-progress"], check=True,
                   cwd=ROOT)


def measured_figures(model, cfg) -> dict:
    """The figures of the module docstring that are measured here."""
    from adrnet.data import load
    from adrnet.eval import evaluate_model
    from adrnet.eval.robust import predict
    x, y = load(cfg.data).test
    correct = predict(model, x).eq(y)
    eps = cfg.eval_eps
    pgd = evaluate_model(model, x[:200], y[:200], attacks=("pgd",), eps=eps, norm=cfg.attack.threat,
                         steps=20, seed=0)
    return {"clean_test": {"correct": int(correct.sum()), "n": len(y)},
            "clean_first_500": {"correct": int(correct[:500].sum()), "n": 500},
            "pgd20_first_200": {"correct": round(pgd.worst_case_accuracy * 200), "n": 200,
                                "eps": eps, "norm": cfg.attack.threat, "steps": 20, "seed": 0}}


def recorded_evaluations(run: Path, files: tuple[str, ...]) -> list[dict]:
    """The worst-case figures of the run's named eval files."""
    from adrnet.report.tables import evaluation_flags
    found = []
    for file in files:
        record = json.loads((run / file).read_text())
        found.append({"file": file, "n": record["n"], "eps": record["eps"], "norm": record["norm"],
                      "precision": record.get("precision", "fp32"),
                      "clean_accuracy": record["clean_accuracy"],
                      "attack_accuracy": record["attack_accuracy"],
                      "worst_case_accuracy": record["worst_case_accuracy"],
                      "flags": evaluation_flags(record)})
    return found


def ship(name: str) -> dict:
    from adrnet.runs import load_checkpoint, resolve_checkpoint
    from adrnet.runs.checkpoint import read_checkpoint
    from adrnet.runs.zoo import write_zoo_entry
    run = run_dir(name)
    checkpoint = read_checkpoint(resolve_checkpoint(run))
    loaded = load_checkpoint(run)
    if loaded.weights_sha256 != checkpoint[1]["files"]["weights"]["sha256"]:
        raise SystemExit(f"{run}: its best checkpoint changed while it was measured; rerun")
    figures = {**measured_figures(loaded.model, loaded.cfg),
               "evaluations": recorded_evaluations(run, ENTRIES[name][2]),
               "machine": {**cpu_model(), "threads": torch.get_num_threads(),
                           "torch": torch.__version__, "python": platform.python_version()}}
    write_zoo_entry(checkpoint, name, figures, ENTRIES[name][3])
    return figures


def percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.2f}%"


def zoo_table() -> str:
    """docs/zoo.md: every shipped model's record as a table."""
    from adrnet.runs.zoo import zoo_names, zoo_record
    lines = ["# Shipped models", "",
             "Written by `python benchmarks/zoo.py` from the records in src/adrnet/zoo/ (do not edit by hand).",
             "Each is the best checkpoint of a headline run, its weights as safetensors (no code runs",
             "when they load): `adrnet eval zoo:NAME`, or `adrnet.load_model(\"zoo:NAME\")` in Python.",
             "Clean is measured on the whole test split, the figure `adrnet eval zoo:NAME` reproduces;",
             "PGD-20 on the first 200 test images (seed 0), the figure tests/test_zoo.py checks again.", "",
             "| model | data | objective | clean | PGD-20 (200) | recorded evaluations | what it is |",
             "|---|---|---|---|---|---|---|"]
    machines, flags = set(), []
    for name in zoo_names():
        record = zoo_record(name)
        cfg, fig = record["config"], record["figures"]
        pgd = fig["pgd20_first_200"]
        evaluations = "; ".join(
            f"{' + '.join(e['attack_accuracy'])}: {100 * e['worst_case_accuracy']:.2f}% of {e['n']}"
            f" ({e['norm']} ε={e['eps']:g}){' †' if e['flags'] else ''}" for e in fig["evaluations"]) or "—"
        lines.append(f"| `zoo:{name}` | {cfg['data']['name']} | {cfg['objective']['name']} | "
                     f"{percent(fig['clean_test']['correct'], fig['clean_test']['n'])} | "
                     f"{percent(pgd['correct'], pgd['n'])} (ε={pgd['eps']:g}) | {evaluations} | "
                     f"{record['description']} |")
        m = fig["machine"]
        machines.add(f"{m['cpu']}, {m['threads']} threads, torch {m['torch']}")
        flags += [f"- `zoo:{name}`, {e['file']}, {label}: {flag}" for e in fig["evaluations"]
                  for label, raised in e["flags"].items() for flag in raised]
    if flags:
        lines += ["", "† a reliability flag AutoAttack raised on that evaluation:", *flags]
    lines += ["", f"Measured on: {'; '.join(sorted(machines))}.",
              "The quick runs' AutoAttack figures are in docs/results.md (evaluation speed)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", choices=sorted(ENTRIES), help="these entries only")
    p.add_argument("--no-train", action="store_true", help="ship only entries whose runs exist")
    args = p.parse_args(argv)
    os.chdir(ROOT)  # data found as `adrnet train` here finds it (./data first)
    for name in args.only or ENTRIES:
        if not has_best(run_dir(name)):
            if args.no_train:
                print(f"{name}: no run at {run_dir(name)}, skipped (--no-train)")
                continue
            train(name)
        figures = ship(name)
        print(f"{name}: shipped, clean {figures['clean_test']['correct']}/{figures['clean_test']['n']}, "
              f"PGD-20 {figures['pgd20_first_200']['correct']}/200")
    DOC.write_text(zoo_table())
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
