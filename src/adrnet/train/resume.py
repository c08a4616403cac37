"""Saving and restoring everything a run needs to continue bit for bit.

Why: a resumed adversarial-training run (PGD-AT, TRADES or ADR) must continue
exactly where it stopped: same weights and BatchNorm statistics, same optimiser
momentum, same position in the epoch (the batches and the PGD random starts
are functions of (seed, epoch, step)), same running sums for the epoch's
averages, same metric history and best-so-far. See ``checkpoint.py`` for how the
files are written and verified.
"""

from __future__ import annotations

import platform
import time

import torch

import adrnet
from adrnet.config import config_diff, config_to_dict
from adrnet.errors import CheckpointError, ConfigError
from adrnet.train.builders import model_identity
from adrnet.train.checkpoint import (
    checkpoint_files, encode_state, encode_weights, open_checkpoint, read_state, read_weights,
    save_checkpoint,
)
from adrnet.train.load import check_architecture, config_of

#: Keys a resumed run may change: they do not alter the weights it computes
#: (train.epochs extends or shortens the run; cosine/one-cycle follow the new length).
RESUMABLE_CHANGES = ("train.epochs", "train.device", "train.progress", "train.num_threads",
                     "train.checkpoint_every", "train.log_every", "eval.")


def _meta(run, which: str) -> dict:
    return {
        "which": which, "epoch": run.epoch, "step": run.step, "global_step": run.global_step,
        "best": {"metric": "val_acc_robust", "value": run.best_value, "epoch": run.best_epoch},
        "running": run.running, "metrics": run.metrics.records,
        "config": config_to_dict(run.cfg), "model": model_identity(run.net, run.cfg),
        "device": str(run.device), "world_size": run.info.world_size,
        "adrnet_version": adrnet.__version__, "torch_version": torch.__version__,
        "python_version": platform.python_version(), "saved_unix": time.time(),
    }


def _state(run) -> dict:
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {"optimizer": run.optimizer.state_dict(), "scaler": run.scaler.state_dict(),
            "rng": rng, "lr": [g["lr"] for g in run.optimizer.param_groups]}


def save_run(run, names=("last",)) -> None:
    """Checkpoint ``run`` at its current position under each of ``names`` (rank 0
    writes; every rank must call this, because BatchNorm statistics are averaged)."""
    from adrnet.train.distributed import average_buffers
    average_buffers(run.model)
    if run.info.is_main:
        weights, state = encode_weights(run.net.state_dict()), encode_state(_state(run))
        for name in names:
            save_checkpoint(checkpoint_files(run.run_dir, name), weights, state, _meta(run, name))
    run.saved_at = f"epoch {run.epoch + 1}, before step {run.step + 1}"


def check_resumable(saved_cfg, cfg, source) -> None:
    changed = [k for k in config_diff(saved_cfg, cfg)
               if not any(k == p or (p.endswith(".") and k.startswith(p))
                          for p in RESUMABLE_CHANGES)]
    if changed:
        raise ConfigError(f"cannot resume {source} with a different config: {', '.join(changed)} "
                          f"changed; a resumed run may only change train.epochs, train.device, "
                          "train.progress, train.num_threads, train.checkpoint_every, "
                          "train.log_every and eval.*; start a new run (--out) instead")


def restore_run(run) -> dict:
    """Load the ``last`` checkpoint of ``run.run_dir`` into ``run``; return its record."""
    files = checkpoint_files(run.run_dir, "last")
    if not files.path("meta").exists() and not files.sibling("last.prev").path("meta").exists():
        raise CheckpointError(f"cannot resume {run.run_dir}: it has no checkpoint "
                              f"({files.path('meta')} is missing); start it with --out instead")
    files, meta = open_checkpoint(files)
    check_resumable(config_of(meta, files.path("meta")), run.cfg, run.run_dir)
    weights = read_weights(files, meta)
    check_architecture(run.net, weights, files.path("weights"))
    run.net.load_state_dict(weights)
    state = read_state(files, meta)
    try:
        run.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            run.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        run.epoch, run.step = int(meta["epoch"]), int(meta["step"])
        run.global_step = int(meta["global_step"])
        run.best_value, run.best_epoch = meta["best"]["value"], meta["best"]["epoch"]
        run.running = dict(meta["running"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{files.stem} does not hold a usable training state "
                              f"({type(exc).__name__}: {exc})") from None
    run.saved_at = f"epoch {run.epoch + 1}, before step {run.step + 1}"
    return meta
