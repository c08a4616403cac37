"""adrnet.eval: honest robustness evaluation of trained models, and reports.

Robust accuracy is the per-example worst case over every attack run (FGSM,
PGD-k with restarts, CW-margin PGD, AutoAttack by Croce & Hein 2020), in L∞ or
L2 balls; ε sweeps; gradient-masking sanity checks (Athalye et al. 2018;
Carlini et al. 2019); the representation diagnostics that motivate ADR (Bui et
al., ECCV 2020); and an HTML/Markdown report. Plots and t-SNE need matplotlib
and scikit-learn (the ``plots`` extra); they are imported only when used. The
modules compute; ``figures`` is the only one that draws and ``tables`` the only
one that writes tables. The command line lives in ``adrnet.cli``, never here.
"""

from adrnet.eval.autoattack import AutoAttackResult, autoattack_eval
from adrnet.eval.divergence import latent_tsne, layer_divergence
from adrnet.eval.evaluate import EvalOptions, evaluate_run
from adrnet.eval.report import write_report
from adrnet.eval.robust import EvalResult, robust_accuracy, summarize, worst_case
from adrnet.eval.sanity import SanityReport, sanity_checks
from adrnet.eval.sweep import PAPER_EPS, eps_sweep
from adrnet.eval.whitebox import AttackSettings, attack_settings, build_attacks, make_attack

__all__ = [
    "AttackSettings", "AutoAttackResult", "EvalOptions", "EvalResult", "PAPER_EPS", "SanityReport",
    "attack_settings", "autoattack_eval", "build_attacks", "eps_sweep", "evaluate_run",
    "latent_tsne", "layer_divergence", "make_attack", "robust_accuracy", "sanity_checks",
    "summarize", "worst_case", "write_report",
]
