"""Objectives: pure loss terms and their registry (terms.py), weighted presets (objective.py)."""

from adrnet.objectives.objective import (LATENT_NORMS, LOG_LABELS, OBJECTIVES, Objective,
                                        make_objective, objective_from_config)
from adrnet.objectives.terms import (
    ADR_TERMS, TERM_NAMES, TERMS, Term, adr_terms, ce_adv, ce_clean, entropy, global_compactness,
    global_smoothness, local_compactness, local_smoothness, mart_bce, mart_kl, pair_weights, trades_kl,
)

__all__ = [
    "ADR_TERMS", "LATENT_NORMS", "LOG_LABELS", "OBJECTIVES", "TERMS", "TERM_NAMES", "Objective", "Term",
    "adr_terms", "ce_adv", "ce_clean", "entropy", "global_compactness", "global_smoothness",
    "local_compactness", "local_smoothness", "make_objective", "mart_bce", "mart_kl",
    "objective_from_config", "pair_weights",
    "trades_kl",
]
