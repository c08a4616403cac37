"""Attacks: L∞/L2 threat models, one PGD loop (FGSM is one step of it, multi-targeted PGD
is C − 1 targeted runs of it), CE/CW/KL losses."""

from adrnet.attacks.losses import LOSSES, ce_loss, cw_loss, get_loss, kl_loss
from adrnet.attacks.multitargeted import multi_targeted
from adrnet.attacks.pgd import attack_mode, fgsm, pgd
from adrnet.attacks.threats import THREATS, L2, Linf, make_threat, trades_init

__all__ = [
    "LOSSES", "THREATS", "L2", "Linf", "attack_mode", "ce_loss", "cw_loss",
    "fgsm", "get_loss", "kl_loss", "make_threat", "multi_targeted", "pgd", "trades_init",
]
