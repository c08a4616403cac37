"""Saving and restoring everything a run needs to continue bit for bit.

Why: a resumed training run must continue exactly where it stopped: same weights and
BatchNorm statistics, same optimiser momentum, same position in the epoch (the batches
and the PGD random starts are functions of (seed, epoch, step)), same running sums for
the epoch's averages (summed over the ranks), same metric history and best-so-far, and
the same number of processes (a resume under another world size is refused). See
``adrnet/runs/checkpoint.py`` for how the files are written and verified.
"""

from __future__ import annotations

import math
import platform
import time

import torch

import adrnet
from adrnet.config import config_diff, config_to_dict
from adrnet.data.kinds import check_same_data, data_record
from adrnet.errors import CheckpointError, ConfigError
from adrnet.runs.checkpoint import (
    checkpoint_files, encode_state, encode_weights, open_checkpoint, read_state, read_weights,
    save_checkpoint,
)
from adrnet.runs.load import check_architecture, config_of, model_identity
from adrnet.train.metrics import sum_over_ranks, summed_keys

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
        "objects": run.objects, **data_record(run.dataset),
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


def check_same_objects(saved: dict, passed: dict, source) -> None:
    """Refuse a resume that passes other kinds of objects than the run was trained with
    (a model from the config now, where a module was passed before, or the reverse)."""
    if not isinstance(saved, dict) or set(saved) != set(passed):
        def kinds(found):
            return ", ".join(sorted(found)) if isinstance(found, dict) and found else "none"
        raise ConfigError(f"cannot resume {source}: it was trained with objects passed to "
                          f"train() for: {kinds(saved)}; this call passes: {kinds(passed)}; "
                          "pass the same (model=, splits=, objective=)")


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


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def check_record(meta: dict, epochs: int, steps_per_epoch: int, source) -> None:
    """Refuse a checkpoint record whose position, best-so-far, history or running sums
    are not what training can have written, before any training: a hand-edited or
    damaged ``last.json`` must not train phantom epochs or fail an epoch later.
    ``epochs`` is the length of the run that wrote it, ``steps_per_epoch`` this run's."""
    def bad(field, why):
        return CheckpointError(f"{source} records {field} = {meta.get(field)!r}, {why}; the "
                               "record is damaged or was edited: restore it or start a new run")
    epoch, step = meta.get("epoch"), meta.get("step")
    if not _is_int(epoch) or not 0 <= epoch <= epochs:
        raise bad("epoch", f"not a whole number of epochs from 0 to {epochs}")
    last_step = 0 if epoch == epochs else steps_per_epoch - 1
    if not _is_int(step) or not 0 <= step <= last_step:
        raise bad("step", f"not a step from 0 to {last_step} of epoch {epoch + 1}")
    if meta.get("global_step") != epoch * steps_per_epoch + step or not _is_int(meta["global_step"]):
        raise bad("global_step", f"not epoch {epoch} x {steps_per_epoch} steps + step {step}")
    _check_best(meta.get("best"), epoch, bad)
    metrics = meta.get("metrics")
    if not isinstance(metrics, list) or not all(
            isinstance(r, dict) and r.get("kind") in ("step", "epoch") for r in metrics):
        raise bad("metrics", "not a list of step and epoch records")
    running = meta.get("running")
    if not isinstance(running, dict) or not all(_is_number(v) for v in running.values()):
        raise bad("running", "not a table of running sums")


def _check_best(best, epoch: int, bad) -> None:
    """best: {"value": validation robust accuracy in [0, 1], "epoch": 1..epoch}, or both null."""
    if not isinstance(best, dict):
        raise bad("best", "not a table")
    value, at = best.get("value"), best.get("epoch")
    if (value is None) != (at is None):
        raise bad("best", "a best value without its epoch, or an epoch without its value")
    if value is not None and not (_is_number(value) and 0 <= value <= 1):
        raise bad("best", "a best value that is not an accuracy from 0 to 1")
    if at is not None and not (_is_int(at) and 1 <= at <= epoch):
        raise bad("best", f"a best epoch that is not a finished epoch (1 to {epoch})")


def _local_running(saved: dict, is_main: bool) -> dict:
    """The running sums a rank continues from: the checkpoint holds their sum over
    all ranks, so rank 0 takes it whole and the others start from zero."""
    if is_main:
        return dict(saved)
    summed = summed_keys()
    return {k: v for k, v in saved.items() if k not in summed}


def restore_run(run) -> dict:
    """Load the ``last`` checkpoint of ``run.run_dir`` into ``run``; return its record."""
    files = checkpoint_files(run.run_dir, "last")
    if not files.exists():
        raise CheckpointError(f"cannot resume {run.run_dir}: it has no checkpoint "
                              f"({files.path('meta')} is missing); start it with --out instead")
    files, meta = open_checkpoint(files)
    saved_cfg = config_of(meta, files.path("meta"))
    check_resumable(saved_cfg, run.cfg, run.run_dir)
    check_same_objects(meta.get("objects", {}), run.objects, run.run_dir)
    check_same_data(meta.get("data"), run.dataset, run.run_dir, run.cfg.data.path)
    check_world_size(meta, run.info.world_size, run.run_dir)
    check_record(meta, saved_cfg.train.epochs, run.steps_per_epoch, files.path("meta"))
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
