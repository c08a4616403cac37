"""What a training run records: the epoch's running sums, the step and epoch records,
and the files they go to (``metrics.jsonl``, ``metrics.csv``, TensorBoard if installed).

Why running sums: the epoch averages must cover the whole training set, not one rank's
shard. Each rank keeps per-example sums of its own steps (loss, each term, correct
counts, examples, seconds); before averaging, and before a checkpoint stores them,
the sums are added over all ranks. Every rank must call :func:`sum_over_ranks` (it is
a collective), or the job hangs.

Why these formats: JSON lines are appended as training goes (one record per
``log_every`` steps, ``"kind": "step"``, and one per epoch, ``"kind": "epoch"``,
with validation clean/robust accuracy under the training threat model), so a
crash loses nothing already written; the CSV holds the epoch records for
spreadsheets and plots. The history is also kept in every checkpoint, and a
resumed run rewrites both files from it: records written after the checkpoint
it resumes from are dropped and produced again, so the files always match the
weights.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import torch

from adrnet.atomic import append_bytes, write_bytes_atomic
from adrnet.objectives import log_labels

JSONL, CSV = "metrics.jsonl", "metrics.csv"
COUNT_KEYS = ("examples", "correct_clean", "correct_adv")


def summed_keys() -> tuple[str, ...]:
    """The entries of a running dict that add up over ranks (the others, lr and ε, are
    the same on every rank): one list in a fixed order, because a collective needs the
    same tensor on every rank, read from the term registry so that every term, one a
    plugin registered included, can be summed."""
    return (*COUNT_KEYS, "seconds", *(f"sum_{name}" for name in log_labels()))


def scalars(numbers: dict) -> dict:
    """Every number of a step but its counts: the loss and each term the objective
    returned, all of them logged. One without a log label is refused, not dropped."""
    found = {name: value for name, value in numbers.items() if name not in COUNT_KEYS}
    unlabelled = sorted(found.keys() - log_labels().keys())
    if unlabelled:
        raise KeyError(f"the objective returned {unlabelled}, which the term registry "
                       "(adrnet.objectives.terms.TERMS) does not name: register them")
    return found


def accumulate(running: dict, numbers: dict, seconds: float, lr: float, eps: float) -> None:
    """Add one step's ``numbers`` (means over its batch) to ``running`` as sums."""
    n = numbers["examples"]
    running["examples"] = running.get("examples", 0) + n
    running["seconds"] = running.get("seconds", 0.0) + seconds
    running["lr"], running["eps"] = lr, eps
    for name, value in scalars(numbers).items():
        running[f"sum_{name}"] = running.get(f"sum_{name}", 0.0) + value * n
    for side in ("clean", "adv"):
        if numbers.get(f"correct_{side}") is not None:
            running[f"correct_{side}"] = running.get(f"correct_{side}", 0) + numbers[f"correct_{side}"]


def sum_over_ranks(running: dict, world_size: int) -> dict:
    """``running`` with its sums and counts added over all ranks; ``seconds`` becomes
    the sum of every rank's seconds. A single process gets a copy, untouched.
    A key missing on some ranks counts as zero there."""
    if world_size == 1:
        return dict(running)
    from adrnet.train.distributed import all_reduce_sum
    summed = summed_keys()
    values = [float(running.get(key, 0)) for key in summed]
    present = [float(key in running) for key in summed]
    total = all_reduce_sum(torch.tensor(values + present, dtype=torch.float64)).tolist()
    out = {key: value for key, value in running.items() if key not in summed}
    for index, key in enumerate(summed):
        if total[len(summed) + index] > 0:
            out[key] = round(total[index]) if key in COUNT_KEYS else total[index]
    return out


def whole_batch(numbers: dict, seconds: float, world_size: int) -> tuple[dict, float]:
    """One step's ``numbers`` over the global batch of every rank, and the ranks' mean
    ``seconds`` (a collective: every rank must call it, at the same steps).

    Why: each rank's numbers are means over its own shard; a step record or progress bar
    showing rank 0's would misdescribe the step (a 2-process ADR run logged 1.73 where
    the same step of one process is 1.19). Each mean is weighted by its shard's examples,
    as the epoch records are, so the values equal the single-process step's to float
    rounding. A single process gets its own numbers back, untouched."""
    if world_size == 1:
        return numbers, seconds
    running: dict = {}
    accumulate(running, numbers, seconds, lr=0.0, eps=0.0)
    total = sum_over_ranks(running, world_size)
    examples = max(total["examples"], 1)
    out = {name: total[f"sum_{name}"] / examples for name in scalars(numbers)}
    out.update({key: total.get(key) for key in COUNT_KEYS})
    return out, total["seconds"] / world_size


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


def _accuracies(numbers: dict) -> dict:
    """{"acc_clean", "acc_adv"} of one step (those whose logits the objective returned)."""
    return {f"acc_{side}": numbers[f"correct_{side}"] / numbers["examples"]
            for side in ("clean", "adv") if numbers.get(f"correct_{side}") is not None}


def step_record(numbers: dict, epoch: int, step: int, global_step: int, lr: float,
                eps: float) -> dict:
    """The ``"kind": "step"`` record of one step (``epoch`` 1-based, ``step`` done)."""
    record = {"kind": "step", "epoch": epoch, "step": step, "global_step": global_step,
              "lr": lr, "eps": eps}
    record.update(scalars(numbers))
    record.update(_accuracies(numbers))
    return record


def epoch_record(running: dict, world_size: int, epoch: int, global_step: int) -> dict:
    """The ``"kind": "epoch"`` record: averages of the running sums over every rank's
    examples (a collective: every rank must call it)."""
    running = sum_over_ranks(running, world_size)
    return {"kind": "epoch", "epoch": epoch, "global_step": global_step,
            "lr": running.get("lr"), "eps": running.get("eps"),
            **averages(running, world_size),
            "time_s": running.get("seconds", 0.0) / world_size}


def postfix(numbers: dict, seconds: float) -> dict:
    """The progress bar's short view of one step."""
    labels = log_labels()
    shown = {labels[k]: f"{v:.3f}" for k, v in scalars(numbers).items()}
    shown.update({k: f"{v:.2f}" for k, v in _accuracies(numbers).items()})
    shown["img/s"] = f"{numbers['examples'] / max(seconds, 1e-9):.0f}"
    return shown


def epoch_line(record: dict, epochs: int) -> str:
    """The line printed after each epoch."""
    parts = [f"epoch {record['epoch']}/{epochs}", f"loss {record['loss']:.4f}"]
    for key in ("acc_clean", "acc_adv", "val_acc_clean", "val_acc_robust"):
        if key in record:
            parts.append(f"{key} {record[key]:.4f}")
    if record.get("is_best"):
        parts.append("(best)")
    parts.append(f"{record['images_per_s']:.0f} img/s")
    return "  ".join(parts)


def _json_safe(record: dict) -> dict:
    """NaN/inf become strings so every line is strict JSON."""
    return {k: (repr(v) if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in record.items()}


class MetricsLog:
    """The run's metric history; writes only when ``enabled`` (rank 0)."""

    def __init__(self, run_dir: Path, records=(), enabled: bool = True, tb_step: int = 0):
        self.run_dir, self.enabled = Path(run_dir), enabled
        self.records = [dict(r) for r in records]
        self._tb = None
        if enabled:
            self._rewrite()
            self._tb = _tensorboard(self.run_dir, tb_step)

    def _rewrite(self) -> None:
        lines = "".join(json.dumps(_json_safe(r)) + "\n" for r in self.records)
        write_bytes_atomic(self.run_dir / JSONL, lines.encode())
        self._write_csv()

    def _write_csv(self) -> None:
        epochs = [r for r in self.records if r.get("kind") == "epoch"]
        columns = list(dict.fromkeys(k for r in epochs for k in r if k != "kind"))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(epochs)
        write_bytes_atomic(self.run_dir / CSV, buffer.getvalue().encode())

    def append(self, record: dict) -> None:
        self.records.append(dict(record))
        if not self.enabled:
            return
        append_bytes(self.run_dir / JSONL, (json.dumps(_json_safe(record)) + "\n").encode())
        if record.get("kind") == "epoch":
            self._write_csv()
        if self._tb is not None:
            step = record.get("global_step", 0)
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("epoch", "step", "global_step"):
                    self._tb.add_scalar(f"{record['kind']}/{key}", value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _tensorboard(run_dir: Path, purge_step: int):
    """A SummaryWriter in ``RUN/tensorboard`` when the tensorboard package is installed."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge_step or None)
