"""Time one training step of PGD-AT, TRADES and ADR-PGD, and the ADR terms' memory.

A step is what the trainer does per batch: the attack (PGD-10), the forward
passes of the objective, backward and an SGD update, for SmallCNN on a batch
of 128 MNIST-shaped images. Each configuration is timed in turns (round
robin, so machine noise hits all alike) and the median is reported with the
ratio to PGD-AT of the same precision. Targets (issue 2): adr_pgd / pgd_at ≤
1.10, reasoning that the extra clean forward/backward alone costs 12/11 ≈ 1.09.
That floor assumes a training forward/backward costs what one attack step
costs; the "floor" row measures it directly (PGD-AT plus the clean pass, no ADR
term), so adr_pgd / floor is the price of the ADR terms themselves.

The memory part runs the five ADR terms forward and backward at batch 512,
K = 1024 in a fresh subprocess and reports the rise of the process's peak
resident memory (ru_maxrss) above the inputs: target ≤ 64 MiB, i.e. no
b×b×K tensor (which alone would be 1 GiB). ``--naive`` also measures the
naive pairwise L1 for comparison, to show that the meter can see such a tensor.

Usage: python benchmarks/bench_step.py [--repeats 7] [--batch 128] [--naive]
Results are printed and written to docs/bench_step.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from adrnet.attacks import Linf, pgd
from adrnet.data import DATASETS
from adrnet.models import build_model
from adrnet.objectives import adr_terms, make_objective

# name -> (preset, weight overrides). "floor" is PGD-AT plus the clean pass that every
# ADR objective needs (the reference's own baseline ce_clean + ce_adv): ADR can be no
# cheaper than it, so adr_pgd / floor isolates the cost of the five ADR terms.
OBJECTIVES = {
    "pgd_at": ("pgd_at", {}),
    "floor": ("pgd_at", {"ce_clean": 1.0}),
    "trades": ("trades", {}),
    "adr_pgd": ("adr_pgd", {}),
}
MODES = {"fp32": (False, None), "channels_last+bf16": (True, torch.bfloat16)}


def make_step(name: str, mode: str, batch: int):
    """A closure running one full training step, with its own model and optimiser."""
    channels_last, dtype = MODES[mode]
    info = DATASETS["mnist"]
    torch.manual_seed(0)
    model = build_model("smallcnn", num_classes=10, in_shape=info.shape, mean=info.mean, std=info.std)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format).train()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    preset, weights = OBJECTIVES[name]
    objective = make_objective(preset, **weights)
    attack = functools.partial(pgd, threat=Linf(0.3), steps=10, step_size=0.03, loss=objective.attack_loss)
    x = torch.rand(batch, *info.shape).contiguous(memory_format=memory_format)
    y = torch.randint(0, 10, (batch,))

    def step():
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            loss = objective(model, x, y, attack)["loss"]
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    return step


def time_steps(repeats: int, batch: int) -> dict:
    """Median seconds per step for every (objective, mode), measured round robin."""
    steps = {(n, m): make_step(n, m, batch) for m in MODES for n in OBJECTIVES}
    for step in steps.values():  # warm-up: allocator, oneDNN kernels
        step()
    samples = {key: [] for key in steps}
    for _ in range(repeats):
        for key, step in steps.items():
            start = time.perf_counter()
            step()
            samples[key].append(time.perf_counter() - start)
    return {key: statistics.median(values) for key, values in samples.items()}


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_child(batch: int, dim: int, naive: bool) -> None:
    """Run in a fresh process: peak RSS rise of the ADR terms' forward + backward."""
    torch.manual_seed(0)
    z_clean, logits_clean = torch.randn(batch, dim), torch.randn(batch, 10)
    z_adv = torch.randn(batch, dim, requires_grad=True)
    logits_adv = torch.randn(batch, 10, requires_grad=True)
    y = torch.randint(0, 10, (batch,))
    before = _peak_mib()
    if naive:
        total = (z_adv[:, None] - z_clean[None]).abs().mean()
    else:
        total = sum(adr_terms(z_clean, logits_clean, z_adv, logits_adv, y).values())
    total.backward()
    print(json.dumps({"extra_mib": _peak_mib() - before}))


def measure_memory(batch: int, dim: int, naive: bool) -> float:
    command = [sys.executable, __file__, "--memory-child", str(batch), str(dim)] + (["--naive"] if naive else [])
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["extra_mib"]


def report(times: dict, memory: dict, args) -> dict:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"SmallCNN, PGD-10, median of {args.repeats}")
    print(f"{'mode':<20}{'objective':<10}{'s/step':>8}{'ratio':>8}{'/floor':>8}")
    rows = []
    for mode in MODES:
        base, floor = times[("pgd_at", mode)], times[("floor", mode)]
        for name in OBJECTIVES:
            seconds = times[(name, mode)]
            rows.append({"mode": mode, "objective": name, "seconds": seconds,
                         "ratio_to_pgd_at": seconds / base, "ratio_to_floor": seconds / floor})
            print(f"{mode:<20}{name:<10}{seconds:>8.3f}{seconds / base:>8.2f}{seconds / floor:>8.2f}")
    for label, mib in memory.items():
        print(f"ADR terms extra peak memory ({label}): {mib:.1f} MiB")
    return {"steps": rows, "memory_mib": memory, "repeats": args.repeats, "batch": args.batch,
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--naive", action="store_true", help="also measure the naive b×b×K pairwise L1")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "bench_step.json"))
    parser.add_argument("--memory-child", nargs=2, type=int, metavar=("BATCH", "DIM"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        return memory_child(*args.memory_child, args.naive)
    memory = {"adr_terms b=512 K=1024": measure_memory(512, 1024, naive=False)}
    if args.naive:
        memory["naive pairwise L1 b=512 K=1024"] = measure_memory(512, 1024, naive=True)
    results = report(time_steps(args.repeats, args.batch), memory, args)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
