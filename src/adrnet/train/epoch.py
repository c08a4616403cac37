"""One epoch of adversarial training: steps, progress bar, checkpoints, validation.

Why here: the per-epoch bookkeeping (running averages that survive a resume,
mid-epoch checkpoints every ``train.checkpoint_every`` steps, the ε warm-up of
the L∞/L2 training adversary and the learning-rate schedule recomputed at every
step, validation and the best checkpoint at the end) is the same for PGD-AT,
TRADES and ADR (Bui et al., ECCV 2020); the step itself is in ``step.py``.
"""

from __future__ import annotations

import time

from tqdm import tqdm

from adrnet.train.builders import training_attack
from adrnet.train.resume import save_run
from adrnet.train.running import SHORT_NAMES, accumulate, averages, sum_over_ranks
from adrnet.train.schedules import adr_factor, eps_factor, lr_factor
from adrnet.train.signals import TrainingInterrupted, signal_name
from adrnet.train.step import to_device, train_step
from adrnet.train.validate import validate


def _check_stop(run) -> None:
    """Save and stop when SIGINT/SIGTERM arrived (on any rank)."""
    if not run.any_rank(bool(run.stop)):
        return
    save_run(run)
    signum = run.stop.signum or 15
    raise TrainingInterrupted(
        f"stopped by {signal_name(signum)} at epoch {run.epoch + 1}, before step "
        f"{run.step + 1}; a resumable checkpoint is in {run.run_dir}/checkpoints/last.*. "
        f"Continue with: adrnet train --resume {run.run_dir}", signum)


def _accuracies(numbers: dict) -> dict:
    """{"acc_clean", "acc_adv"} of one step (those whose logits the objective returned)."""
    return {f"acc_{side}": numbers[f"correct_{side}"] / numbers["examples"]
            for side in ("clean", "adv") if numbers.get(f"correct_{side}") is not None}


def _postfix(numbers: dict, seconds: float) -> dict:
    shown = {SHORT_NAMES[k]: f"{v:.3f}" for k, v in numbers.items() if k in SHORT_NAMES}
    shown.update({k: f"{v:.2f}" for k, v in _accuracies(numbers).items()})
    shown["img/s"] = f"{numbers['examples'] / max(seconds, 1e-9):.0f}"
    return shown


def _step_record(run, numbers: dict, lr: float, eps: float) -> dict:
    record = {"kind": "step", "epoch": run.epoch + 1, "step": run.step,
              "global_step": run.global_step, "lr": lr, "eps": eps}
    record.update({k: v for k, v in numbers.items() if k in SHORT_NAMES})
    record.update(_accuracies(numbers))
    return record


def _settings(run, epoch: int, step: int) -> tuple[float, float, object, object]:
    """(lr, ε, attack, objective) of one step: the schedules at the step's position."""
    cfg, spe = run.cfg, run.steps_per_epoch
    lr = cfg.optim.lr * lr_factor(cfg.schedule, epoch, step, spe, cfg.train.epochs)
    share = eps_factor(cfg.attack, epoch, step, spe)
    eps = cfg.attack.eps * share
    attack = training_attack(cfg, run.objective.attack_loss, eps, cfg.attack.step_size * share)
    objective = run.objective.with_adr_factor(adr_factor(cfg.objective, epoch, step, spe))
    return lr, eps, attack, objective


def run_epoch(run) -> None:
    """Steps ``run.step`` .. end of ``run.epoch``, checkpointing as configured."""
    from adrnet.data import iterate_batches
    cfg, spe, epoch = run.cfg, run.steps_per_epoch, run.epoch
    batches = iterate_batches(run.train.x, run.train.y, cfg.train.batch_size,
                              seed=cfg.train.seed, epoch=epoch, start_step=run.step,
                              augment=run.augment, rank=run.info.rank,
                              world_size=run.info.world_size)
    bar = tqdm(total=spe, initial=run.step, desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
               unit="step", leave=False, dynamic_ncols=True,
               disable=not (cfg.train.progress and run.info.is_main))
    for step, xb, yb in batches:
        _check_stop(run)
        lr, eps, attack, objective = _settings(run, epoch, step)
        xb = to_device(xb, run.device, cfg.train.channels_last)
        started = time.perf_counter()
        numbers = train_step(run, objective, xb, yb.to(run.device), epoch, step, attack, lr)
        seconds = time.perf_counter() - started
        accumulate(run.running, numbers, seconds, lr, eps)
        run.step, run.global_step = step + 1, run.global_step + 1
        if run.global_step % cfg.train.log_every == 0:
            run.metrics.append(_step_record(run, numbers, lr, eps))
        bar.set_postfix(_postfix(numbers, seconds), refresh=False)
        bar.update(1)
        every = cfg.train.checkpoint_every
        if every and run.global_step % every == 0 and run.step < spe:
            save_run(run)
    bar.close()


def finish_epoch(run) -> dict:
    """Validate if due, record the epoch (its averages over every rank's examples),
    advance the position, save last (and best). Every rank must call it."""
    cfg, epoch, world_size = run.cfg, run.epoch, run.info.world_size
    running = sum_over_ranks(run.running, world_size)  # every rank: a collective
    record = {"kind": "epoch", "epoch": epoch + 1, "global_step": run.global_step,
              "lr": running.get("lr"), "eps": running.get("eps"),
              **averages(running, world_size),
              "time_s": running.get("seconds", 0.0) / world_size}
    improved = False
    if (epoch + 1) % cfg.eval.val_every == 0 or epoch + 1 == cfg.train.epochs:
        from adrnet.train.distributed import average_buffers
        average_buffers(run.model)  # under DDP: every rank validates the same network
        record.update(validate(run, epoch))
        improved = run.best_value is None or record["val_acc_robust"] > run.best_value
        if improved:
            run.best_value, run.best_epoch = record["val_acc_robust"], epoch + 1
        record["is_best"] = improved
    run.epoch, run.step, run.running = epoch + 1, 0, {}
    run.metrics.append(record)
    save_run(run, ("last", "best") if improved else ("last",))
    return record
