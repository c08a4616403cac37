"""One optimisation step of adversarial training, reproducible from (seed, epoch, step).

Why this shape: every source of randomness of a step (PGD's random start in the
L∞/L2 ball, TRADES' Gaussian start, dropout) is drawn from the global torch RNG
re-seeded with a hash of (seed, epoch, step) at the start of the step, and the
batch itself comes from ``iterate_batches`` (a pure function of the same
numbers). Under data-parallel training the rank joins the hash (see
:func:`step_seed`): otherwise corresponding examples of different ranks would get
the same random starts and dropout masks. A run resumed at any step therefore
repeats the uninterrupted run bit for bit on CPU. The objective (PGD-AT, TRADES,
ADR of Bui et al., ECCV 2020) runs the attack and the forward passes under
autocast; the step checks that the loss is finite before it touches the weights.
Adversarial weight perturbation (Wu et al., NeurIPS 2020), when configured, wraps
the update (``awp.py``).
"""

from __future__ import annotations

import hashlib
from contextlib import nullcontext

import torch

from adrnet.errors import AdrnetError
from adrnet.train import awp

PRECISION_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
STEP_STREAM = 1  # keeps the step seeds apart from the data module's (seed, epoch, step) seeds


class TrainingDiverged(AdrnetError):
    """The loss became NaN or infinite; the weights were not updated."""


def derived_seed(*parts: int) -> int:
    """A 63-bit seed that is a stable hash of the integers ``parts``."""
    digest = hashlib.blake2b(repr(tuple(int(p) for p in parts)).encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") >> 1


def step_seed(seed: int, epoch: int, step: int, rank: int = 0, world_size: int = 1) -> int:
    """The seed of the global torch RNG for one step of one rank.

    A single process (``world_size == 1``) keeps the seed of (seed, epoch, step)
    alone, so its runs and checkpoints stay bit-identical to earlier releases;
    with several processes each rank draws its own random starts and dropout masks.
    """
    if world_size == 1:
        return derived_seed(seed, STEP_STREAM, epoch, step)
    return derived_seed(seed, STEP_STREAM, epoch, step, rank, world_size)


def autocast_context(device: torch.device, precision: str):
    """Autocast in bf16/fp16 on ``device``, or nothing for fp32."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=PRECISION_DTYPES[precision])


def to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def correct_count(out: dict, key: str, y: torch.Tensor) -> int | None:
    logits = out.get(key)
    return None if logits is None else int((logits.argmax(1) == y).sum())


def train_step(run, objective, xb: torch.Tensor, yb: torch.Tensor, epoch: int, step: int,
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
    attack, perturbation = _weight_perturbation(run, objective, xb, yb, epoch, attack)
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
    numbers["correct_clean"] = correct_count(out, "logits_clean", yb)
    numbers["correct_adv"] = correct_count(out, "logits_adv", yb)
    numbers["examples"] = int(yb.shape[0])
    return numbers


def _weight_perturbation(run, objective, xb, yb, epoch: int, attack) -> tuple:
    """(attack, None) without AWP; with it, the attack that reuses its one adversarial
    batch and the perturbation v, already added to the weights."""
    if not awp.awp_due(run.cfg, epoch):
        return attack, None
    attack = awp.ReusedAttack(attack, run.device)
    perturbation = awp.weight_perturbation(run, objective, xb, yb, attack, run.cfg.optim.awp.gamma)
    perturbation.add()
    return attack, perturbation


def _descend(run, objective, xb, yb, epoch: int, step: int, attack) -> dict:
    """The objective's loss, checked for NaN/inf on every rank, then one optimiser step."""
    with autocast_context(run.device, run.cfg.train.precision):
        out = objective(run.model, xb, yb, attack, gather=run.gather)
    loss = out["loss"]
    bad = run.any_rank(not bool(torch.isfinite(loss.detach()).all()))
    if bad:
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
