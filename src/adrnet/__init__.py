"""adrnet: adversarially robust training with ADR (Bui et al., ECCV 2020).

ADR ("Adversary Divergence Reduction") adds local/global compactness and
smoothness terms on an intermediate layer to PGD adversarial training
(Madry et al., ICLR 2018) or TRADES (Zhang et al., ICML 2019).

    import adrnet
    model, cfg = adrnet.load_model("runs/quick")   # a trained classifier, eval mode
"""

from adrnet.errors import AdrnetError

__version__ = "0.1.0"
__all__ = ["AdrnetError", "__version__", "load_model"]


def load_model(run_dir_or_checkpoint, map_location="cpu", which: str = "best"):
    """(model in eval mode, Config) of a run directory or checkpoint file; see
    :func:`adrnet.runs.load_model` (imported on first use: ``import adrnet`` stays light)."""
    from adrnet.runs import load_model as load
    return load(run_dir_or_checkpoint, map_location, which)
