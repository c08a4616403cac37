"""Per-example attack losses: cross-entropy, CW margin and the TRADES KL.

Each loss maps (logits_adv, y, logits_clean) to one value per example, which
the attack maximises. They are computed in float32 even when the forward pass
ran under bf16/fp16 autocast, so that the gradient sign is not decided by
rounding noise.

- ``ce``: cross-entropy (Madry et al., ICLR 2018).
- ``cw``: the margin max_{j≠y} f_j − f_y of Carlini & Wagner (S&P 2017), used
  as a PGD loss ("CW-L∞"); it ignores the softmax and so is robust to
  logit scaling.
- ``kl``: KL(p_clean ‖ q_adv), the inner maximisation of TRADES (Zhang et al.,
  ICML 2019); ``logits_clean`` is required and treated as a constant.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from adrnet.device import as_float32
from adrnet.errors import ConfigError


def ce_loss(logits_adv, y, logits_clean=None):
    return F.cross_entropy(as_float32(logits_adv), y, reduction="none")


def cw_loss(logits_adv, y, logits_clean=None):
    logits = as_float32(logits_adv)
    true_logit = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return others.amax(dim=1) - true_logit


def kl_loss(logits_adv, y, logits_clean=None):
    if logits_clean is None:
        raise ValueError("the kl attack loss needs logits_clean")
    log_p = F.log_softmax(as_float32(logits_clean).detach(), dim=1)
    log_q = F.log_softmax(as_float32(logits_adv), dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


LOSSES = {"ce": ce_loss, "cw": cw_loss, "kl": kl_loss}


def get_loss(name: str):
    """Attack loss by name; a clear error lists the allowed names."""
    if name not in LOSSES:
        raise ConfigError(f"unknown attack loss {name!r}; allowed: {', '.join(LOSSES)}")
    return LOSSES[name]
