"""``train(cfg, out_dir, resume=False)``: a whole adversarial-training run, top to bottom.

Why one module: the CLI, the Python API and the tests all run PGD-AT, TRADES, MART or
ADR the same way, and the whole run reads in order here: set up (torchrun or one
process) → build the run (state.py) → start fresh or resume from ``last`` (resume.py)
→ epochs → steps → validation and the best checkpoint. Only rank 0 writes.

Reproducibility: every random draw of a step (PGD's random start, TRADES' Gaussian
start, dropout) comes from the global torch RNG re-seeded from (seed, epoch, step) at
the start of the step; under data-parallel training the rank joins the hash, or
corresponding examples of different ranks would share random starts and dropout
masks. The batch comes from ``iterate_batches`` (a pure function of the same numbers),
the learning rate, ε and the ADR weights from the schedules at the step's position,
and validation is seeded from (seed, epoch). A run resumed at any step therefore
repeats the uninterrupted run bit for bit on CPU. The loss is checked to be finite on
every rank before the weights are touched.
"""

from __future__ import annotations

import functools
import os
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from adrnet.attacks import pgd
from adrnet.attacks.pgd import checking_each_step
from adrnet.attacks.inference import attack_correct, predict
from adrnet.atomic import write_json_atomic
from adrnet.config import Config, save_config
from adrnet.device import autocast_context, to_device
from adrnet.errors import AdrnetError
from adrnet.locking import run_lock
from adrnet.runs.checkpoint import OBJECTS_FILE
from adrnet.runs.directory import RUN_CONFIG_HEADER, check_fresh_run_dir
from adrnet.seeds import derived_seed
from adrnet.train import awp
from adrnet.train.metrics import (MetricsLog, accumulate, epoch_line, epoch_record, postfix,
                                  step_record, whole_batch)
from adrnet.train.resume import restore_run, save_run
from adrnet.train.schedules import adr_factor, eps_factor, lr_factor
from adrnet.train.signals import (StopRequested, TrainingInterrupted, signal_name, stop_check,
                                  stop_on_signals)
from adrnet.train.state import Objects, Run, build_run, training_attack, validation_step_size

STEP_STREAM = 1        # the step seeds' stream number (see adrnet/seeds.py)
VALIDATION_STREAM = 7  # validation's


class TrainingDiverged(AdrnetError):
    """The loss became NaN or infinite; the weights were not updated."""


@dataclass(frozen=True)
class RunResult:
    """Where a finished run is and what it reached."""

    run_dir: Path
    epochs_completed: int
    global_step: int
    best_epoch: int | None
    best_val_acc_robust: float | None
    last_record: dict | None  # the last epoch record of metrics.jsonl


def train(cfg: Config, out_dir: str | os.PathLike, resume: bool = False, *,
          model: torch.nn.Module | None = None, splits=None, objective=None) -> RunResult:
    """Train as ``cfg`` says into ``out_dir``; with ``resume`` continue its ``last``
    checkpoint (the config may then differ only in train.epochs, device, progress,
    threads, checkpoint/log frequency and eval settings). The run directory is
    locked for the whole call (:func:`adrnet.locking.run_lock`): a second process
    training into it is refused with :class:`adrnet.locking.Busy`.

    ``model``, ``splits`` and ``objective`` may be passed as objects instead of being
    built from ``cfg`` (see :class:`adrnet.train.state.Objects`); the run directory then
    says so in ``objects.json``, and a resume must pass the same kinds of objects."""
    from adrnet.train.distributed import cleanup, setup_distributed
    run_dir = Path(out_dir)
    info = setup_distributed(cfg.train.device)
    objects = Objects(model, splits, objective)
    try:
        with (run_lock(run_dir) if info.is_main else nullcontext()), stop_on_signals() as stop:
            return _train(cfg, run_dir, info, stop, resume, objects)
    finally:
        cleanup()


def _train(cfg: Config, run_dir: Path, info, stop, resume: bool, objects: Objects) -> RunResult:
    if not resume:  # on every rank, before anything is built or written (no rank writes yet)
        check_fresh_run_dir(run_dir)
    run = build_run(cfg, run_dir, info, objects)
    run.stop = stop
    records = restore_run(run)["metrics"] if resume else []
    pending = _validation_pending(run)
    if info.is_main:
        if run.epoch < cfg.train.epochs or pending:  # a resume with nothing to do keeps config.toml
            save_config(cfg, run_dir / "config.toml", RUN_CONFIG_HEADER)
            if run.objects:
                write_json_atomic(run_dir / OBJECTS_FILE, run.objects)
            elif not resume:  # an earlier attempt's, checked to be adrnet's by check_fresh_run_dir
                (run_dir / OBJECTS_FILE).unlink(missing_ok=True)
        tqdm.write(_describe_start(run, resume, pending))
    run.metrics = MetricsLog(run_dir, records, enabled=info.is_main, tb_step=run.global_step)
    try:
        if pending:  # a signal stopped the last epoch's validation: that epoch ends now
            run.epoch -= 1
            record = _finish_epoch(run)
            if info.is_main:
                tqdm.write(epoch_line(record, cfg.train.epochs))
        while run.epoch < cfg.train.epochs:
            _run_epoch(run)
            record = _finish_epoch(run)
            if info.is_main:
                tqdm.write(epoch_line(record, cfg.train.epochs))
    finally:
        run.metrics.close()
    if signum := _stop_signal(run):  # after the last step (validation, the last save) or in
        # a run with nothing to do: the run is complete and saved, but the caller must still stop
        raise TrainingInterrupted(f"stopped by {signal_name(signum)} after the run's last "
                                  f"step; the run is complete and saved in {run_dir}", signum)
    epochs = [r for r in run.metrics.records if r.get("kind") == "epoch"]
    return RunResult(run_dir, run.epoch, run.global_step, run.best_epoch,
                     run.best_value, epochs[-1] if epochs else None)


def _validation_pending(run: Run) -> bool:
    """Whether ``run`` was saved by a signal during a validation (:func:`_finish_epoch`): at
    the start of an epoch the running sums are otherwise always empty; these are the sums
    of the epoch before, whose record waits for that validation."""
    return run.step == 0 and run.epoch > 0 and bool(run.running)


def _describe_start(run: Run, resumed: bool, pending: bool = False) -> str:
    again = (f"validating epoch {run.epoch} again (a signal stopped its validation)"
             if pending else "")
    if run.epoch >= run.cfg.train.epochs:
        if pending:
            return f"resuming: {again}; run directory {run.run_dir}"
        return (f"{run.run_dir} has already completed {run.epoch} epochs: nothing to do "
                f"(extend it with --resume {run.run_dir} --set train.epochs=N)")
    what = (f"resuming at epoch {run.epoch + 1}, step {run.step + 1}" if resumed
            else "starting")
    if pending:
        what = f"resuming at epoch {run.epoch + 1}, step 1, after {again}"
    return (f"{what}: {run.cfg.objective.name} on {run.cfg.data.name} with "
            f"{run.cfg.model.name}, {run.info.world_size} process(es) on {run.device}, "
            f"{run.steps_per_epoch} steps/epoch; run directory {run.run_dir}")


# --- one epoch ---------------------------------------------------------------------

def _run_epoch(run: Run) -> None:
    """Steps ``run.step`` .. end of ``run.epoch``; the running sums, step records and
    mid-epoch checkpoints (every ``train.checkpoint_every`` steps) go with them."""
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
        if run.global_step % cfg.train.log_every == 0:  # the global batch's numbers, all ranks
            logged, mean_seconds = whole_batch(numbers, seconds, run.info.world_size)
            run.metrics.append(step_record(logged, epoch + 1, run.step, run.global_step, lr, eps))
            bar.set_postfix(postfix(logged, mean_seconds), refresh=False)
        elif not run.info.distributed:  # under DDP the bar shows only the logged steps
            bar.set_postfix(postfix(numbers, seconds), refresh=False)
        bar.update(1)
        every = cfg.train.checkpoint_every
        if every and run.global_step % every == 0 and run.step < spe:
            save_run(run)
    bar.close()


def _stop_signal(run: Run) -> int | None:
    """The signal number when SIGINT/SIGTERM arrived on any rank (the same answer on all;
    SIGTERM's on a rank that only heard of it from another), else None."""
    return (run.stop.signum or 15) if run.any_rank(bool(run.stop)) else None


def _check_stop(run: Run) -> None:
    """Save and stop when SIGINT/SIGTERM arrived (on any rank)."""
    if not (signum := _stop_signal(run)):
        return
    save_run(run)
    raise TrainingInterrupted(
        f"stopped by {signal_name(signum)} at epoch {run.epoch + 1}, before step "
        f"{run.step + 1}; a resumable checkpoint is in {run.run_dir}/checkpoints/last.*. "
        f"Continue with: adrnet train --resume {run.run_dir}", signum)


def _settings(run: Run, epoch: int, step: int) -> tuple[float, float, object, object]:
    """(lr, ε, attack, objective) of one step: the schedules at the step's position."""
    cfg, spe = run.cfg, run.steps_per_epoch
    lr = cfg.optim.lr * lr_factor(cfg.schedule, epoch, step, spe, cfg.train.epochs)
    share = eps_factor(cfg.attack, epoch, step, spe)
    eps = cfg.attack.eps * share
    attack = training_attack(cfg, run.objective.attack_loss, run.threat, share)
    factor = adr_factor(cfg.objective, epoch, step, spe)
    objective = run.objective if factor == 1 else run.objective.with_adr_factor(factor)
    return lr, eps, attack, objective


# --- one step ----------------------------------------------------------------------

def step_seed(seed: int, epoch: int, step: int, rank: int = 0, world_size: int = 1) -> int:
    """The seed of the global torch RNG for one step of one rank. A single process keeps
    the seed of (seed, epoch, step) alone, so its runs stay bit-identical to earlier
    releases; with several processes each rank draws its own starts and masks."""
    if world_size == 1:
        return derived_seed(seed, STEP_STREAM, epoch, step)
    return derived_seed(seed, STEP_STREAM, epoch, step, rank, world_size)


def train_step(run: Run, objective, xb: torch.Tensor, yb: torch.Tensor, epoch: int, step: int,
               attack, lr: float) -> dict:
    """Forward (with the attack), check, backward, update. Returns the step's numbers
    as Python floats: loss, each active term, correct counts, batch size. ``objective``
    is the run's objective as the schedules weigh it at this step (ADR warm-up). With AWP
    (``optim.awp``, see ``awp.py``) the update is taken at perturbed weights w + v, and v
    is removed afterwards, also when the step fails."""
    torch.manual_seed(step_seed(run.cfg.train.seed, epoch, step,
                                run.info.rank, run.info.world_size))
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    run.model.train()
    perturbation = None
    if awp.awp_due(run.cfg, epoch):  # the attack's one adversarial batch serves both passes
        attack = awp.ReusedAttack(attack, run.device)
        perturbation = awp.weight_perturbation(run, objective, xb, yb, attack,
                                               run.cfg.optim.awp.gamma)
        perturbation.add()
    try:
        out = _descend(run, objective, xb, yb, epoch, step, attack)
    except BaseException:
        if perturbation is not None:
            perturbation.undo()
        raise
    if perturbation is not None:
        perturbation.remove()
    numbers = {name: float(value.detach()) for name, value in out.items()
               if name not in ("logits_clean", "logits_adv")}
    for side in ("clean", "adv"):
        logits = out.get(f"logits_{side}")
        numbers[f"correct_{side}"] = None if logits is None else int((logits.argmax(1) == yb).sum())
    numbers["examples"] = int(yb.shape[0])
    return numbers


def _descend(run: Run, objective, xb, yb, epoch: int, step: int, attack) -> dict:
    """The objective's loss, checked for NaN/inf on every rank, then one optimiser step."""
    with autocast_context(run.device, run.cfg.train.precision):
        out = objective(run.model, xb, yb, attack, gather=run.gather)
    loss = out["loss"]
    if run.any_rank(not bool(torch.isfinite(loss.detach()).all())):
        raise TrainingDiverged(
            f"the loss became {float(loss.detach())!r} at epoch {epoch + 1}, step {step + 1} "
            f"(global step {run.global_step + 1}); training stopped before updating the "
            f"weights. The last good checkpoint is kept: {run.last_checkpoint_note()}. "
            "Lower optim.lr, use train.precision='fp32', or check the data")
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    return out


# --- end of an epoch: validation and the best checkpoint ----------------------------

def _finish_epoch(run: Run) -> dict:
    """Validate if due, record the epoch (its averages over every rank's examples),
    advance the position, save last (and best). Every rank must call it."""
    from adrnet.train.distributed import average_buffers
    cfg, epoch = run.cfg, run.epoch
    record = epoch_record(run.running, run.info.world_size, epoch + 1, run.global_step)
    improved = False
    if (epoch + 1) % cfg.eval.val_every == 0 or epoch + 1 == cfg.train.epochs:
        average_buffers(run.model)  # under DDP: every rank validates the same network
        try:
            record.update(validate(run, epoch))
        except StopRequested:
            _stop_during_validation(run, epoch)
        improved = run.best_value is None or record["val_acc_robust"] > run.best_value
        if improved:
            run.best_value, run.best_epoch = record["val_acc_robust"], epoch + 1
        record["is_best"] = improved
    run.epoch, run.step, run.running = epoch + 1, 0, {}
    run.metrics.append(record)
    save_run(run, ("last", "best") if improved else ("last",))
    return record


def _stop_during_validation(run: Run, epoch: int) -> None:
    """A signal cut the validation of ``epoch`` short (one process only): save at the start
    of the next epoch, keeping the epoch's running sums and leaving its record out; the
    resume sees the sums (:func:`_validation_pending`), validates the same weights with the
    same seed and writes the record the uninterrupted run would have written."""
    run.epoch, run.step = epoch + 1, 0
    save_run(run)
    signum = run.stop.signum or signal.SIGTERM
    raise TrainingInterrupted(
        f"stopped by {signal_name(signum)} during the validation of epoch {epoch + 1} (its "
        f"training steps are done); a resumable checkpoint is in {run.run_dir}/checkpoints/"
        f"last.*, and resuming validates epoch {epoch + 1} again first. Continue with: "
        f"adrnet train --resume {run.run_dir}", signum)


def validate(run: Run, epoch: int) -> dict:
    """{"val_acc_clean", "val_acc_robust", "val_examples"} of the unwrapped model on the
    held-out split: PGD-k (k = ``eval.val_steps``, CE, random start) at the reported radius
    ``cfg.eval_eps`` (the full training ε unless eval.eps is set), even during an ε warm-up.
    The best checkpoint is chosen on this, never on the test set. Under DDP each rank
    validates a shard and the counts are summed."""
    from adrnet.train.distributed import all_reduce_sum
    cfg, net = run.cfg, run.net
    shard = slice(run.info.rank, None, run.info.world_size)
    x, y = run.val.x[shard], run.val.y[shard]
    attack = functools.partial(pgd, threat=run.val_threat, steps=cfg.eval.val_steps,
                               step_size=validation_step_size(cfg), loss="ce", random_start=True)
    place = functools.partial(to_device, device=run.device, channels_last=cfg.train.channels_last)
    # SIGINT/SIGTERM end a validation before its next batch or PGD step (one process: under
    # DDP the ranks' shards may differ by a batch, so they stop together after it)
    check = stop_check(run.stop) if run.stop is not None and run.info.world_size == 1 else None
    if check is not None:
        place = _checked(place, check)
    torch.manual_seed(derived_seed(cfg.train.seed, VALIDATION_STREAM, epoch))
    with autocast_context(run.device, cfg.train.precision), checking_each_step(check):
        clean = predict(net, x, cfg.eval.batch_size, place).eq(y)
        robust = attack_correct(net, x, y, attack, batch_size=cfg.eval.batch_size, place=place) & clean
    counts = torch.tensor([clean.sum().item(), robust.sum().item(), y.shape[0]], dtype=torch.float64)
    clean_hits, robust_hits, total = all_reduce_sum(counts).tolist()
    return {"val_acc_clean": clean_hits / max(total, 1),
            "val_acc_robust": robust_hits / max(total, 1), "val_examples": int(total)}


def _checked(place, check):
    """``place`` that first calls ``check`` (which raises to stop)."""
    def placed(tensor):
        check()
        return place(tensor)
    return placed
