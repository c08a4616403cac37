"""adrnet: adversarially robust training with ADR (Bui et al., ECCV 2020).

ADR ("Adversary Divergence Reduction") adds local/global compactness and
smoothness terms on an intermediate layer to PGD adversarial training
(Madry et al., ICLR 2018) or TRADES (Zhang et al., ICML 2019).

    import adrnet
    model, cfg = adrnet.load_model("runs/quick")   # a trained classifier, eval mode

A user extends adrnet from their own module, never by editing it: ``register_model``,
``register_dataset``, ``register_term``, ``register_objective`` and ``register_attack``
add entries that configs and the command line (``--import MODULE``) then name.
"""

from adrnet.errors import AdrnetError

__version__ = "0.1.0"
__all__ = ["AdrnetError", "__version__", "load_model", "register_attack", "register_dataset",
           "register_model", "register_objective", "register_term"]


def load_model(run_dir_or_checkpoint, map_location="cpu", which: str = "best", model=None):
    """(model in eval mode, Config) of a run directory or checkpoint file; see
    :func:`adrnet.runs.load_model` (imported on first use: ``import adrnet`` stays light)."""
    from adrnet.runs import load_model as load
    return load(run_dir_or_checkpoint, map_location, which, model)


def register_model(name, builder=None, *, replace=False):
    """Add a model by name; see :func:`adrnet.models.register_model`."""
    from adrnet.models import register_model as register
    return register(name, builder, replace=replace)


def register_dataset(name, loader, **facts):
    """Add a data set by name; see :func:`adrnet.data.register_dataset`."""
    from adrnet.data import register_dataset as register
    return register(name, loader, **facts)


def register_term(name, function, inputs, label, *, adr=False, replace=False):
    """Add a loss term; see :func:`adrnet.objectives.register_term`."""
    from adrnet.objectives import register_term as register
    return register(name, function, inputs, label, adr=adr, replace=replace)


def register_objective(name, weights, attack_loss="ce", *, replace=False):
    """Add an objective preset; see :func:`adrnet.objectives.register_objective`."""
    from adrnet.objectives import register_objective as register
    return register(name, weights, attack_loss, replace=replace)


def register_attack(name, *args, **kwargs):
    """Add an attack for ``adrnet eval``; see :func:`adrnet.attacks.register_attack`."""
    from adrnet.attacks import register_attack as register
    return register(name, *args, **kwargs)
