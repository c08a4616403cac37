"""Which of ADR's terms stop SmallCNN from training at the paper's weights, and how.

The study behind the ADR presets (docs/training.md, "ADR's stability"). Every row
trains SmallCNN on MNIST from the same initialisation, on the same batches, with the
same ε schedule and the same PGD random starts; rows differ only in the optimiser,
the ADR weights (Bui et al., ECCV 2020) and the stabilising options. The rows are

- the base, ce_clean + ce_adv with every ADR weight 0 (the control);
- full ADR, all five weights 1 (the paper);
- the base plus each ADR term alone, and full ADR minus each term;
- full ADR with each remedy of ``objective.latent_norm`` / ``adr_warmup_epochs``;

under the paper's optimiser (SGD lr 0.01, momentum 0.9) and under Adam (lr 1e-3).
Every ``--log-every`` steps a row records the batch accuracies (clean and
adversarial, averaged over those steps), every term, and on a fixed probe of 512
training images the latent scale mean|z|, the share of dead latent units (zero on
every probe image), the share of the most predicted class, and the same-class and
different-class parts of both global terms (the different-class part is weighted
1 − 1/s = −1/99 and is unbounded below). At the end each row gets a verdict from
those traces (trains, latents blow up, latent units die, collapse to one class).

Usage: python benchmarks/adr_stability.py [--steps 1000] [--only adam] [--rows N,...]
Needs MNIST (`adrnet data fetch mnist`). Each row is written to
benchmarks/results/adr_stability/NN.json when it finishes (a row saved with the same
settings is never redone, so an interrupted study continues where it stopped, and two
processes may share the rows: `taskset -c 0 env OMP_NUM_THREADS=1 python ... &` and the
same on core 1 is the fastest use of 2 cores); the table goes to docs/adr_stability.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
from pathlib import Path

import torch

from adrnet.atomic import write_json_atomic
from adrnet.attacks import Linf, pgd
from adrnet.data import DATASETS, load_splits
from adrnet.models import build_model
from adrnet.objectives import adr_term_names, make_objective, terms
from quality import cpu_name  # benchmarks/quality.py: the CPU model beside absolute times

DOCS = Path(__file__).resolve().parents[1] / "docs"
RESULTS = Path(__file__).resolve().parent / "results" / "adr_stability"
OPTIMISERS = {"sgd": "SGD lr 0.01, momentum 0.9 (paper)", "adam": "Adam lr 1e-3"}
ADR_TERMS = adr_term_names()  # ADR's five (no plugin is imported here)
SHORT = {name: terms.TERMS[name].label for name in ADR_TERMS}
BATCH, PROBE, PROBE_ATTACKED, ATTACK_STEPS = 128, 512, 256, 5
#: A row stops early once its probe's mean|z| passes this (the trained base sits near
#: 0.5): it has blown up, and the remaining steps would only spend time (see early_stop).
BLOWN_UP = 1e3


def study_rows(warmup_steps: int) -> list[dict]:
    """Every row of the study: its label, optimiser, ADR weights and options."""
    base = {name: 0.0 for name in ADR_TERMS}
    full = {name: 1.0 for name in ADR_TERMS}
    rows = []
    for opt in OPTIMISERS:
        rows.append({"opt": opt, "label": "base (ADR weights 0)", "weights": base})
        rows.append({"opt": opt, "label": "full ADR (weights 1)", "weights": full})
        for name in ADR_TERMS:
            rows.append({"opt": opt, "label": f"base + {SHORT[name]}", "weights": {**base, name: 1.0}})
        for name in ADR_TERMS:
            rows.append({"opt": opt, "label": f"full − {SHORT[name]}", "weights": {**full, name: 0.0}})
        rows.append({"opt": opt, "label": "full, latent_norm rms", "weights": full,
                     "latent_norm": "rms"})
        rows.append({"opt": opt, "label": f"full, ADR warm-up {warmup_steps} steps",
                     "weights": full, "warmup": warmup_steps})
        rows.append({"opt": opt, "label": "full, latent_norm rms + warm-up", "weights": full,
                     "latent_norm": "rms", "warmup": warmup_steps})
        rows.append({"opt": opt, "label": "full, latent_norm l2", "weights": full,
                     "latent_norm": "l2"})
    for index, row in enumerate(rows):
        row["key"], row["index"] = f"{row['opt']}: {row['label']}", index
    return rows


def probe_stats(model, x, y, eps: float) -> dict:
    """Latent scale, dead units and class collapse on the probe images, and the parts
    of the global terms on its first ``PROBE_ATTACKED`` (eval mode; the adversarial
    side is the training attack at the current ε)."""
    model.eval()
    with torch.no_grad():
        logits, z = (t.float() for t in model(x, return_latent=True))
    share = torch.bincount(logits.argmax(1), minlength=logits.shape[1]).max().item() / len(y)
    out = {"mean_abs_z": z.abs().mean().item(), "dead_units": (z == 0).all(0).float().mean().item(),
           "top_class_share": share, "max_abs_logit": logits.abs().max().item()}
    n = PROBE_ATTACKED
    x_adv = training_attack(eps)(model, x[:n], y[:n])
    with torch.no_grad():
        logits_adv, z_adv = (t.float() for t in model(x_adv, return_latent=True))
        for name, fn, args in (("gc", terms.global_compactness, (z_adv, z[:n])),
                               ("gs", terms.global_smoothness, (logits_adv, logits[:n].softmax(1)))):
            same = fn(*args, y[:n], y[:n], scale=1.0).item()  # weight 1 - 1/1 = 0 across classes
            out[f"{name}_same"] = same
            out[f"{name}_diff"] = fn(*args, y[:n], y[:n], scale=0.99).item() - same
    model.train()
    return out


def training_attack(eps: float):
    """PGD-``ATTACK_STEPS`` at radius ε with step ε/2 (2.5 ε in all), random start."""
    return functools.partial(pgd, threat=Linf(eps), steps=ATTACK_STEPS, step_size=eps / 2)


def batches(x, y, steps: int):
    """The same ``steps`` batches for every row: seeded permutations, epoch after epoch."""
    generator = torch.Generator().manual_seed(0)
    done, order = 0, torch.empty(0, dtype=torch.long)
    while done < steps:
        if len(order) < BATCH:
            order = torch.randperm(len(x), generator=generator)
        index, order = order[:BATCH], order[BATCH:]
        yield done, x[index].contiguous(memory_format=torch.channels_last), y[index]
        done += 1


def run_row(row: dict, args, data, probe) -> dict:
    torch.manual_seed(0)
    info = DATASETS["mnist"]
    model = build_model("smallcnn", num_classes=10, in_shape=info.shape, mean=info.mean, std=info.std)
    model = model.to(memory_format=torch.channels_last).train()
    opt = (torch.optim.Adam(model.parameters(), 1e-3) if row["opt"] == "adam"
           else torch.optim.SGD(model.parameters(), 0.01, momentum=0.9))
    objective = make_objective("adr_pgd", latent_norm=row.get("latent_norm", "none"), **row["weights"])
    trace, window, started = [], [], time.time()
    for step, xb, yb in batches(*data, args.steps):
        eps = 0.3 * min(1.0, (step + 1) / args.eps_warmup)
        attack = training_attack(eps)
        weighted = objective.with_adr_factor(min(1.0, (step + 1) / row["warmup"]) if row.get("warmup") else 1.0)
        torch.manual_seed(1_000_003 + step)  # the same random starts and dropout in every row
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = weighted(model, xb, yb, attack)
        if not torch.isfinite(out["loss"]):
            trace.append({"step": step + 1, "stopped": "loss not finite"})
            break
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        window.append({"acc_clean": (out["logits_clean"].argmax(1) == yb).float().mean().item(),
                       "acc_adv": (out["logits_adv"].argmax(1) == yb).float().mean().item(),
                       **{n: out[n].item() for n in objective.active if n in out}})
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            record = {"step": step + 1, "eps": eps, **{k: sum(w[k] for w in window) / len(window)
                                                         for k in window[-1]}}
            record.update(probe_stats(model, *probe, eps))
            trace.append(record)
            window = []
            stop = early_stop(record)
            if stop:
                trace.append({"step": step + 1, "stopped": stop})
                break
            print(f"  {row['key']:<44} step {step + 1:5d} clean {record['acc_clean']:.3f} "
                  f"adv {record['acc_adv']:.3f} |z| {record['mean_abs_z']:.3g} "
                  f"dead {record['dead_units']:.2f} top {record['top_class_share']:.2f}", flush=True)
    return {**row, "trace": trace, "seconds": round(time.time() - started, 1)}


def early_stop(record: dict) -> str | None:
    """Why a row cannot come back, or None. Latents past ``BLOWN_UP``; or every latent
    unit dead on the probe: z = 0 means every ReLU before the last max-pool is off,
    so no gradient reaches the convolutions again."""
    if record["mean_abs_z"] > BLOWN_UP:
        return f"mean|z| above {BLOWN_UP:g}"
    if record["dead_units"] == 1.0:
        return "every latent unit dead"
    return None


def verdict(result: dict, base_peak: float) -> str:
    """What happened to a row, read from its trace: "trains" (last clean batch accuracy
    at least 0.5), or the failure events in order. The latent scale "runs away" when
    its peak passes 3x the base's peak (every healthy row stays under 1.5x)."""
    trace = [r for r in result["trace"] if "acc_clean" in r]
    stopped = next((r["stopped"] for r in result["trace"] if "stopped" in r), None)
    last, peak = trace[-1], max(r["mean_abs_z"] for r in trace)
    if not stopped and last["acc_clean"] >= 0.5:
        return "trains"
    events = []
    if peak > 3 * base_peak:
        events.append(f"latent scale runs away ({peak / base_peak:.3g}x the base's peak)")
    if stopped == "loss not finite":
        events.append("the loss overflows")
    elif stopped == "every latent unit dead" or last["dead_units"] >= 0.5:
        events.append("every latent unit dies" if stopped else "most latent units die")
    if last["top_class_share"] >= 0.9:
        events.append("predictions collapse to one class")
    return ", then ".join(events) or "stays at chance"


def left_chance(result: dict) -> int | None:
    """First logged step whose clean batch accuracy (window mean) reached 0.5."""
    return next((r["step"] for r in result["trace"] if r.get("acc_clean", 0) >= 0.5), None)


def table(results: dict, rows: list[dict], args) -> str:
    lines = ["| optimiser | row | clean | adv | mean\\|z\\| (max) | dead units | top class | "
             "gc same / diff | gs same / diff | left chance at | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        result = results.get(row["key"])
        if result is None:
            continue
        trace = [r for r in result["trace"] if "acc_clean" in r]
        mean = trace[-1]
        peak = max(r["mean_abs_z"] for r in trace)
        start = left_chance(result)
        lines.append(
            f"| {row['opt']} | {row['label']} | {mean['acc_clean']:.3f} | {mean['acc_adv']:.3f} | "
            f"{mean['mean_abs_z']:.3g} ({peak:.3g}) | {mean['dead_units']:.0%} | "
            f"{mean['top_class_share']:.0%} | {mean['gc_same']:.3g} / {mean['gc_diff']:.3g} | "
            f"{mean['gs_same']:.3g} / {mean['gs_diff']:.3g} | "
            f"{start if start is not None else 'never'} | {verdict(result, base_peak(results, row['opt']))} |")
    return "\n".join(lines)


def base_peak(results: dict, opt: str) -> float:
    """The largest probe mean|z| of the base row of ``opt`` (the healthy scale)."""
    base = results.get(f"{opt}: base (ADR weights 0)")
    return max(r["mean_abs_z"] for r in base["trace"] if "mean_abs_z" in r) if base else float("inf")


def findings(results: dict, rows: list[dict]) -> str:
    """The rows of each optimiser grouped by their first outcome: the study's answer."""
    lines = []
    for opt, name in OPTIMISERS.items():
        groups: dict[str, list[str]] = {}
        for row in rows:
            result = results.get(row["key"])
            if result is None or row["opt"] != opt:
                continue
            outcome = verdict(result, base_peak(results, opt)).split(" (")[0].split(", then")[0]
            groups.setdefault(outcome, []).append(row["label"])
        for outcome, labels in groups.items():
            lines.append(f"- {name}, {outcome}: {'; '.join(labels)}.")
    return "\n".join(lines)


def settings_of(args) -> dict:
    """What makes two runs of a row comparable (a saved row with other settings is redone)."""
    return {"steps": args.steps, "eps_warmup": args.eps_warmup, "adr_warmup": args.adr_warmup,
            "log_every": args.log_every, "attack_steps": ATTACK_STEPS, "torch": torch.__version__}


def row_file(row: dict) -> Path:
    return RESULTS / f"{row['index']:02d}.json"


def load_results(rows: list[dict], args) -> dict:
    """The finished rows saved with the current settings, by key."""
    results = {}
    for row in rows:
        path = row_file(row)
        if path.exists():
            saved = json.loads(path.read_text())
            if saved.get("settings") == settings_of(args) and saved.get("key") == row["key"]:
                results[row["key"]] = saved
    return results


def write_table(rows: list[dict], args) -> str:
    results = load_results(rows, args)
    text = (f"<!-- written by benchmarks/adr_stability.py; do not edit by hand -->\n"
            f"SmallCNN on MNIST, {args.steps} steps of batch {BATCH}, ε warmed up linearly to 0.3 over "
            f"{args.eps_warmup} steps, PGD-{ATTACK_STEPS} (step ε/2, random start) in eval mode, "
            f"bf16 + channels_last, objective adr_pgd (ce_clean + ce_adv + the named ADR weights), "
            f"seed 0, torch {torch.__version__}, {len(results)} of {len(rows)} rows done. "
            f"Accuracies are batch accuracies averaged over the last {args.log_every} steps; mean|z|, "
            f"dead units (zero on all {PROBE} probe images) and the top class's share of the probe's "
            f"predictions are on a fixed probe of training images held out of the stream, at the "
            f"last step; the global terms' same-/different-class parts are on its first "
            f"{PROBE_ATTACKED} images and their adversarial examples, on the raw latents z in every "
            f"row (the different-class part includes its weight 1 - 1/s). \"Left chance at\": the first logged step whose clean "
            f"batch accuracy reached 0.5.\n\n" + table(results, rows, args) + "\n\n"
            f"Outcomes (a row \"trains\" when its last clean batch accuracy is at least 0.5; "
            f"a latent scale \"runs away\" when its peak mean|z| passes 3x the base row's):\n\n"
            + findings(results, rows) + "\n")
    (DOCS / "adr_stability.md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--eps-warmup", type=int, default=400, help="steps for ε to reach 0.3")
    parser.add_argument("--adr-warmup", type=int, default=400, help="steps of the ADR-weight warm-up rows")
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--only", choices=tuple(OPTIMISERS), help="one optimiser's rows")
    parser.add_argument("--rows", help="comma-separated row indices (see --list)")
    parser.add_argument("--list", action="store_true", help="list the rows and exit")
    args = parser.parse_args()
    rows = study_rows(args.adr_warmup)
    if args.list:
        for row in rows:
            print(row["index"], row["key"])
        return
    chosen = [rows[int(i)] for i in args.rows.split(",")] if args.rows else rows
    chosen = [r for r in chosen if (not args.only or r["opt"] == args.only)
              and r["key"] not in load_results([r], args)]
    if not chosen:  # every row asked for is done: just rewrite the table
        print(write_table(rows, args))
        return
    x, y = load_splits("mnist").train
    probe = (x[-PROBE:].contiguous(memory_format=torch.channels_last), y[-PROBE:])
    data = (x[:-PROBE], y[:-PROBE])
    RESULTS.mkdir(parents=True, exist_ok=True)
    for row in chosen:
        if row["key"] in load_results([row], args) or not claim(row):
            continue
        print(row["key"], flush=True)
        result = {**run_row(row, args, data, probe), "settings": settings_of(args),
                  "machine": cpu_name(), "threads": torch.get_num_threads()}
        write_json_atomic(row_file(row), result)
        row_file(row).with_suffix(".claim").unlink(missing_ok=True)
        write_table(rows, args)
    print(write_table(rows, args))


def claim(row: dict) -> bool:
    """Take a row for this process (a claim file created exclusively, holding its PID);
    a claim whose process is gone is taken over, so a killed study simply continues."""
    path = row_file(row).with_suffix(".claim")
    for _ in range(2):
        try:
            with open(path, "x") as handle:
                handle.write(str(os.getpid()))
            return True
        except FileExistsError:
            try:
                os.kill(int(path.read_text() or 0), 0)
                return False
            except (ValueError, ProcessLookupError):
                path.unlink(missing_ok=True)  # its process died: take the row over
    return False


if __name__ == "__main__":
    main()
