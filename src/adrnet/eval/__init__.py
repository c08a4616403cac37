"""adrnet.eval: honest robustness evaluation of trained models.

Robust accuracy is the per-example worst case over every attack run (FGSM,
PGD-k with restarts, CW-margin PGD, AutoAttack by Croce & Hein 2020), in L∞ or
L2 balls; ε sweeps; gradient-masking sanity checks (Athalye et al. 2018;
Carlini et al. 2019); the representation diagnostics that motivate ADR (Bui et
al., ECCV 2020). The modules compute and ``evaluate`` writes ``eval.json``;
showing it (tables, figures, the HTML/Markdown report) is ``adrnet.report``'s job,
so nothing here imports matplotlib. t-SNE needs scikit-learn (the ``plots`` extra),
imported only when used. The command line lives in ``adrnet.cli``, never here.
"""

# the attacks themselves live in adrnet.attacks (one registry, ATTACKS); re-exported here
from adrnet.attacks import AttackSettings, attack_settings, build_attacks, make_attack
from adrnet.attacks.autoattack import AutoAttackResult, autoattack_eval
from adrnet.eval.divergence import latent_tsne, layer_divergence
from adrnet.eval.evaluate import EvalOptions, evaluate_model, evaluate_run
from adrnet.eval.robust import EvalResult, robust_accuracy, summarize, worst_case
from adrnet.eval.sanity import SanityReport, sanity_checks
from adrnet.eval.sweep import PAPER_EPS, eps_sweep

__all__ = [
    "AttackSettings", "AutoAttackResult", "EvalOptions", "EvalResult", "PAPER_EPS", "SanityReport",
    "attack_settings", "autoattack_eval", "build_attacks", "eps_sweep", "evaluate_model", "evaluate_run",
    "latent_tsne", "layer_divergence", "make_attack", "robust_accuracy", "sanity_checks",
    "summarize", "worst_case",
]
