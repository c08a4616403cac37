"""Objectives: pure loss terms (terms.py) and weighted presets (objective.py)."""

from adrnet.objectives.objective import (ADR_TERMS, LATENT_NORMS, OBJECTIVES, TERM_NAMES, Objective,
                                        make_objective)
from adrnet.objectives.terms import (
    adr_terms, ce_adv, ce_clean, entropy, global_compactness, global_smoothness,
    local_compactness, local_smoothness, mart_bce, mart_kl, pair_weights, trades_kl,
)

TERMS = {
    "ce_clean": ce_clean, "ce_adv": ce_adv, "trades_kl": trades_kl,
    "local_compactness": local_compactness, "local_smoothness": local_smoothness,
    "global_compactness": global_compactness, "global_smoothness": global_smoothness,
    "entropy": entropy, "mart_bce": mart_bce, "mart_kl": mart_kl,
}

__all__ = [
    "ADR_TERMS", "LATENT_NORMS", "OBJECTIVES", "TERMS", "TERM_NAMES", "Objective", "adr_terms", "ce_adv", "ce_clean",
    "entropy", "global_compactness", "global_smoothness", "local_compactness",
    "local_smoothness", "make_objective", "mart_bce", "mart_kl", "pair_weights", "trades_kl",
]
