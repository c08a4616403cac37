"""adrnet.runs: the files of a run directory, below both training and evaluation.

    from adrnet import load_model            # the same function
    model, cfg = load_model("runs/quick", which="best")

A run directory holds ``config.toml``, ``metrics.jsonl``/``.csv`` and
``checkpoints/{last,best}.*`` (checkpoint.py: how the files are written and verified;
load.py: how a user's path is resolved and a model rebuilt from them; records.py: how
metrics.jsonl, eval.json and config.toml are read back for ``adrnet report``;
directory.py: which directories a new run may start in; weights.py: a model trained
elsewhere, from its factory and a weights file; zoo.py: the models shipped with adrnet,
``load_model("zoo:NAME")``). Evaluation,
the report and user code read runs from here without importing the trainer.
"""

from adrnet.runs.checkpoint import CHECKPOINT_DIR, CheckpointFiles, checkpoint_files
from adrnet.runs.load import (WHICH, LoadedCheckpoint, has_checkpoint, load_checkpoint,
                              load_model, resolve_checkpoint)
from adrnet.runs.records import RunRecords, read_run

__all__ = ["CHECKPOINT_DIR", "WHICH", "CheckpointFiles", "LoadedCheckpoint", "RunRecords",
           "checkpoint_files", "has_checkpoint", "load_checkpoint", "load_model", "read_run",
           "resolve_checkpoint"]
