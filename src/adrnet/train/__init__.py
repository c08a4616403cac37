"""adrnet.train: the adversarial-training engine (PGD-AT, TRADES, MART, ADR).

    import adrnet
    from adrnet.config import load_config
    from adrnet.train import train
    result = train(load_config("configs/mnist_quick_adr.toml"), "runs/quick")
    model, cfg = adrnet.load_model("runs/quick", which="best")   # adrnet.runs

loop.py is the whole run, top to bottom; state.py builds what it works on, resume.py
saves and restores it, metrics.py records it.
"""

from adrnet.train.loop import RunResult, TrainingDiverged, train
from adrnet.train.signals import TrainingInterrupted

__all__ = ["RunResult", "TrainingDiverged", "TrainingInterrupted", "train"]
