"""AutoAttack's Square follow-up on the MNIST recipe: does a stronger Square break points that
AutoAttack (standard) left robust?

AutoAttack flagged the recipe's evaluation (its Square, run after the gradient attacks, took
0.8 points more) and recommends running Square "with more iterations and restarts". This script
1. trains ``configs/mnist_recipe_overshoot_pgd5.toml`` into OUT/run (resuming an interrupted
   training);
2. evaluates its best checkpoint as a user would, ``adrnet eval RUN --attacks autoattack,square
   --n 1000 --square-queries Q --square-restarts R`` (fp32), both attacks resumable through
   their state files in the run directory: rerun the script after an interruption;
3. writes the section between the square-follow-up markers of docs/results.md: AutoAttack's
   figure, the follow-up's, the worst case over both and how many points only the follow-up
   broke, with the time each took.

Usage: python benchmarks/square_follow_up.py [--queries 10000] [--restarts 2] [--n 1000]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

from attack_speed import cpu_model, write_section
from eval_speed import committed_best_only

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/mnist_recipe_overshoot_pgd5.toml"
MARKERS = ("<!-- square-follow-up:begin -->", "<!-- square-follow-up:end -->")
TARGET = 0.92  # the recipe target: AutoAttack >= 92% on the first 1000 test images


def adrnet(*args) -> None:
    subprocess.run([sys.executable, "-m", "adrnet", *map(str, args)], check=True, cwd=ROOT)


def section(record: dict, run: Path, machine: dict) -> str:
    from adrnet.report.tables import evaluation_flags, square_follow_ups
    n, aa = record["n"], record["attack_accuracy"]["autoattack"]
    label = square_follow_ups(record)[0]
    follow_up, worst = record["attack_accuracy"][label], record["worst_case_accuracy"]
    only_follow_up = round((aa - worst) * n)
    stderr = math.sqrt(worst * (1 - worst) / n)
    verdict = "still met" if worst >= TARGET else "no longer met"
    settings = record["attack_settings"][label]
    # this call's time plus that of the earlier calls a resumed attack saved its batches in
    seconds = {name: spent + (record.get(name) or {}).get("resumed_seconds", 0.0)
               for name, spent in record.get("attack_seconds", {}).items()}
    flags = evaluation_flags(record).get("autoattack", [])
    minutes = lambda name: f"{seconds[name] / 60:.1f} min" if name in seconds else "time not recorded"
    lines = [MARKERS[0], "### AutoAttack's Square follow-up on the recipe", "",
             f"Written by `python benchmarks/square_follow_up.py` ({machine['cpu']}, {machine['threads']} "
             f"threads, fp32). The recipe (`{CONFIG}`, seed 0) retrained here, its best checkpoint "
             f"attacked on the first {n} test images at L∞ ε = {record['eps']:g}: "
             f"`adrnet eval RUN --attacks autoattack,square --n {n} --square-queries "
             f"{settings['square_queries']} --square-restarts {settings.get('square_restarts', 1)}`.", "",
             "| attack | robust accuracy | time |", "|---|---|---|",
             f"| AutoAttack (standard){' †' if flags else ''} | {100 * aa:.2f}% | {minutes('autoattack')} |",
             f"| Square alone, {settings['square_queries']} queries × {settings.get('square_restarts', 1)} "
             f"restart(s) (AutoAttack's: 5000 × 1) | {100 * follow_up:.2f}% | {minutes(label)} |",
             f"| worst case over both | **{100 * worst:.2f}%** | |", "",
             f"Clean accuracy on these {n}: {100 * record['clean_accuracy']:.2f}%. "
             f"The follow-up broke {only_follow_up} point(s) that AutoAttack left robust, so the recipe's "
             f"figure is {100 * worst:.2f}% (one standard error: {100 * stderr:.2f} points) and the recipe "
             f"target (>= 92%) is {verdict} on this run."]
    if flags:
        lines += ["", f"† AutoAttack's own flag on this run: {flags[0]}"]
    lines += ["", f"Raw record: `{os.path.relpath(run / 'eval_square.json', ROOT)}`.", MARKERS[1]]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--queries", type=int, default=10000)
    p.add_argument("--restarts", type=int, default=2)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "recipe_square")
    p.add_argument("--results", type=Path, default=ROOT / "docs" / "results.md")
    args = p.parse_args(argv)
    run = args.out / "run"
    if not committed_best_only(run):  # a checkout holds the attacked checkpoint only
        adrnet("train", "--config", CONFIG, "--out", run, "--resume-if-exists", "--no-progress")
    adrnet("eval", run, "--attacks", "autoattack,square", "--n", args.n, "--no-diagnostics",
           "--aa-state", run / "autoattack_state.json", "--square-queries", args.queries,
           "--square-restarts", args.restarts, "--square-state", run / "square_state.json",
           "--out", run / "eval_square.json")
    record = json.loads((run / "eval_square.json").read_text())
    write_section(args.results, section(record, run, cpu_model()), *MARKERS)
    print(f"wrote the square-follow-up section of {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
