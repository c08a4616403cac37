"""Attacks: L∞/L2 threat models, one PGD loop (FGSM is one step of it, multi-targeted PGD
is C − 1 targeted runs of it), CE/CW/KL losses, and every attack of ``adrnet eval``
behind one registry, ``ATTACKS`` (fgsm, pgd, cw, mt, bb, autoattack; a user adds one
with :func:`register_attack`)."""

from adrnet.attacks.losses import LOSSES, ce_loss, cw_loss, get_loss, kl_loss
from adrnet.attacks.multitargeted import multi_targeted
from adrnet.attacks.pgd import attack_mode, fgsm, pgd
from adrnet.attacks.threats import THREATS, L2, Linf, make_threat, register_threat, trades_init
from adrnet.attacks.registry import (ATTACKS, AttackRun, AttackSpec, build_attacks, norm_of,
                                    parse_attack_names, register_attack)
from adrnet.attacks.whitebox import AttackSettings, attack_settings, make_attack
import adrnet.attacks.builtins  # noqa: E402,F401  (registers the built-in attacks)

__all__ = [
    "LOSSES", "THREATS", "L2", "Linf", "attack_mode", "ce_loss", "cw_loss",
    "fgsm", "get_loss", "kl_loss", "make_threat", "multi_targeted", "pgd", "register_threat", "trades_init",
    "ATTACKS", "AttackRun", "AttackSettings", "AttackSpec", "attack_settings", "build_attacks",
    "make_attack", "norm_of", "parse_attack_names", "register_attack",
]
