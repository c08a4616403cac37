"""adrnet.train: the adversarial-training engine (PGD-AT, TRADES, ADR) and its checkpoints.

    from adrnet.config import load_config
    from adrnet.train import train, load_model
    result = train(load_config("configs/mnist_quick_adr.toml"), "runs/quick")
    model, cfg = load_model("runs/quick", which="best")
"""

from adrnet.train.checkpoint import checkpoint_files
from adrnet.train.load import LoadedCheckpoint, load_checkpoint, load_model, resolve_checkpoint
from adrnet.train.loop import RunResult, has_checkpoint, train
from adrnet.train.signals import TrainingInterrupted
from adrnet.train.step import TrainingDiverged

__all__ = ["LoadedCheckpoint", "RunResult", "TrainingDiverged", "TrainingInterrupted",
           "checkpoint_files", "has_checkpoint", "load_checkpoint", "load_model",
           "resolve_checkpoint", "train"]
