"""Data-parallel ADR: exactness of the gathered objective and what the gather costs.

Why: under DDP the global ADR terms (Bui et al., ECCV 2020) must pair each rank's
adversarial rows with the clean columns of all ranks (docs/method.md, "Under
data-parallel training"). This script, run on N processes, reports

1. exactness: the largest relative difference between the parameter gradients of
   one DDP backward of ``adr_pgd`` (SmallCNN in eval mode so dropout does not
   differ; L-inf PGD without random start) and the single-process gradients on
   the full batch, with the gather and without it;
2. the median time of ``gather_detached`` for the three tensors an ADR step
   gathers (labels, latent z of width K, class probabilities);
3. the median time of one ADR-PGD training step (PGD-k attack, two forward
   passes, backward, SGD) per rank with and without the gather.

Usage: python benchmarks/bench_ddp.py [--procs 2] [--batch 64] [--steps 10]
(re-launches itself under ``torch.distributed.run --standalone``; ``--batch`` is
per rank). Results are printed by rank 0 and written to docs/bench_ddp.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from adrnet.attacks import Linf, pgd
from adrnet.data import DATASETS
from adrnet.models import build_model
from adrnet.objectives import make_objective
from adrnet.train import distributed as D

OUT = Path(__file__).resolve().parents[1] / "docs" / "bench_ddp.json"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, default=2, help="processes (gloo on CPU)")
    parser.add_argument("--batch", type=int, default=64, help="examples per rank")
    parser.add_argument("--steps", type=int, default=10, help="PGD steps of the attack")
    parser.add_argument("--repeats", type=int, default=5, help="timed training steps")
    parser.add_argument("--out", type=Path, default=OUT)
    return parser.parse_args(argv)


def smallcnn():
    info = DATASETS["mnist"]
    return build_model("smallcnn", num_classes=info.num_classes, in_shape=info.shape,
                       mean=info.mean, std=info.std)


def make_attack(steps):
    return lambda model, x, y: pgd(model, x, y, threat=Linf(0.3), steps=steps,
                                   step_size=0.01, random_start=False)


def batch(world, per_rank, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(world * per_rank, 1, 28, 28, generator=generator)
    return x, torch.randint(0, 10, (world * per_rank,), generator=generator)


def grads_of(model, x, y, attack, gather):
    model.zero_grad(set_to_none=True)
    make_objective("adr_pgd")(model, x, y, attack, gather=gather)["loss"].backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def exactness(info, args) -> dict:
    torch.manual_seed(0)
    net = smallcnn().eval()
    x, y = batch(info.world_size, args.batch)
    attack = make_attack(2)
    mine = slice(info.rank * args.batch, (info.rank + 1) * args.batch)
    reference = grads_of(copy.deepcopy(net), x, y, attack, None)
    scale = reference.abs().max()
    result = {}
    for name, gather in (("with_gather", D.gather_detached), ("without_gather", None)):
        ddp = D.wrap_ddp(copy.deepcopy(net), info)
        diff = (grads_of(ddp, x[mine], y[mine], attack, gather) - reference).abs().max()
        result[f"max_rel_grad_diff_{name}"] = float(D.all_reduce_sum(diff) / scale / 2)
    return result


def median_seconds(fn, repeats) -> float:
    times = []
    for _ in range(repeats):
        D.barrier()
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def gather_cost(info, args) -> dict:
    total = args.batch * info.world_size
    tensors = {"y": torch.zeros(args.batch, dtype=torch.int64),
               "z (K=1024)": torch.rand(args.batch, 1024), "p (C=10)": torch.rand(args.batch, 10)}
    return {f"gather_ms {name}, B={total}": 1e3 * median_seconds(
        lambda t=t: D.gather_detached(t), 50) for name, t in tensors.items()}


def step_cost(info, args) -> dict:
    torch.manual_seed(0)
    ddp = D.wrap_ddp(smallcnn(), info)
    optimiser = torch.optim.SGD(ddp.parameters(), lr=0.01, momentum=0.9)
    objective, attack = make_objective("adr_pgd"), make_attack(args.steps)
    x, y = batch(1, args.batch, seed=info.rank + 1)
    results = {}
    for name, gather in (("with_gather", D.gather_detached), ("without_gather", None)):
        def step():
            loss = objective(ddp, x, y, attack, gather=gather)["loss"]
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        step()  # warm-up
        results[f"step_s_{name}"] = median_seconds(step, args.repeats)
    results["gather_overhead"] = results["step_s_with_gather"] / results["step_s_without_gather"]
    return results


def main(argv=None) -> None:
    args = parse_args(argv)
    if "WORLD_SIZE" not in os.environ:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={args.procs}", __file__, *sys.argv[1:]]
        raise SystemExit(subprocess.call(command))
    info = D.setup_distributed("cpu")
    try:
        report = {"world_size": info.world_size, "batch_per_rank": args.batch,
                  "pgd_steps": args.steps, "threads_per_rank": torch.get_num_threads(),
                  "torch": torch.__version__}
        for part in (exactness, gather_cost, step_cost):
            report.update(part(info, args))
        if info.is_main:
            for key, value in report.items():
                print(f"{key:40s} {value:.4g}" if isinstance(value, float) else
                      f"{key:40s} {value}")
            args.out.write_text(json.dumps(report, indent=2) + "\n")
            print(f"written to {args.out}")
        D.barrier()
    finally:
        D.cleanup()


if __name__ == "__main__":
    main()
