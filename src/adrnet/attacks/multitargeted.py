"""Multi-targeted PGD (Gowal et al., "An Alternative Surrogate Loss for PGD-based
Adversarial Testing", 2019), the attack of the ADR authors' TensorFlow evaluation.

Why: an untargeted PGD follows the steepest class and can miss a nearby wrong
class that a second direction would reach. Multi-targeted PGD runs adrnet's one
PGD loop (``pgd(..., targeted=True)``) once towards every wrong class
t = y + 1, ..., y + C − 1 (mod C), and an example is robust only if it survives
all C − 1 runs. The targeted loss is the CW margin towards t, minimised:
max_{j≠t} f_j − f_t, i.e. it raises f_t above every other logit (f_y first).
Threat model: the given L∞ or L2 ball around x, inside [0, 1].
"""

from __future__ import annotations

import torch

from adrnet.attacks.pgd import attack_mode, pgd


@torch.no_grad()
def _logits(model, x):
    """Logits in eval mode (every submodule's mode restored)."""
    with attack_mode(model):
        return model(x)


def multi_targeted(model, x, y, *, threat, steps, step_size, loss="cw", random_start=True,
                   restarts=1, keep_train_mode=False):
    """Adversarial examples x' from PGD-``steps`` towards each wrong class in turn.

    Each example keeps the first target's point that it is misclassified at;
    an example no target breaks keeps the last target's point (so the caller's
    "still correct after the attack" check reads "survived every target").
    Examples already broken are not attacked again (same result, less work).
    """
    num_classes = int(_logits(model, x[:1]).shape[1])
    best = x.clone()
    alive = torch.ones(len(x), dtype=torch.bool, device=x.device)
    for offset in range(1, num_classes):
        index = alive.nonzero().flatten()
        if len(index) == 0:
            break
        xs, ys = x[index], y[index]
        target = (ys + offset) % num_classes
        x_adv = pgd(model, xs, target, threat=threat, steps=steps, step_size=step_size,
                    loss=loss, random_start=random_start, restarts=restarts, targeted=True,
                    keep_train_mode=keep_train_mode)
        best[index] = x_adv
        alive[index] = _logits(model, x_adv).argmax(1) == ys
    return best
