"""The Brendel & Bethge attack (Brendel et al., "Accurate, reliable and fast robustness
evaluation", NeurIPS 2019) through foolbox, with the ADR authors' PGD initialisation.

Why: B&B walks along the decision boundary from an adversarial starting point
towards the clean input and so finds (nearly) minimal perturbations, the third
attack of the ADR paper's evaluation (Bui et al., ECCV 2020). Their protocol:
start from a PGD-20 run (random start, step ε/2) at radius ε, run B&B for 200
steps on the examples where that start is adversarial (B&B needs an adversarial
start), and count an example as broken when its B&B point is at distance ≤ ε.
adrnet projects every B&B point farther than ε onto the ε-ball (and [0, 1]) and
lets the model's prediction decide, so a returned point is never outside the
threat model; where rounding puts a boundary point back on the true side, the
(adversarial) start within ε is kept. Because B&B only shrinks a starting perturbation, at the init's own
radius it breaks exactly the examples the init broke; its use there is the
distance it reports. ``init_eps`` > ε starts it further out, where B&B can break
examples that PGD at ε missed. Threat models: L∞ (LinfinityBrendelBethgeAttack)
and L2 (L2BrendelBethgeAttack) balls around x in [0, 1].
"""

from __future__ import annotations

import torch

from adrnet.attacks.pgd import attack_mode, pgd
from adrnet.attacks.threats import make_threat
from adrnet.errors import ConfigError

INSTALL_HINT = "pip install 'adrnet[bb]' (foolbox 3.3.4 and numba)"
#: The ADR authors' protocol: 200 B&B steps from a PGD-20 start (step init_eps / 2).
BB_STEPS, BB_INIT_STEPS = 200, 20
ROUNDING = 1e-5  # relative slack of "distance <= eps" for float rounding of x + delta
BB_CLASSES = {"linf": "LinfinityBrendelBethgeAttack", "l2": "L2BrendelBethgeAttack"}


def _foolbox():
    """The foolbox module, or a ConfigError that says how to install it."""
    try:
        import foolbox
        import numba  # noqa: F401  (foolbox's B&B needs it but does not declare it)
    except ImportError as exc:
        raise ConfigError(f"--attacks bb needs foolbox and numba ({exc.name} is missing): "
                          f"{INSTALL_HINT}") from None
    return foolbox


def check_foolbox() -> None:
    """Fail early, before any other attack runs, when B&B cannot run."""
    _foolbox()


def distances(x_adv: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-example L∞ or L2 distance."""
    delta = (x_adv - x).flatten(1)
    return delta.abs().amax(1) if norm == "linf" else delta.norm(p=2, dim=1)


class BrendelBethge:
    """``attack(model, x, y) -> x_adv``; keeps each attacked example's B&B distance
    (``inf`` where the PGD start found no adversarial point) in ``self.distances``."""

    def __init__(self, norm: str, eps: float, *, steps: int = BB_STEPS, init_steps: int = BB_INIT_STEPS,
                 init_eps: float | None = None, lr: float = 1e-3, overshoot: float = 1.1):
        if norm not in BB_CLASSES:
            raise ConfigError(f"B&B supports norms {', '.join(BB_CLASSES)}, got {norm!r}")
        self.norm, self.eps, self.steps, self.init_steps = norm, float(eps), steps, init_steps
        self.init_eps = self.eps if init_eps is None else float(init_eps)
        self.lr, self.overshoot = lr, overshoot
        self.distances: list[torch.Tensor] = []

    def settings(self) -> dict:
        return {"name": "bb", "norm": self.norm, "eps": self.eps, "steps": self.steps,
                "init": f"pgd-{self.init_steps}", "init_eps": self.init_eps,
                "init_step_size": self.init_eps / 2, "lr": self.lr,
                "overshoot": self.overshoot, "source": "foolbox"}

    def _start(self, model, x, y) -> torch.Tensor:
        """The ADR protocol's start: PGD-k, uniform random start, step init_eps / 2."""
        return pgd(model, x, y, threat=make_threat(self.norm, self.init_eps),
                   steps=self.init_steps, step_size=self.init_eps / 2)

    def _boundary_walk(self, model, x, y, start) -> torch.Tensor:
        fb = _foolbox()
        attack = getattr(fb.attacks, BB_CLASSES[self.norm])(
            steps=self.steps, lr=self.lr, overshoot=self.overshoot)
        fmodel = fb.PyTorchModel(model, bounds=(0.0, 1.0), device=x.device)
        return attack.run(fmodel, x, fb.criteria.Misclassification(y), starting_points=start)

    def _inside(self, points: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Points within ε unchanged (B&B's sit on the decision boundary, where even the
        rounding of x + (x' − x) can flip the class; ``ROUNDING`` allows the ulp that
        adrnet's own projection leaves), the others projected onto the ball."""
        within = distances(points, x, self.norm) <= self.eps * (1 + ROUNDING)
        projected = make_threat(self.norm, self.eps).project(points, x)
        return torch.where(within.view(-1, *[1] * (x.dim() - 1)), points, projected)

    @torch.no_grad()
    def _keep_adversarial(self, model, walked, start, y) -> torch.Tensor:
        """The B&B point where the model (on this whole batch, as the caller will
        evaluate it) calls it adversarial, else the PGD start: a boundary point that
        rounding puts back on the true side must not undo what the start achieved."""
        fooled = model(walked).argmax(1) != y
        return torch.where(fooled.view(-1, *[1] * (walked.dim() - 1)), walked, start)

    def __call__(self, model, x, y) -> torch.Tensor:
        _foolbox()
        with attack_mode(model):
            start = self._start(model, x, y)
            with torch.no_grad():
                found = model(start).argmax(1) != y
            fallback = self._inside(start, x)
            walked, dist = fallback.clone(), torch.full((len(x),), float("inf"))
            if found.any():
                points = self._boundary_walk(model, x[found], y[found], start[found]).detach()
                dist[found.cpu()] = distances(points, x[found], self.norm).float().cpu()
                walked[found] = self._inside(points, x[found])
            x_adv = self._keep_adversarial(model, walked, fallback, y)
        self.distances.append(dist)
        return x_adv

    def summary(self) -> dict:
        """Median and count of the finite B&B distances seen so far."""
        every = torch.cat(self.distances) if self.distances else torch.zeros(0)
        finite = every[torch.isfinite(every)]
        return {"attacked": int(every.numel()), "started": int(finite.numel()),
                "median_distance": float(finite.median()) if finite.numel() else None,
                "within_eps": int((finite <= self.eps).sum())}
