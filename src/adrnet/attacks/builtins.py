"""The attacks adrnet ships, registered in ``ATTACKS`` exactly as a user's would be.

fgsm, pgd, cw and mt run adrnet's PGD loop (``whitebox``); bb is Brendel & Bethge
through foolbox (``brendel_bethge``); autoattack is Croce & Hein's ensemble through
pyautoattack (``autoattack``), which evaluates the whole set itself (resumable state
file, accuracy after each attack); square is that ensemble's Square alone at a larger
budget, the follow-up its Square flag asks for. foolbox and pyautoattack are imported
only when their attack is built or run.
"""

from __future__ import annotations

import torch

from adrnet.attacks.brendel_bethge import BB_INIT_STEPS, BB_STEPS
from adrnet.attacks.registry import AttackRun, norm_of, register_attack
from adrnet.attacks.whitebox import attack_settings, make_attack, whitebox_label


def _whitebox(name: str, description: str) -> None:
    """Register one of adrnet's PGD-loop attacks: its settings, label and runner come
    from :func:`attack_settings` (so eval.json records what it always recorded)."""
    def settings(threat, options):
        return attack_settings(name, norm=norm_of(threat), eps=threat.eps, **options)

    if name == "fgsm":  # one step of size ε: none of the PGD knobs
        def build(threat):
            return make_attack(settings(threat, {}), threat)
    else:
        def build(threat, *, steps=20, step_size=None, restarts=1, random_start=True):
            options = dict(steps=steps, step_size=step_size, restarts=restarts, random_start=random_start)
            return make_attack(settings(threat, options), threat)
    register_attack(name, build, description=description,
                    label_of=lambda options: whitebox_label(name, options.get("steps", 1),
                                                            options.get("restarts", 1)),
                    settings_of=lambda threat, options: settings(threat, options).to_dict())


_whitebox("fgsm", "one step of size eps from x, no random start (Goodfellow et al. 2015)")
_whitebox("pgd", "PGD-k on cross-entropy from a random start, best of --restarts (Madry et al. 2018)")
_whitebox("cw", "PGD-k on the Carlini-Wagner margin max_{j!=y} f_j - f_y")
_whitebox("mt", "multi-targeted PGD-k, one targeted CW-margin run per wrong class (Gowal et al. 2019)")


def _bb(threat, options: dict):
    from adrnet.attacks.brendel_bethge import BrendelBethge
    return BrendelBethge(norm_of(threat), threat.eps, steps=options["walk_steps"],
                         init_steps=options["init_steps"], init_eps=options["init_eps"],
                         lr=options["lr"], overshoot=options["overshoot"])


def _bb_build(threat, *, walk_steps=BB_STEPS, init_steps=BB_INIT_STEPS, init_eps=None, lr=1e-3,
              overshoot=1.1):
    """B&B: ``settings()`` is what eval.json records, ``summary()`` its distances.
    ``walk_steps`` is not called ``steps``: --steps sets PGD's steps, not the boundary walk's."""
    from adrnet.attacks.brendel_bethge import check_foolbox
    options = dict(walk_steps=walk_steps, init_steps=init_steps, init_eps=init_eps, lr=lr,
                   overshoot=overshoot)
    norm_of(threat)
    check_foolbox()  # fails before any other attack runs
    return _bb(threat, options)


register_attack("bb", _bb_build, expensive=True, bf16=False,
                description="Brendel & Bethge via foolbox, 200 steps from a PGD-20 start, needs adrnet[bb]",
                settings_of=lambda threat, options: _bb(threat, options).settings())


def _aa_settings(threat, version, attacks, seed, square_queries, square_restarts=None) -> dict:
    from adrnet.attacks.autoattack import autoattack_settings
    return autoattack_settings(norm_of(threat), threat.eps, version=version,
                               attacks=list(attacks) if attacks else None, seed=seed,
                               square_queries=square_queries, square_restarts=square_restarts)


def _aa_build(threat, *, version="standard", attacks=None, seed=0, square_queries=None,
              state_path=None):
    """AutoAttack on one batch (:func:`adrnet.attacks.autoattack.autoattack_batch`)."""
    from functools import partial

    from adrnet.attacks.autoattack import autoattack_batch
    from adrnet.errors import ConfigError
    if state_path is not None:
        raise ConfigError("an AutoAttack state file resumes a run over the whole set "
                          "(ATTACKS['autoattack'].evaluate), not one batch")
    return partial(autoattack_batch, settings=_aa_settings(threat, version, attacks, seed, square_queries))


#: AutoAttack's batch on CPU: a state file saves each batch as it finishes, and at about
#: 1.5 s per robust MNIST image in fp32 a batch of 32 is under a minute of work, all that
#: an interrupted evaluation can lose. (On a GPU the evaluation's batch size is kept.)
CPU_BATCH = 32


def _aa_evaluate(model, x, y, threat, *, device="cpu", batch_size=128, progress=False,
                 version="standard", attacks=None, seed=0, square_queries=None,
                 state_path=None, judge=None, square_restarts=None) -> AttackRun:
    """The whole set through :func:`adrnet.attacks.autoattack.autoattack_eval` (resumable)."""
    from adrnet.attacks.autoattack import autoattack_eval
    if torch.device(device).type == "cpu":  # each batch is saved as it finishes: see CPU_BATCH
        batch_size = min(batch_size, CPU_BATCH)
    result = autoattack_eval(model, x, y, norm=norm_of(threat), eps=threat.eps, version=version,
                             attacks=list(attacks) if attacks else None, device=device, seed=seed,
                             batch_size=batch_size, state_path=state_path,
                             square_queries=square_queries, progress=progress, judge=judge,
                             square_restarts=square_restarts)
    summary = {"accuracy_after": result.accuracy_after, "warnings": result.warnings,
               "resumed_seconds": round(result.resumed_seconds, 1)}
    if judge is not None:
        summary["bf16_only"] = result.bf16_only
    return AttackRun(correct=result.robust, settings=result.settings, summary=summary)


register_attack("autoattack", _aa_build, evaluate=_aa_evaluate, expensive=True,
                description="AutoAttack's ensemble via pyautoattack, see --aa-version, --aa-attacks, --aa-state",
                settings_of=lambda threat, options: _aa_settings(
                    threat, options["version"], options["attacks"], options["seed"],
                    options["square_queries"]))


#: The square attack's default budget, four times AutoAttack's Square (5000 queries, 1
#: restart): the 10000 queries of the Square paper (Andriushchenko et al., ECCV 2020), twice.
SQUARE_QUERIES, SQUARE_RESTARTS = 10000, 2


def _square_settings(threat, options: dict) -> dict:
    return _aa_settings(threat, "custom", ["square"], options["seed"], options["square_queries"],
                        options["square_restarts"])


def _square_build(threat, *, square_queries=SQUARE_QUERIES, square_restarts=SQUARE_RESTARTS, seed=0,
                  state_path=None):
    """AutoAttack's Square alone, at this budget, on one batch."""
    from functools import partial

    from adrnet.attacks.autoattack import autoattack_batch
    from adrnet.errors import ConfigError
    if state_path is not None:
        raise ConfigError("a square state file resumes a run over the whole set "
                          "(ATTACKS['square'].evaluate), not one batch")
    return partial(autoattack_batch, settings=_square_settings(
        threat, dict(square_queries=square_queries, square_restarts=square_restarts, seed=seed)))


def _square_evaluate(model, x, y, threat, *, square_queries=SQUARE_QUERIES, square_restarts=SQUARE_RESTARTS,
                     seed=0, state_path=None, judge=None, **run) -> AttackRun:
    """The follow-up AutoAttack's Square flag asks for (:func:`adrnet.attacks.autoattack.square_flag`):
    its Square with more queries and restarts over the whole set, resumable like AutoAttack
    (its own state file), its breaks joining the per-example worst case."""
    return _aa_evaluate(model, x, y, threat, version="custom", attacks=["square"], seed=seed,
                        square_queries=square_queries, square_restarts=square_restarts, state_path=state_path,
                        judge=judge, **run)


register_attack("square", _square_build, evaluate=_square_evaluate, expensive=True,
                description=f"AutoAttack's Square alone with a larger budget ({SQUARE_QUERIES} "
                            f"queries x {SQUARE_RESTARTS} restarts; --square-queries, "
                            "--square-restarts, --square-state): the follow-up to its Square flag",
                label_of=lambda options: whitebox_label("square", options["square_queries"],
                                                        options["square_restarts"]),
                settings_of=_square_settings)
