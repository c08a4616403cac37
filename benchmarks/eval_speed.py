"""AutoAttack and PGD-50 in fp32 and in bf16 on the same models: time ratio, strength, and
the examples on which the two precisions disagree.

``adrnet eval --precision bf16`` attacks a bf16 channels_last copy of the model and lets
the fp32 model judge every point (adrnet/eval/precision.py). This benchmark measures what
that buys and what it costs, on the quick MNIST PGD-AT and ADR-PGD models (trained here
from configs/mnist_quick_{pgd_at,adr}.toml when absent, resumable):
- AutoAttack (standard, L∞ ε = 0.3) on the first ``--aa-n`` test images (1000);
- PGD-50 (the quick presets' eval step size) on the first ``--pgd-n`` (all 10000).
Both precisions attack the same chunks of images in turns (the first precision of each
chunk alternates), so machine noise hits both alike; the time ratio is fp32 seconds over
bf16 seconds, summed over the chunks, with the median of the per-chunk ratios beside it.
Accuracies are the fp32 model's in both precisions; a disagreement is an example robust
in one precision and broken in the other, listed by index.

Resumable: each chunk's result is appended to OUT/<model>.jsonl as it finishes (a chunk
of 32 AutoAttack images is about a minute in fp32 here); rerun the same command to
continue. When every chunk is done it writes docs/eval_speed.json and the section between
the eval-speed markers of docs/results.md.

Usage: python benchmarks/eval_speed.py [--aa-n 1000] [--pgd-n 10000] [--only adr_pgd]
Smoke test: --aa-n 8 --pgd-n 64 --chunk 4 --run adr_pgd=RUN_DIR --only adr_pgd
            --out /tmp/es --json /tmp/es.json --results /tmp/es.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from attack_speed import cpu_model, write_section

ROOT = Path(__file__).resolve().parents[1]
MARKERS = ("<!-- eval-speed:begin -->", "<!-- eval-speed:end -->")
PRESETS = {"pgd_at": "configs/mnist_quick_pgd_at.toml", "adr_pgd": "configs/mnist_quick_adr.toml"}
PRECISIONS = ("fp32", "bf16")
EPS = 0.3


def committed_best_only(run: Path) -> bool:
    """True for a run as a checkout holds it: the measured (best) checkpoint without the
    resumable last one, which git does not keep. Such a run is used as it is, never trained."""
    from adrnet.runs.checkpoint import checkpoint_files
    return (checkpoint_files(run, "best").path("meta").is_file()
            and not checkpoint_files(run, "last").path("meta").is_file())


def trained_run(name: str, out: Path, given: dict) -> Path:
    """The run directory of ``name``: given with --run, else trained (or resumed) here.
    Its best checkpoint (the one measured) is committed with the results, without the
    resumable last one (git keeps 3.8 MB a model, not 7.5 MB), so that a later session
    on another machine measures the same weights: a run holding a best checkpoint and no
    last is used as it is."""
    if name in given:
        return Path(given[name])
    run = out / "runs" / name
    if committed_best_only(run):
        return run
    subprocess.run([sys.executable, "-m", "adrnet", "train", "--config", str(ROOT / PRESETS[name]),
                    "--out", str(run), "--resume-if-exists", "--no-progress"], check=True)
    return run


def done_chunks(path: Path) -> dict:
    """(kind, start, precision) -> record of the chunks already measured."""
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(r["kind"], r["start"], r["precision"]): r for r in rows}


def attack_chunk(kind: str, precision: str, model, x, y, step_size) -> dict:
    """Robust flags (judged by the fp32 model), seconds and bf16-only points of one chunk."""
    from adrnet.attacks.autoattack import autoattack_eval
    from adrnet.eval import evaluate_model
    from adrnet.eval.precision import LowPrecision
    started = time.perf_counter()
    if kind == "autoattack":
        fast = LowPrecision(model) if precision == "bf16" else model
        result = autoattack_eval(fast, x, y, eps=EPS, version="standard", batch_size=len(y),
                                 judge=model if precision == "bf16" else None)
        robust, extra = result.robust, {"bf16_only": result.bf16_only, "warnings": result.warnings}
    else:
        result = evaluate_model(model, x, y, attacks=["pgd"], eps=EPS, steps=50,
                                step_size=step_size, batch_size=len(y), precision=precision)
        robust, extra = result.correct["worst_case"], {}
    return {"robust": robust.tolist(), "seconds": time.perf_counter() - started, **extra}


def measure(name: str, run: Path, args) -> list[dict]:
    """Every chunk of both attacks in both precisions for one model (resuming)."""
    from adrnet import load_model
    from adrnet.eval.evaluate import load_eval_data
    model, cfg = load_model(run, map_location="cpu")
    log = args.out / f"{name}.jsonl"
    have = done_chunks(log)
    plans = [("autoattack", args.aa_n, args.chunk), ("pgd-50", args.pgd_n, args.pgd_chunk)]
    for kind, n, chunk in plans:
        x, y = load_eval_data(cfg, "test", n, None)
        for index, start in enumerate(range(0, n, chunk)):
            order = PRECISIONS if index % 2 == 0 else PRECISIONS[::-1]
            for precision in order:
                if (kind, start, precision) in have:
                    continue
                torch.manual_seed(0)
                row = {"kind": kind, "start": start, "precision": precision,
                       **attack_chunk(kind, precision, model, x[start:start + chunk],
                                      y[start:start + chunk], cfg.eval.test_step_size)}
                with open(log, "a") as handle:
                    handle.write(json.dumps(row) + "\n")
                have[(kind, start, precision)] = row
                print(f"{name} {kind} [{start}:{start + chunk}] {precision}: {row['seconds']:.1f} s",
                      flush=True)
    return list(have.values())


def summarise(rows: list[dict]) -> dict:
    """Per attack: each precision's accuracy and seconds, the time ratio, disagreements."""
    out = {}
    for kind in dict.fromkeys(r["kind"] for r in rows):
        chunks = sorted({r["start"] for r in rows if r["kind"] == kind})
        by = {(r["start"], r["precision"]): r for r in rows if r["kind"] == kind}
        flags = {p: sum((by[(s, p)]["robust"] for s in chunks), []) for p in PRECISIONS}
        seconds = {p: sum(by[(s, p)]["seconds"] for s in chunks) for p in PRECISIONS}
        out[kind] = {
            "n": len(flags["fp32"]),
            "accuracy": {p: sum(flags[p]) / len(flags[p]) for p in PRECISIONS},
            "seconds": seconds, "ratio": seconds["fp32"] / seconds["bf16"],
            "median_chunk_ratio": statistics.median(by[(s, "fp32")]["seconds"] / by[(s, "bf16")]["seconds"]
                                                    for s in chunks),
            "disagreements": [i for i, (a, b) in enumerate(zip(flags["fp32"], flags["bf16"])) if a != b],
            "bf16_only": sum(by[(s, "bf16")].get("bf16_only", 0) for s in chunks),
            "warnings": sorted({w for r in by.values() for w in r.get("warnings", [])}),
        }
    return out


def markdown(record: dict) -> str:
    machine = record["machine"]
    lines = [MARKERS[0], "### Evaluation in bf16: speed and strength", "",
             f"Command: `{record['command']}` ({record['created']}). CPU: {machine['cpu']} (native "
             f"bf16: {'yes' if machine['native_bf16'] else 'no'}), {machine['threads']} threads, torch "
             f"{machine['torch']}. bf16: the attacks run on a bf16 channels_last copy; every point is "
             "judged by the fp32 model, so both columns are the fp32 model's accuracy. Time ratio: "
             "fp32 seconds / bf16 seconds over the same chunks, taken in turns (median per-chunk "
             "ratio beside it).", "",
             "| model | attack | n | fp32 accuracy | bf16 accuracy | disagreements | fp32 time | "
             "bf16 time | ratio (median) |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for model, attacks in record["models"].items():
        for kind, r in attacks.items():
            lines.append(f"| {model} | {kind} | {r['n']} | {100 * r['accuracy']['fp32']:.2f} | "
                         f"{100 * r['accuracy']['bf16']:.2f} | {len(r['disagreements'])} | "
                         f"{r['seconds']['fp32'] / 60:.1f} min | {r['seconds']['bf16'] / 60:.1f} min | "
                         f"{r['ratio']:.2f} ({r['median_chunk_ratio']:.2f}) |")
    aa = [r for attacks in record["models"].values() for k, r in attacks.items() if k == "autoattack"]
    if aa:
        fast = all(r["ratio"] >= 2.0 for r in aa)
        close = all(abs(r["accuracy"]["fp32"] - r["accuracy"]["bf16"]) * r["n"] <= 2 for r in aa)
        lines += ["", f"Target (AutoAttack in bf16 at least 2.0x as fast, robust accuracy within 2 "
                      f"examples of 1000): {'met' if fast and close else 'not met'} on this machine "
                      f"({'fast enough' if fast else 'too slow'}; "
                      f"{'as strong' if close else 'accuracy differs by more than 2 examples'}). "
                      "The examples on which the precisions disagree are listed in docs/eval_speed.json."]
    return "\n".join(lines + [MARKERS[1]])


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--aa-n", type=int, default=1000)
    p.add_argument("--pgd-n", type=int, default=10000)
    p.add_argument("--chunk", type=int, default=32, help="AutoAttack images per chunk")
    p.add_argument("--pgd-chunk", type=int, default=500)
    p.add_argument("--only", choices=tuple(PRESETS), action="append")
    p.add_argument("--run", action="append", default=[], metavar="NAME=RUN_DIR",
                   help="use this trained run for NAME instead of training the preset")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "eval_speed")
    p.add_argument("--json", type=Path, default=ROOT / "docs" / "eval_speed.json")
    p.add_argument("--results", type=Path, default=ROOT / "docs" / "results.md")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    given = dict(item.split("=", 1) for item in args.run)
    models = {}
    for name in args.only or PRESETS:
        models[name] = summarise(measure(name, trained_run(name, args.out, given), args))
    record = {"created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "command": " ".join(["python benchmarks/eval_speed.py",
                                   *(argv if argv is not None else sys.argv[1:])]),
              "machine": cpu_model(), "models": models}
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    write_section(args.results, markdown(record), *MARKERS)
    print(markdown(record))
    return record


if __name__ == "__main__":
    main()
