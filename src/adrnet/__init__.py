"""adrnet: adversarially robust training with ADR (Bui et al., ECCV 2020).

ADR ("Adversary Divergence Reduction") adds local/global compactness and
smoothness terms on an intermediate layer to PGD adversarial training
(Madry et al., ICLR 2018) or TRADES (Zhang et al., ICML 2019).
"""

from adrnet.errors import AdrnetError

__version__ = "0.1.0"
__all__ = ["AdrnetError", "__version__"]
