"""``train(cfg, out_dir, resume=False)``: a whole adversarial-training run.

Why this is the one entry point: the CLI, the Python API and the tests all run
PGD-AT, TRADES or ADR (Bui et al., ECCV 2020) under an L∞/L2 threat model the
same way: set up (torchrun or a single process), build the run from the config,
start fresh or resume from ``last``, loop over epochs, and leave a run directory
that holds the resolved config, metrics and checkpoints. Only rank 0 writes.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from adrnet.config import Config, save_config
from adrnet.errors import ConfigError
from adrnet.locking import run_lock
from adrnet.train.checkpoint import checkpoint_files, remove_checkpoint
from adrnet.train.epoch import finish_epoch, run_epoch
from adrnet.train.metrics import MetricsLog
from adrnet.train.resume import restore_run
from adrnet.train.run import Run, build_run
from adrnet.train.signals import stop_on_signals


@dataclass(frozen=True)
class RunResult:
    """Where a finished run is and what it reached."""

    run_dir: Path
    epochs_completed: int
    global_step: int
    best_epoch: int | None
    best_val_acc_robust: float | None
    last_record: dict | None  # the last epoch record of metrics.jsonl


def has_checkpoint(run_dir: str | os.PathLike) -> bool:
    """True when ``run_dir`` holds a ``last`` checkpoint to resume from."""
    return checkpoint_files(run_dir, "last").exists()


def _start_fresh(run: Run) -> None:
    """Refuse a directory that holds a run; clear a stale ``best`` (checkpoints/ itself
    is made by the first save, so a run that fails before it leaves none behind)."""
    if has_checkpoint(run.run_dir):
        raise ConfigError(f"{run.run_dir} already holds a run; continue it with "
                          f"`adrnet train --resume {run.run_dir}` (or --resume-if-exists), "
                          "or choose another --out")
    if run.info.is_main:
        best = checkpoint_files(run.run_dir, "best")
        for stale in (best, best.prev):  # left by an earlier run that never saved "last"
            remove_checkpoint(stale)


def _describe_start(run: Run, resumed: bool) -> str:
    if run.epoch >= run.cfg.train.epochs:
        return (f"{run.run_dir} has already completed {run.epoch} epochs: nothing to do "
                f"(extend it with --resume {run.run_dir} --set train.epochs=N)")
    what = (f"resuming at epoch {run.epoch + 1}, step {run.step + 1}" if resumed
            else "starting")
    return (f"{what}: {run.cfg.objective.name} on {run.cfg.data.name} with "
            f"{run.cfg.model.name}, {run.info.world_size} process(es) on {run.device}, "
            f"{run.steps_per_epoch} steps/epoch; run directory {run.run_dir}")


def _epoch_line(run: Run, record: dict) -> str:
    parts = [f"epoch {record['epoch']}/{run.cfg.train.epochs}", f"loss {record['loss']:.4f}"]
    for key in ("acc_clean", "acc_adv", "val_acc_clean", "val_acc_robust"):
        if key in record:
            parts.append(f"{key} {record[key]:.4f}")
    if record.get("is_best"):
        parts.append("(best)")
    parts.append(f"{record['images_per_s']:.0f} img/s")
    return "  ".join(parts)


def _loop(run: Run) -> None:
    while run.epoch < run.cfg.train.epochs:
        run_epoch(run)
        record = finish_epoch(run)
        if run.info.is_main:
            tqdm.write(_epoch_line(run, record))


def train(cfg: Config, out_dir: str | os.PathLike, resume: bool = False) -> RunResult:
    """Train as ``cfg`` says into ``out_dir``; with ``resume`` continue its ``last``
    checkpoint (the config may then differ only in train.epochs, device, progress,
    threads, checkpoint/log frequency and eval settings). The run directory is
    locked for the whole call (:func:`adrnet.locking.run_lock`): a second process
    training into it is refused with :class:`adrnet.locking.Busy`."""
    from adrnet.train.distributed import cleanup, setup_distributed
    run_dir = Path(out_dir)
    info = setup_distributed(cfg.train.device)
    try:
        with (run_lock(run_dir) if info.is_main else nullcontext()), stop_on_signals() as stop:
            return _train(cfg, run_dir, info, stop, resume)
    finally:
        cleanup()


def _train(cfg: Config, run_dir: Path, info, stop, resume: bool) -> RunResult:
    run = build_run(cfg, run_dir, info)
    run.stop = stop
    if resume:
        records = restore_run(run)["metrics"]
    else:
        _start_fresh(run)
        records = []
    if info.is_main:
        if run.epoch < cfg.train.epochs:  # a resume with nothing to do keeps its config.toml
            save_config(cfg, run_dir / "config.toml")
        tqdm.write(_describe_start(run, resume))
    run.metrics = MetricsLog(run_dir, records, enabled=info.is_main, tb_step=run.global_step)
    try:
        _loop(run)
    finally:
        run.metrics.close()
    epochs = [r for r in run.metrics.records if r.get("kind") == "epoch"]
    return RunResult(run_dir, run.epoch, run.global_step, run.best_epoch,
                     run.best_value, epochs[-1] if epochs else None)
