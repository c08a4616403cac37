"""Weighted compositions of loss terms: PGD-AT, TRADES, MART and ADR as presets.

An :class:`Objective` is a set of named weights over the registered terms
(``terms.TERMS``). Calling it runs the attack, the forward passes the active terms
need (as their registry entries say), and returns ``{"loss": ..., term: value, ...}``
so that every part can be logged. A term of weight 0 is not computed, and a pass no
active term needs is not run (PGD-AT with ``ce_clean = 0`` has no clean pass; TRADES
with β = 0 has no attack at all): ADR with every ADR weight 0 is its base, exactly.

Clean and adversarial batches go through the model in two separate forward
passes in the model's current mode (BatchNorm statistics per pass, as in the
ADR reference); ``concat=True`` runs one pass on the concatenation instead
(faster on GPUs, but BatchNorm then mixes clean and adversarial statistics).
The objective never touches the optimiser.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from adrnet.device import as_float32
from adrnet.errors import ConfigError
from adrnet.objectives.terms import TERMS, adr_term_names
from adrnet.registry import Registry


def log_labels() -> dict[str, str]:
    """The short label each scalar of an objective's output is logged under: the loss and
    every registered term (``logits_clean`` / ``logits_adv`` are batches, not logged)."""
    return {"loss": "loss", **{name: term.label for name, term in TERMS.items()}}


#: Presets by name: (term weights, the loss the training adversary maximises); see
#: :func:`register_objective` and docs/method.md.
OBJECTIVES: Registry[tuple[dict, str]] = Registry("objective")


def register_objective(name: str, weights: dict[str, float], attack_loss: str = "ce", *,
                       replace: bool = False) -> tuple[dict, str]:
    """Add a preset: ``weights`` over registered terms (refused if one names none, or if no
    weight is > 0) and ``attack_loss`` ("ce" or "kl": what PGD maximises in training)."""
    Objective(dict(weights), attack_loss)  # the checks every objective gets
    return OBJECTIVES.register(name, (dict(weights), attack_loss), replace=replace)


#: How the two compactness terms see the latents (docs/method.md allows these as options;
#: "none" is the reference). "l2" compares directions z/‖z‖₂ (cosine-style, as in the
#: authors' later ``hidden_norm`` switch and metric-learning adversarial training);
#: "rms" compares z/rms(z) = √K·z/‖z‖₂, the same directions at unit root-mean-square,
#: so the terms keep the magnitude they have on unit-scale features. Both remove the
#: one degree of freedom that lets the reference terms blow the latents up: their
#: scale (docs/training.md, "ADR's stability").
LATENT_NORMS = ("none", "l2", "rms")


@dataclass(frozen=True)
class Objective:
    """Named, weighted terms; ``attack_loss`` is what the training adversary maximises."""

    weights: dict = field(default_factory=dict)
    attack_loss: str = "ce"
    scale: float = 0.99
    concat: bool = False
    latent_norm: str = "none"

    def __post_init__(self):
        unknown = set(self.weights) - set(TERMS)
        if unknown:
            raise ConfigError(f"unknown objective term(s) {sorted(unknown)}; allowed: {', '.join(TERMS)}")
        if not any(weight > 0 for weight in self.weights.values()):
            raise ConfigError(f"an objective needs a term of weight > 0, got weights {self.weights}")
        if self.attack_loss not in ("ce", "kl"):
            raise ConfigError(f"objective attack_loss must be 'ce' or 'kl', got {self.attack_loss!r}")
        if not 0 < self.scale <= 1:
            raise ConfigError(f"objective scale s must be in (0, 1], got {self.scale}")
        if self.latent_norm not in LATENT_NORMS:
            raise ConfigError(f"objective latent_norm must be one of {', '.join(LATENT_NORMS)}, "
                              f"got {self.latent_norm!r}")

    @property
    def active(self) -> dict:
        """The terms with a non-zero weight."""
        return {name: w for name, w in self.weights.items() if w != 0}

    def with_adr_factor(self, factor: float) -> "Objective":
        """This objective with the five ADR weights multiplied by ``factor`` (a warm-up);
        a factor of 1 returns ``self``, so a finished warm-up is exactly the objective."""
        if factor == 1:
            return self
        adr = adr_term_names()
        weights = {name: w * factor if name in adr else w for name, w in self.weights.items()}
        return dataclasses.replace(self, weights=weights)

    def __call__(self, model, x, y, attack, gather=None) -> dict:
        """Loss and its parts for one batch; ``attack(model, x, y) -> x_adv`` runs on the
        unwrapped model; ``gather`` (DDP) all-gathers detached tensors across ranks."""
        active = self.active
        used = [TERMS[name] for name in active]
        need_clean = any(term.clean for term in used)
        x_adv = attack(getattr(model, "module", model), x, y) if any(term.adversarial for term in used) else None
        clean, adv = _forward(model, x if need_clean else None, x_adv, self.concat)
        if self.latent_norm != "none" and any(term.reads_latent for term in used):
            clean, adv = (_normalised(side, self.latent_norm) for side in (clean, adv))
        inputs = _inputs(used, clean, adv, y, gather, self.scale)
        values = {term.name: term.function(*(inputs[arg] for arg in term.inputs)) for term in used}
        loss = sum(active[name] * value for name, value in values.items())
        out = {"loss": loss}
        out.update({name: value.detach() for name, value in values.items()})
        if clean is not None:
            out["logits_clean"] = clean[0].detach()
        if adv is not None:
            out["logits_adv"] = adv[0].detach()
        return out


def _normalised(side, how: str):
    """(logits, z) with z scaled to unit L2 norm ("l2") or unit RMS ("rms") per example,
    in fp32; only the compactness terms read z, so nothing else changes."""
    logits, z = side
    unit = F.normalize(as_float32(z), dim=1)
    return logits, unit * math.sqrt(z.shape[1]) if how == "rms" else unit


def _gathered(t, gather):
    """This rank's detached tensor, or every rank's concatenated (data-parallel)."""
    return t if gather is None else gather(t.detach())


def _inputs(used, clean, adv, y, gather, scale) -> dict:
    """What the ``used`` terms read (terms.INPUTS), from the (logits, z) pairs of the two
    passes. The detached clean columns of the global terms (labels, latents,
    probabilities) are made, and gathered from all ranks, only when an active term reads
    them, always in this order (a gather is a collective: every rank must make the same calls)."""
    inputs = {"y": y, "scale": scale}
    if clean is not None:
        inputs["logits_clean"], inputs["z_clean"] = clean
    if adv is not None:
        inputs["logits_adv"], inputs["z_adv"] = adv
    read = {arg for term in used for arg in term.inputs}
    if "y_cols" in read:
        inputs["y_cols"] = _gathered(y, gather)
    if "z_cols" in read:
        inputs["z_cols"] = _gathered(clean[1].detach(), gather)
    if "probs_cols" in read:
        inputs["probs_cols"] = _gathered(F.softmax(as_float32(clean[0]).detach(), dim=1), gather)
    return inputs


def _forward(model, x_clean, x_adv, concat):
    """(logits, z) for the clean and adversarial batches; None for a pass not needed."""
    if concat and x_clean is not None and x_adv is not None:
        logits, z = model(torch.cat([x_clean, x_adv]), return_latent=True)
        b = x_clean.shape[0]
        return (logits[:b], z[:b]), (logits[b:], z[b:])
    clean = model(x_clean, return_latent=True) if x_clean is not None else None
    adv = model(x_adv, return_latent=True) if x_adv is not None else None
    return clean, adv


def make_objective(name: str, scale: float = 0.99, concat: bool = False,
                   latent_norm: str = "none", **weights) -> Objective:
    """A preset by name with any weight overridden (``make_objective("adr_pgd", entropy=0)``)."""
    preset, attack = OBJECTIVES.get(name)
    return Objective({**preset, **weights}, attack, scale, concat, latent_norm)


def objective_from_config(cfg) -> Objective:
    """The objective a run config's ``[objective]`` section describes."""
    section = cfg.objective
    return make_objective(section.name, scale=section.scale, concat=section.concat,
                          latent_norm=section.latent_norm, **section.weights)


_ADR_WEIGHTS = {name: 1.0 for name in adr_term_names()}
#: MART (Wang et al., ICLR 2020): boosted CE + β·weighted KL, β = 6 (the paper's and
#: its WRN code's default).
_MART_WEIGHTS = {"mart_bce": 1.0, "mart_kl": 6.0}
#: The presets (docs/method.md). TRADES' own β is 6; the ADR reference runs TRADES with
#: β = 1. ``adr_pgd_tf`` is the TensorFlow original's weighting: 0.5 CE(clean) + 0.5 CE(adv).
register_objective("pgd_at", {"ce_adv": 1.0}, "ce")
register_objective("trades", {"ce_clean": 1.0, "trades_kl": 6.0}, "kl")
register_objective("adr_pgd", {"ce_clean": 1.0, "ce_adv": 1.0, **_ADR_WEIGHTS}, "ce")
register_objective("adr_pgd_tf", {"ce_clean": 0.5, "ce_adv": 0.5, **_ADR_WEIGHTS}, "ce")
register_objective("adr_trades", {"ce_clean": 1.0, "trades_kl": 1.0, **_ADR_WEIGHTS}, "kl")
register_objective("mart", dict(_MART_WEIGHTS), "ce")
register_objective("adr_mart", {**_MART_WEIGHTS, **_ADR_WEIGHTS}, "ce")
