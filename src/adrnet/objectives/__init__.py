"""Objectives: pure loss terms and their registry (terms.py), weighted presets (objective.py)."""

from adrnet.objectives.objective import (LATENT_NORMS, OBJECTIVES, Objective, log_labels,
                                        make_objective, objective_from_config, register_objective)
from adrnet.objectives.terms import (
    TERMS, Term, adr_term_names, adr_terms, ce_adv, ce_clean, entropy, global_compactness,
    global_smoothness, local_compactness, local_smoothness, mart_bce, mart_kl, pair_weights,
    register_term, trades_kl,
)

__all__ = [
    "LATENT_NORMS", "OBJECTIVES", "TERMS", "Objective", "Term", "adr_term_names", "adr_terms",
    "ce_adv", "ce_clean", "entropy", "global_compactness", "global_smoothness", "local_compactness",
    "local_smoothness", "log_labels", "make_objective", "mart_bce", "mart_kl",
    "objective_from_config", "pair_weights", "register_objective", "register_term", "trades_kl",
]
