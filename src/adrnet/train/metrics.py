"""Training metrics on disk: ``metrics.jsonl``, ``metrics.csv``, TensorBoard if installed.

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

from adrnet.atomic import append_bytes, write_bytes_atomic

JSONL, CSV = "metrics.jsonl", "metrics.csv"


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
