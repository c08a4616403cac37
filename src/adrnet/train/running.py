"""The running sums of one training epoch and their sum over data-parallel ranks.

Why a module of its own: the epoch averages logged for PGD-AT, TRADES and ADR
(Bui et al., ECCV 2020) must cover the whole training set, not one rank's
shard. Each rank keeps per-example sums of its own steps (loss, each term,
correct counts, examples, seconds); before averaging, and before a checkpoint
stores them, the sums are added over all ranks. Every rank must call
:func:`sum_over_ranks` (it is a collective), or the job hangs.
"""

from __future__ import annotations

import torch

SHORT_NAMES = {"loss": "loss", "ce_clean": "ce", "ce_adv": "ce_adv", "trades_kl": "kl",
               "local_compactness": "lc", "local_smoothness": "ls",
               "global_compactness": "gc", "global_smoothness": "gs", "entropy": "H",
               "mart_bce": "bce", "mart_kl": "mkl"}
COUNT_KEYS = ("examples", "correct_clean", "correct_adv")
#: The entries of a running dict that add up over ranks (the others, lr and ε, are
#: the same on every rank).
SUMMED_KEYS = (*COUNT_KEYS, "seconds", *(f"sum_{name}" for name in SHORT_NAMES))


def accumulate(running: dict, numbers: dict, seconds: float, lr: float, eps: float) -> None:
    """Add one step's ``numbers`` (means over its batch) to ``running`` as sums."""
    n = numbers["examples"]
    running["examples"] = running.get("examples", 0) + n
    running["seconds"] = running.get("seconds", 0.0) + seconds
    running["lr"], running["eps"] = lr, eps
    for name, value in numbers.items():
        if name in SHORT_NAMES:
            running[f"sum_{name}"] = running.get(f"sum_{name}", 0.0) + value * n
        elif name.startswith("correct_") and value is not None:
            running[name] = running.get(name, 0) + value


def sum_over_ranks(running: dict, world_size: int) -> dict:
    """``running`` with its sums and counts added over all ranks; ``seconds`` becomes
    the sum of every rank's seconds. A single process gets a copy, untouched.
    A key missing on some ranks counts as zero there."""
    if world_size == 1:
        return dict(running)
    from adrnet.train.distributed import all_reduce_sum
    values = [float(running.get(key, 0)) for key in SUMMED_KEYS]
    present = [float(key in running) for key in SUMMED_KEYS]
    total = all_reduce_sum(torch.tensor(values + present, dtype=torch.float64)).tolist()
    out = {key: value for key, value in running.items() if key not in SUMMED_KEYS}
    for index, key in enumerate(SUMMED_KEYS):
        if total[len(SUMMED_KEYS) + index] > 0:
            out[key] = round(total[index]) if key in COUNT_KEYS else total[index]
    return out


def averages(running: dict, world_size: int = 1) -> dict:
    """Epoch averages (per example) of running sums already added over the ranks;
    images/s counts every rank's images per second of (mean) step time."""
    n = max(running.get("examples", 0), 1)
    out = {name[4:]: value / n for name, value in running.items() if name.startswith("sum_")}
    for side in ("clean", "adv"):
        if f"correct_{side}" in running:
            out[f"acc_{side}"] = running[f"correct_{side}"] / n
    seconds = running.get("seconds", 0.0) / world_size
    out["images_per_s"] = running.get("examples", 0) / max(seconds, 1e-9)
    return out
