"""Threat models for L-infinity and L2 perturbations of images in [0, 1].

A threat model is everything that distinguishes the L∞ attack of Madry et al.
(ICLR 2018) from its L2 twin: how to draw a random start, how to take one
ascent step from a gradient, and how to project back onto the ε-ball
intersected with the image box [0, 1]. Keeping these three operations in a
small object is what lets :func:`adrnet.attacks.pgd` be the only attack loop.
All methods are pure: they never modify their inputs. Their in-place operations work on
fresh temporaries only, in the order of operations of the textbook formulas, so results
and memory formats are bit for bit those of the out-of-place versions, with one or two
fewer allocations per PGD step.

The radius is bounded here, and only here: inputs lie in [0, 1]^d, so an L∞
radius above 1 or an L2 radius above the box's diameter √d allows every image
in the box and measures nothing (a radius above float32's range even crashes
the attack). Each threat model checks its radius when it is built, and again
against d when it meets an input (:meth:`check_input`); configs and the
command line call :meth:`check_dim` as soon as they know d.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import ClassVar

import torch

from adrnet.errors import ConfigError
from adrnet.registry import Registry

#: Standard deviation of TRADES' start point x + 0.001·N(0, I) (Zhang et al., 2019).
TRADES_INIT_STD = 1e-3

#: The largest d checked when a threat is built without its input: √(2^32) = 65536
#: bounds L2 radii for any input of at most 2^32 values (16 GiB of float32 per image).
MAX_INPUT_VALUES = 2**32


def per_example_norm(t: torch.Tensor) -> torch.Tensor:
    """L2 norm of each example, shaped to broadcast against ``t``."""
    norms = t.flatten(1).norm(p=2, dim=1)
    return norms.view(-1, *([1] * (t.dim() - 1)))


@dataclass(frozen=True)
class _Ball:
    """A ball of radius ``eps`` whose bound is :meth:`max_eps`, checked when built."""

    eps: float
    name: ClassVar[str] = ""

    def __post_init__(self):
        self.check_dim(None)

    def max_eps(self, dim: int | None) -> tuple[float, str]:
        """(largest meaningful radius, why) for inputs of ``dim`` values in [0, 1]."""
        raise NotImplementedError

    def check_dim(self, dim: int | None) -> None:
        """Refuse a radius that is not a number from 0 to :meth:`max_eps`."""
        limit, why = self.max_eps(dim)
        eps = self.eps
        if not (isinstance(eps, numbers.Real) and not isinstance(eps, bool)
                and 0 <= eps <= limit):
            raise ConfigError(f"{self.name} eps must be a number from 0 to {limit:g} ({why}), "
                              f"got {eps!r}")

    def check_input(self, x: torch.Tensor) -> None:
        """Refuse this radius for the examples of batch ``x``."""
        self.check_dim(x[0].numel())


@dataclass(frozen=True)
class Linf(_Ball):
    """The L∞ ball ‖x' − x‖∞ ≤ eps; steps follow the sign of the gradient."""

    name: ClassVar[str] = "L∞"

    def max_eps(self, dim: int | None) -> tuple[float, str]:
        return 1.0, "inputs lie in [0, 1]; 8/255 is written 0.0314"

    def init(self, x: torch.Tensor) -> torch.Tensor:
        """Uniform random start in the ε-ball (Madry et al.), clipped to [0, 1]."""
        noise = torch.empty_like(x).uniform_(-self.eps, self.eps)
        return (x + noise).clamp_(0.0, 1.0)

    def step(self, x_adv: torch.Tensor, grad: torch.Tensor, step_size: float) -> torch.Tensor:
        return x_adv + grad.sign().mul_(step_size)

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        delta = (x_adv - x).clamp_(-self.eps, self.eps)
        return (x + delta).clamp_(0.0, 1.0)


@dataclass(frozen=True)
class L2(_Ball):
    """The L2 ball ‖x' − x‖₂ ≤ eps; steps follow the normalised gradient."""

    name: ClassVar[str] = "L2"

    def max_eps(self, dim: int | None) -> tuple[float, str]:
        """√d, the diameter of the [0, 1]^d box (√(2^32) while d is unknown)."""
        if dim is None:
            return math.sqrt(MAX_INPUT_VALUES), "the diameter of a box of 2^32 values"
        return math.sqrt(dim), f"√{dim}, the diameter of the [0, 1] box of {dim}-value inputs"

    def init(self, x: torch.Tensor) -> torch.Tensor:
        """Uniform random start in the L2 ball: a Gaussian direction, radius eps·u^(1/d)."""
        direction = torch.randn_like(x)
        direction = direction / per_example_norm(direction).clamp_min(1e-12)
        dim = x[0].numel()
        radius = torch.rand(x.shape[0], device=x.device, dtype=x.dtype) ** (1.0 / dim)
        radius = radius.view(-1, *([1] * (x.dim() - 1))) * self.eps
        return self.project(x + radius * direction, x)

    def step(self, x_adv: torch.Tensor, grad: torch.Tensor, step_size: float) -> torch.Tensor:
        return x_adv + (step_size * grad).div_(per_example_norm(grad).clamp_min(1e-12))

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        delta = x_adv - x
        factor = (self.eps / per_example_norm(delta).clamp_min(1e-12)).clamp(max=1.0)
        return (x + delta.mul_(factor)).clamp_(0.0, 1.0)


#: Threat models by name: classes built from ε with ``init`` / ``step`` / ``project``
#: (as :class:`Linf`, :class:`L2`); see :func:`register_threat`.
THREATS: Registry[type] = Registry("norm")


def register_threat(name: str, threat_class: type, *, replace: bool = False) -> type:
    """Add a threat model: a class taking ``eps`` with the methods of :class:`Linf`
    (``init``, ``step``, ``project``, ``max_eps``, ``check_dim``)."""
    return THREATS.register(name, threat_class, replace=replace)


register_threat("linf", Linf)
register_threat("l2", L2)


def make_threat(norm: str, eps: float, dim: int | None = None):
    """Threat model by name ("linf" or "l2"); its radius is checked against the ball's
    bound (for inputs of ``dim`` values when given). The one place ε and norm are
    validated: the config check and every evaluation build their threat here once and
    pass the object down."""
    threat = THREATS.get(norm)(eps)
    threat.check_dim(dim)
    return threat


def trades_init(threat, x: torch.Tensor) -> torch.Tensor:
    """TRADES' start point x + 0.001·N(0, I), projected into the threat's ball and [0, 1]."""
    return threat.project(x + TRADES_INIT_STD * torch.randn_like(x), x)
