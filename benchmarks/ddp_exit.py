"""How often a two-process gloo job that finished its work still exits with an error.

Why: a gloo worker thread that releases a collective's tensor while the interpreter is
finalizing aborts the process after the work is done ("terminate called without an
active exception"; see :func:`adrnet.train.distributed._drain`). It is a race, so no
single test shows it. Each trial here launches the smallest program that has it, under
``torchrun --standalone --nproc_per_node=2``: wrap a layer in DistributedDataParallel
(which keeps the default group alive past ``destroy_process_group``), run three
all-reduces, and leave either the plain way (``barrier`` then ``destroy_process_group``)
or through ``adrnet.train.distributed.cleanup``. The two ways alternate trial by trial,
so both see the same machine load. A trial fails when torchrun's exit status is not 0.

Usage: python benchmarks/ddp_exit.py [--trials 80]
Prints the failed trials of each way and the first failure's last lines, and writes the
counts to docs/ddp_exit.json.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
from pathlib import Path

WAYS = ("barrier_then_destroy", "adrnet_cleanup")
RESULT = Path(__file__).resolve().parents[1] / "docs" / "ddp_exit.json"


def trial(way: str) -> None:
    """One rank of one trial (run by torchrun)."""
    import torch
    import torch.distributed as dist
    from torch import nn

    from adrnet.train.distributed import cleanup
    dist.init_process_group("gloo")
    wrapped = nn.parallel.DistributedDataParallel(nn.Linear(3, 2))
    del wrapped
    for _ in range(3):
        dist.all_reduce(torch.ones(1000))
    if way == "adrnet_cleanup":
        cleanup()
    else:
        dist.barrier()
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=80, help="trials of each way")
    parser.add_argument("--way", choices=WAYS, help=argparse.SUPPRESS)  # a rank of a trial
    args = parser.parse_args()
    if args.way:
        trial(args.way)
        return
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    env["OMP_NUM_THREADS"] = "1"
    failures, first_failure = dict.fromkeys(WAYS, 0), None
    for number in range(args.trials):
        for way in WAYS:
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                       "--nproc_per_node=2", __file__, "--way", way]
            done = subprocess.run(command, env=env, capture_output=True, text=True,
                                  timeout=120)
            if done.returncode != 0:
                failures[way] += 1
                first_failure = first_failure or (done.stdout + done.stderr)[-1500:]
        print(f"trial {number + 1}/{args.trials}: failed so far {failures}", flush=True)
    for way in WAYS:
        print(f"{way}: {failures[way]} of {args.trials} trials exited with an error")
    import torch
    from quality import cpu_name  # benchmarks/quality.py: the CPU model beside results

    from adrnet.atomic import write_json_atomic
    write_json_atomic(RESULT, {
        "command": f"python benchmarks/ddp_exit.py --trials {args.trials}",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": cpu_name(),
        "torch": torch.__version__, "trials": args.trials, "failed_trials": failures})
    if first_failure:
        print("first failure ended with:\n" + first_failure)


if __name__ == "__main__":
    main()
