"""The loss terms of PGD-AT, TRADES and ADR as pure functions (docs/method.md).

PGD-AT: Madry et al., ICLR 2018. TRADES: Zhang et al., ICML 2019. ADR: Bui et
al., "Improving Adversarial Robustness by Enforcing Local and Global
Compactness", ECCV 2020. Every term is a mean over the batch; ``sg`` below is
stop-gradient (``detach``). z is the latent of an intermediate layer, p/q the
softmax of the clean/adversarial logits, K = dim(z).

The global terms pair each adversarial row i with every clean column j. The
columns may come from the whole data-parallel batch (all ranks, gathered and
detached) while the rows are local: then the mean is over the local b×B
matrix, which after DDP's gradient averaging is exactly the single-process
objective of the full batch. Neither global term materialises a b×b×K or
b×b×C tensor: compactness uses ``torch.cdist(p=1)`` (O(b·B) memory) and
smoothness factorises into one (b×B)·(B×C) matrix product.

:data:`TERMS` at the end is the one registry of the terms: each term's function,
the arguments it reads, its log label and whether it is one of ADR's five.
The objective, the presets, config validation and the training logs all read the
term names from it when they need them, so a new term is one :func:`register_term`
call, from adrnet or from a user's own module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from adrnet.device import as_float32
from adrnet.errors import ConfigError
from adrnet.registry import Registry


def ce_clean(logits_clean: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy on the clean pass."""
    return F.cross_entropy(as_float32(logits_clean), y)


def ce_adv(logits_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy on the adversarial pass (the PGD-AT loss)."""
    return F.cross_entropy(as_float32(logits_adv), y)


def trades_kl(logits_clean: torch.Tensor, logits_adv: torch.Tensor) -> torch.Tensor:
    """Σ_i KL(p_i ‖ q_i) / b with gradient through both passes (TRADES' robust term)."""
    log_p = F.log_softmax(as_float32(logits_clean), dim=1)
    log_q = F.log_softmax(as_float32(logits_adv), dim=1)
    return (log_p.exp() * (log_p - log_q)).sum() / logits_clean.shape[0]


def local_compactness(z_clean: torch.Tensor, z_adv: torch.Tensor) -> torch.Tensor:
    """mean_i (1/K) Σ_k |sg(z_ik) − z'_ik|: pulls each adversarial latent to its clean one."""
    return (as_float32(z_clean).detach() - as_float32(z_adv)).abs().mean()


def local_smoothness(logits_clean: torch.Tensor, logits_adv: torch.Tensor) -> torch.Tensor:
    """mean_i −Σ_c sg(p_ic) log q_ic = KL(p‖q) + H(p), with gradient only into f'."""
    p = F.softmax(as_float32(logits_clean).detach(), dim=1)
    return -(p * F.log_softmax(as_float32(logits_adv), dim=1)).sum(dim=1).mean()


def pair_weights(y_rows: torch.Tensor, y_cols: torch.Tensor, scale: float, dtype=torch.float32) -> torch.Tensor:
    """w_ij = 1 if y_i = y_j else 1 − 1/scale, from the label indicator.

    Built from label equality (not one-hot vectors divided by a batch maximum as
    in the reference), so it works for any number of classes and a batch of one class.
    """
    same = y_rows[:, None] == y_cols[None, :]
    different = torch.tensor(1.0 - 1.0 / scale, dtype=dtype, device=y_rows.device)
    return torch.where(same, torch.ones((), dtype=dtype, device=y_rows.device), different)


def global_compactness(z_adv, z_clean_cols, y_rows, y_cols, scale: float = 0.99) -> torch.Tensor:
    """mean over pairs (i adversarial, j clean) of w_ij (1/K) Σ_k |sg(z_jk) − z'_ik|."""
    z_adv = as_float32(z_adv)
    z_cols = as_float32(z_clean_cols).detach().to(z_adv.dtype)
    distances = torch.cdist(z_adv, z_cols, p=1) / z_adv.shape[1]
    weights = pair_weights(y_rows, y_cols, scale, z_adv.dtype)
    return (weights * distances).mean()


def global_smoothness(logits_adv, probs_clean_cols, y_rows, y_cols, scale: float = 0.99) -> torch.Tensor:
    """mean over pairs of w_ij (−Σ_c sg(p_jc) log q_ic) = −(1/(bB)) Σ_i ⟨(W P)_i, log q_i⟩."""
    log_q = F.log_softmax(as_float32(logits_adv), dim=1)
    probs = as_float32(probs_clean_cols).detach().to(log_q.dtype)
    weights = pair_weights(y_rows, y_cols, scale, log_q.dtype)
    mixed_targets = weights @ probs
    return -(mixed_targets * log_q).sum() / (weights.shape[0] * weights.shape[1])


def entropy(logits_adv: torch.Tensor) -> torch.Tensor:
    """mean_i H(q_i), gradient through both q and log q (a detached target would give zero)."""
    log_q = F.log_softmax(as_float32(logits_adv), dim=1)
    return -(log_q.exp() * log_q).sum(dim=1).mean()


def adr_terms(z_clean, logits_clean, z_adv, logits_adv, y, scale: float = 0.99) -> dict:
    """The five ADR terms of one batch (single process), as a dict of scalar tensors.

    Keys: local_compactness, local_smoothness, global_compactness,
    global_smoothness, entropy. Gradients reach z_adv / logits_adv only
    (docs/method.md), for any number of classes, any batch size ≥ 1, fp32 or fp64.
    """
    probs_clean = F.softmax(as_float32(logits_clean).detach(), dim=1)
    return {
        "local_compactness": local_compactness(z_clean, z_adv),
        "local_smoothness": local_smoothness(logits_clean, logits_adv),
        "global_compactness": global_compactness(z_adv, z_clean, y, y, scale),
        "global_smoothness": global_smoothness(logits_adv, probs_clean, y, y, scale),
        "entropy": entropy(logits_adv),
    }


# MART: Wang, Zou, Yi, Bailey, Ma, Gu, "Improving Adversarial Robustness Requires
# Revisiting Misclassified Examples", ICLR 2020 (L∞ PGD on CE as the adversary).
# Nothing is detached, as in the authors' code (github.com/YisenWang/MART, mart.py):
# the weight (1 − p_y) and both sides of the KL carry gradient into both passes.
# Their code clamps with constants (log(1.0001 − q_k + 1e-12), 1.0000001 − p_y);
# here log(1 − q_k) is the exact log-sum-exp of the other classes, finite for any
# finite logits, and the weight is exactly 1 − p_y.


def mart_bce(logits_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """mean_i [−log q_iy − log(1 − max_{k≠y} q_ik)]: MART's boosted cross-entropy.

    The arg-max over the wrong classes is a discrete choice (no gradient); the
    second part pushes the strongest wrong class down. log(1 − q_k) is computed as
    logsumexp_{j≠k} f'_j − logsumexp_j f'_j, so it never takes the log of 0.
    """
    logits = as_float32(logits_adv)
    true_class = F.one_hot(y, logits.shape[1]).bool()
    runner_up = logits.masked_fill(true_class, float("-inf")).argmax(dim=1)
    others = logits.scatter(1, runner_up[:, None], float("-inf"))
    log_not_runner_up = torch.logsumexp(others, dim=1) - torch.logsumexp(logits, dim=1)
    return F.cross_entropy(logits, y) - log_not_runner_up.mean()


def mart_kl(logits_clean: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """mean_i KL(p_i ‖ q_i) · (1 − p_iy): MART's misclassification-aware KL.

    Examples the clean model gets wrong (small p_y) weigh most. Gradient flows
    through p (both inside the KL and through the weight) and through q.
    """
    log_p = F.log_softmax(as_float32(logits_clean), dim=1)
    log_q = F.log_softmax(as_float32(logits_adv), dim=1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=1)
    p_true = log_p.gather(1, y[:, None]).squeeze(1).exp()
    return (kl * (1.0 - p_true)).mean()


# The registry. A term names its arguments from what an objective has at hand for one
# batch; the passes it needs and its scope follow from those names, so they cannot
# disagree with what the function reads.
#: Read from the clean forward pass (the ``*_cols`` are its detached columns).
CLEAN_INPUTS = ("logits_clean", "z_clean", "z_cols", "probs_cols")
#: Read from the adversarial forward pass (and so need the attack).
ADV_INPUTS = ("logits_adv", "z_adv")
#: The clean side of a global term: every clean example of the batch, gathered from
#: all ranks under data parallelism (labels, detached latents, detached softmax).
COLUMN_INPUTS = ("y_cols", "z_cols", "probs_cols")
#: Everything a term may read: the above, the labels y and the pair-weight scale s.
INPUTS = ("logits_clean", "z_clean", "logits_adv", "z_adv", "y", *COLUMN_INPUTS, "scale")


@dataclass(frozen=True)
class Term:
    """One loss term: ``function(*inputs)`` is its batch value, ``label`` its short log name.

    Calling a ``Term`` calls its function, so ``TERMS[name](...)`` is the pure function.
    Add one with :func:`register_term`.
    ``adr`` marks the five terms ADR adds to its base (an ablation or a warm-up acts on
    these alone).
    """

    name: str
    function: Callable[..., torch.Tensor]
    inputs: tuple[str, ...]
    label: str
    adr: bool = False

    def __post_init__(self):
        unknown = [name for name in self.inputs if name not in INPUTS]
        if unknown:
            raise ConfigError(f"term {self.name!r} reads unknown input(s) {unknown}; known: {', '.join(INPUTS)}")

    @property
    def clean(self) -> bool:
        """Whether the term needs the clean forward pass."""
        return any(name in CLEAN_INPUTS for name in self.inputs)

    @property
    def adversarial(self) -> bool:
        """Whether the term needs the adversarial pass, and so the attack."""
        return any(name in ADV_INPUTS for name in self.inputs)

    @property
    def scope(self) -> str:
        """"global" pairs each adversarial example with every clean example of the whole
        (data-parallel) batch; "per_example" compares an example with itself only."""
        return "global" if any(name in COLUMN_INPUTS for name in self.inputs) else "per_example"

    @property
    def reads_latent(self) -> bool:
        """Whether the term reads z (the terms a latent normalisation acts on)."""
        return any(name in ("z_clean", "z_adv", "z_cols") for name in self.inputs)

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        return self.function(*args, **kwargs)


#: Every loss term by name, in registration order: the base terms, ADR's five, MART's two,
#: then any a user registers (:func:`register_term`).
TERMS: Registry[Term] = Registry("loss term")


def register_term(name: str, function: Callable[..., torch.Tensor], inputs: tuple[str, ...],
                  label: str, *, adr: bool = False, replace: bool = False) -> Term:
    """Add a loss term: ``function(*inputs)`` returns its batch value (a scalar tensor),
    ``inputs`` are names from :data:`INPUTS` (they decide the passes it needs and its
    scope), ``label`` is its short name in logs (unique, as the logs key on it), ``adr``
    marks a term an ablation or ADR warm-up acts on. A preset or a config's
    ``objective.weights`` can then weigh it by ``name``."""
    term = Term(name, function, tuple(inputs), label, adr)
    taken = {t.label for n, t in TERMS.items() if n != name or not replace} | {"loss"}
    if label in taken:
        raise ConfigError(f"term {name!r}: log label {label!r} is taken; choose another label")
    TERMS.register(name, term, replace=replace)
    return term


def adr_term_names() -> tuple[str, ...]:
    """The terms ADR adds to its base (the paper's five, docs/method.md, and any term
    registered with ``adr=True``), in registry order."""
    return tuple(name for name, term in TERMS.items() if term.adr)


register_term("ce_clean", ce_clean, ("logits_clean", "y"), "ce")
register_term("ce_adv", ce_adv, ("logits_adv", "y"), "ce_adv")
register_term("trades_kl", trades_kl, ("logits_clean", "logits_adv"), "kl")
register_term("local_compactness", local_compactness, ("z_clean", "z_adv"), "lc", adr=True)
register_term("local_smoothness", local_smoothness, ("logits_clean", "logits_adv"), "ls", adr=True)
register_term("global_compactness", global_compactness, ("z_adv", "z_cols", "y", "y_cols", "scale"),
              "gc", adr=True)
register_term("global_smoothness", global_smoothness, ("logits_adv", "probs_cols", "y", "y_cols", "scale"),
              "gs", adr=True)
register_term("entropy", entropy, ("logits_adv",), "H", adr=True)
register_term("mart_bce", mart_bce, ("logits_adv", "y"), "bce")
register_term("mart_kl", mart_kl, ("logits_clean", "logits_adv", "y"), "mkl")
