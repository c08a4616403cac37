"""Validation during training: clean and PGD-k accuracy on the held-out split.

Why: the "best" checkpoint must be chosen by robust accuracy on data the model
never trained on and that is not the test set (the ADR reference selected on the
test set, which inflates its numbers). The adversary is the training threat model
(L∞ or L2 ball of radius ε, full ε even during an ε warm-up) with PGD-k, CE loss,
random start (Madry et al. 2018), k = ``eval.val_steps``. Its randomness is seeded
from (seed, epoch) so validation never perturbs the training RNG stream and two
runs validate identically. Under DDP each rank validates a shard and the counts
are summed.
"""

from __future__ import annotations

import torch

from adrnet.attacks import make_threat
from adrnet.train.builders import validation_step_size
from adrnet.train.step import autocast_context, derived_seed, to_device

VALIDATION_STREAM = 7  # keeps validation seeds apart from the step seeds


def validate(run, epoch: int) -> dict:
    """{"val_acc_clean", "val_acc_robust", "val_examples"} of the unwrapped model."""
    from adrnet.attacks import pgd
    from adrnet.train.distributed import all_reduce_sum
    cfg, net = run.cfg, run.net
    x_all, y_all = run.val
    shard = slice(run.info.rank, None, run.info.world_size)
    x_all, y_all = x_all[shard], y_all[shard]
    threat = make_threat(cfg.attack.threat, cfg.attack.eps)
    was_training = net.training
    net.eval()
    counts = torch.zeros(3, dtype=torch.float64)
    torch.manual_seed(derived_seed(cfg.train.seed, VALIDATION_STREAM, epoch))
    try:
        for start in range(0, x_all.shape[0], cfg.eval.batch_size):
            x = to_device(x_all[start:start + cfg.eval.batch_size], run.device,
                          cfg.train.channels_last)
            y = y_all[start:start + cfg.eval.batch_size].to(run.device)
            with autocast_context(run.device, cfg.train.precision):
                with torch.no_grad():
                    clean = net(x).argmax(1) == y
                x_adv = pgd(net, x, y, threat=threat, steps=cfg.eval.val_steps,
                            step_size=validation_step_size(cfg), loss="ce", random_start=True)
                with torch.no_grad():
                    robust = (net(x_adv).argmax(1) == y) & clean
            counts += torch.tensor([clean.sum().item(), robust.sum().item(), y.shape[0]],
                                   dtype=torch.float64)
    finally:
        net.train(was_training)
    clean_hits, robust_hits, total = all_reduce_sum(counts).tolist()
    return {"val_acc_clean": clean_hits / max(total, 1),
            "val_acc_robust": robust_hits / max(total, 1), "val_examples": int(total)}
