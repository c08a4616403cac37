"""Attacks: L∞/L2 threat models, one PGD loop (FGSM is one step of it), CE/CW/KL losses."""

from adrnet.attacks.losses import LOSSES, ce_loss, cw_loss, get_loss, kl_loss
from adrnet.attacks.pgd import attack_mode, fgsm, pgd
from adrnet.attacks.threats import THREATS, L2, Linf, make_threat, trades_init

ATTACKS = {"pgd": pgd, "fgsm": fgsm}

__all__ = [
    "ATTACKS", "LOSSES", "THREATS", "L2", "Linf", "attack_mode", "ce_loss", "cw_loss",
    "fgsm", "get_loss", "kl_loss", "make_threat", "pgd", "trades_init",
]
