"""Saving and restoring everything a run needs to continue bit for bit.

Why: a resumed training run must continue exactly where it stopped: same weights and
BatchNorm statistics, same optimiser momentum, same position in the epoch (the batches
and the PGD random starts are functions of (seed, epoch, step)), same running sums for
the epoch's averages (summed over the ranks), same metric history and best-so-far, and
the same number of processes (a resume under another world size is refused), the same
validation (what ``best`` compares) and the same data, wherever they now are. See
``adrnet/runs/checkpoint.py`` for how the files are written and verified.
"""

from __future__ import annotations

import math
import platform
import time

import torch

import adrnet
from adrnet.config import config_diff, config_to_dict
from adrnet.data.kinds import data_record
from adrnet.errors import CheckpointError, ConfigError
from adrnet.runs.checkpoint import (
    checkpoint_files, encode_state, encode_weights, open_checkpoint, read_state, read_weights,
    save_checkpoint,
)
from adrnet.runs.load import check_architecture, config_of, model_identity
from adrnet.train.metrics import sum_over_ranks, summed_keys
from adrnet.train.state import validation_step_size

#: Keys a resumed run may change: they do not alter the weights it computes
#: (train.epochs extends or shortens the run; cosine/one-cycle follow the new length);
#: of eval.*, not those that say what validation measures (validation_settings).
RESUMABLE_CHANGES = ("train.epochs", "train.device", "train.progress", "train.num_threads",
                     "train.checkpoint_every", "train.log_every", "eval.")
#: Keys that say where the data are, not which: a resume may change them when the data
#: found there are those the run was trained on (check_same_splits, by their SHA-256).
DATA_PLACE_KEYS = ("data.root", "data.path")


def _position(run) -> str:
    """Where ``run`` stands (the next step to run), for messages."""
    return f"epoch {run.epoch + 1}, before step {run.step + 1}"


def _meta(run, which: str, running: dict) -> dict:
    return {
        "which": which, "epoch": run.epoch, "step": run.step, "global_step": run.global_step,
        "best": {"metric": "val_acc_robust", "value": run.best_value, "epoch": run.best_epoch},
        "running": running, "metrics": run.metrics.records,
        "config": config_to_dict(run.cfg), "model": model_identity(run.net, run.cfg),
        "objects": run.objects, **data_record(run.dataset), "splits_sha256": run.splits_sha256,
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


def check_resumable(saved_cfg, cfg, source, validated: bool = True) -> None:
    """Refuse a resume whose config changes what the run computes or, once it has
    ``validated`` an epoch, what its validation measures. The data's place
    (DATA_PLACE_KEYS) passes here: :func:`restore_run` checks the data found there by
    their fingerprint (:func:`check_same_splits`)."""
    if validated:
        check_same_validation(saved_cfg, cfg, source)
    changed = [k for k in config_diff(saved_cfg, cfg)
               if k not in DATA_PLACE_KEYS and not any(
                   k == p or (p.endswith(".") and k.startswith(p)) for p in RESUMABLE_CHANGES)]
    if changed:
        raise ConfigError(f"cannot resume {source} with a different config: {', '.join(changed)} "
                          f"changed; a resumed run may only change train.epochs, train.device, "
                          "train.progress, train.num_threads, train.checkpoint_every, "
                          "train.log_every, data.root or data.path (to the same data at another "
                          "place) and the eval.* keys other than validation's; start a new run "
                          "(--out) instead")


def validation_settings(cfg) -> dict:
    """What validation measures, as the values it runs with (eval.eps unset: attack.eps;
    eval.val_step_size unset: its default for that radius and number of steps)."""
    return {"eval.eps": cfg.eval_eps, "eval.val_steps": cfg.eval.val_steps,
            "eval.val_step_size": validation_step_size(cfg), "eval.val_size": cfg.eval.val_size}


def has_validated(meta: dict) -> bool:
    """Whether the run of checkpoint record ``meta`` has validated an epoch (it has a best
    value, or an epoch record with a validation); False for a run stopped before or
    during its first validation."""
    best, metrics = meta.get("best"), meta.get("metrics")
    return ((isinstance(best, dict) and best.get("value") is not None)
            or (isinstance(metrics, list)
                and any(isinstance(r, dict) and "val_acc_robust" in r for r in metrics)))


def check_same_validation(saved_cfg, cfg, source) -> None:
    """Refuse a resume that changes what validation measures: its radius, attack steps,
    step size or number of examples (called once the run has validated an epoch: before
    that there is nothing to compare, and a first validation stopped by a signal may be
    redone with other settings).

    Why refuse rather than record the settings per epoch: ``best`` is the epoch whose
    validation robust accuracy is highest, and an accuracy at ε 0.2 (or under PGD-50, or on
    other examples) is not better or worse than one at ε 0.05, only another measure; so is
    the validation curve in metrics.jsonl. A run keeps one validation, recorded in its
    config; any checkpoint can still be measured at other settings by ``adrnet eval``."""
    before, now = validation_settings(saved_cfg), validation_settings(cfg)
    changed = [f"{key} = {now[key]:g} (it validates with {before[key]:g})"
               for key in before if before[key] != now[key]]
    if changed:
        raise ConfigError(
            f"cannot resume {source} with {'; '.join(changed)}: every epoch of a run is "
            "validated alike (robust accuracy at eval.eps under PGD with eval.val_steps steps of "
            "eval.val_step_size, on eval.val_size examples), because the best checkpoint is the "
            "epoch where it is highest; keep these settings, measure a checkpoint at others with "
            f"`adrnet eval {source} --eps E --steps K`, or start a new run (--out)")


def check_same_splits(meta: dict, saved_cfg, run) -> None:
    """Refuse to resume on other examples than the run was trained and validated on, by
    the SHA-256 of its training and validation tensors (:func:`splits_sha256`, recorded in
    every checkpoint); so a run whose data moved (``data.root`` or ``data.path`` changed)
    continues when the data found at the new place are the same. Why the tensors and not
    the files: the same examples may be found in another format or folder, and what a
    resume must keep bit for bit is the tensors. A checkpoint from an adrnet that did not
    record them continues only where its data are (or its data file's SHA-256 matches)."""
    source = run.run_dir
    moved = {key: (getattr(saved_cfg.data, key[5:]), getattr(run.cfg.data, key[5:]))
             for key in DATA_PLACE_KEYS
             if getattr(saved_cfg.data, key[5:]) != getattr(run.cfg.data, key[5:])}
    where = "; ".join(f"{key} = {new!r}, it was {old!r}" for key, (old, new) in moved.items())
    recorded = meta.get("splits_sha256")
    if recorded is None:
        saved_file = meta.get("data") if isinstance(meta.get("data"), dict) else {}
        before, now = saved_file.get("sha256"), run.dataset.sha256 if run.dataset else None
        if before and now and before != now:
            raise ConfigError(f"cannot resume {source}: its data file ({run.cfg.data.path}) changed "
                              f"since the run started (SHA-256 {before[:12]}… then, {now[:12]}… "
                              "now); restore the file it was trained on, or start a new run (--out)")
        same_file = bool(before) and before == now
        if moved and not same_file:
            raise ConfigError(
                f"cannot resume {source} with {where}: its checkpoint, written by an earlier "
                "adrnet, records no fingerprint of its data, so the data at the new place "
                "cannot be checked against those it was trained on; give the old value again "
                "(a symbolic link at the old place will do), or start a new run (--out)")
        return
    if not isinstance(recorded, str) or len(recorded) != 64:
        raise CheckpointError(f"{source} records splits_sha256 = {recorded!r}, not a SHA-256; "
                              "the record is damaged or was edited: restore it or start a new run")
    if recorded != run.splits_sha256:
        raise ConfigError(
            f"cannot resume {source}: the training and validation examples it would read now "
            f"are not those it was trained on (SHA-256 {recorded[:12]}… then, "
            f"{run.splits_sha256[:12]}… now{'; ' + where if moved else ''}); point the run at "
            "the data it was trained on, or start a new run (--out)")


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
    check_resumable(saved_cfg, run.cfg, run.run_dir, validated=has_validated(meta))
    check_same_objects(meta.get("objects", {}), run.objects, run.run_dir)
    check_same_splits(meta, saved_cfg, run)
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
