"""Saving and restoring everything a run needs to continue bit for bit.

Why: a resumed adversarial-training run (PGD-AT, TRADES or ADR) must continue
exactly where it stopped: same weights and BatchNorm statistics, same optimiser
momentum, same position in the epoch (the batches and the PGD random starts
are functions of (seed, epoch, step)), same running sums for the epoch's
averages (summed over the ranks), same metric history and best-so-far, and the
same number of processes (a resume under another world size is refused). See
``checkpoint.py`` for how the files are written and verified.
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
from adrnet.train.running import SUMMED_KEYS, sum_over_ranks

#: Keys a resumed run may change: they do not alter the weights it computes
#: (train.epochs extends or shortens the run; cosine/one-cycle follow the new length).
RESUMABLE_CHANGES = ("train.epochs", "train.device", "train.progress", "train.num_threads",
                     "train.checkpoint_every", "train.log_every", "eval.")


def _position(run) -> str:
    """Where ``run`` stands (the next step to run), for messages."""
    return f"epoch {run.epoch + 1}, before step {run.step + 1}"


def _meta(run, which: str, running: dict) -> dict:
    return {
        "which": which, "epoch": run.epoch, "step": run.step, "global_step": run.global_step,
        "best": {"metric": "val_acc_robust", "value": run.best_value, "epoch": run.best_epoch},
        "running": running, "metrics": run.metrics.records,
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
    writes; every rank must call this, because BatchNorm statistics are averaged and
    the epoch's running sums are added over the ranks)."""
    from adrnet.train.distributed import average_buffers
    average_buffers(run.model)
    running = sum_over_ranks(run.running, run.info.world_size)
    if run.info.is_main:
        weights, state = encode_weights(run.net.state_dict()), encode_state(_state(run))
        for name in names:
            save_checkpoint(checkpoint_files(run.run_dir, name), weights, state,
                            _meta(run, name, running))
    run.saved_at = _position(run)


def check_resumable(saved_cfg, cfg, source) -> None:
    changed = [k for k in config_diff(saved_cfg, cfg)
               if not any(k == p or (p.endswith(".") and k.startswith(p))
                          for p in RESUMABLE_CHANGES)]
    if changed:
        raise ConfigError(f"cannot resume {source} with a different config: {', '.join(changed)} "
                          f"changed; a resumed run may only change train.epochs, train.device, "
                          "train.progress, train.num_threads, train.checkpoint_every, "
                          "train.log_every and eval.*; start a new run (--out) instead")


def check_world_size(meta: dict, world_size: int, source) -> None:
    """Refuse to resume with another number of processes: the batches, the random
    starts and the global batch size of every step depend on it."""
    saved = meta.get("world_size", 1)
    if not isinstance(saved, int) or isinstance(saved, bool) or saved < 1:
        raise CheckpointError(f"the checkpoint of {source} records world_size {saved!r}, "
                              "which is not a number of processes")
    if saved != world_size:
        how = (f"torchrun --standalone --nproc_per_node={saved} -m adrnet.cli train "
               f"--resume {source}" if saved > 1 else f"adrnet train --resume {source}")
        raise ConfigError(
            f"cannot resume {source} with {world_size} process(es): it was trained with "
            f"{saved} process(es) (world_size {saved}), and the batches and random starts of "
            f"each step depend on that number; resume it with {saved}: `{how}`")


def _local_running(saved: dict, is_main: bool) -> dict:
    """The running sums a rank continues from: the checkpoint holds their sum over
    all ranks, so rank 0 takes it whole and the others start from zero."""
    saved = dict(saved)
    return saved if is_main else {k: v for k, v in saved.items() if k not in SUMMED_KEYS}


def restore_run(run) -> dict:
    """Load the ``last`` checkpoint of ``run.run_dir`` into ``run``; return its record."""
    files = checkpoint_files(run.run_dir, "last")
    if not files.exists():
        raise CheckpointError(f"cannot resume {run.run_dir}: it has no checkpoint "
                              f"({files.path('meta')} is missing); start it with --out instead")
    files, meta = open_checkpoint(files)
    check_resumable(config_of(meta, files.path("meta")), run.cfg, run.run_dir)
    check_world_size(meta, run.info.world_size, run.run_dir)
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
        run.running = _local_running(meta["running"], run.info.is_main)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{files.stem} does not hold a usable training state "
                              f"({type(exc).__name__}: {exc})") from None
    run.saved_at = _position(run)
    return meta
