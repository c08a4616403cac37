"""The common shape of every adrnet model: normalise, then named stages, then logits.

ADR (Bui et al., ECCV 2020) regularises an intermediate representation z = h(x) of
the same network that produces the logits f = g(z). The method needs z from the
*normal* forward pass (so DDP's gradient hooks stay correct and no forward hooks are
needed), and the paper's diagnostics compare clean and adversarial representations at
every layer. So a model here is an ordered dict of named stages; one of them is the
latent stage whose output, flattened to [B, K], is z; the last produces the logits.

Normalisation ((x - mean) / std, per channel) is the model's first operation, not a
stage: attacks and threat models (L∞ / L2 balls in [0, 1] pixel space) always see
inputs in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

from adrnet.errors import ConfigError


class Normalize(nn.Module):
    """(x - mean) / std per channel (dim 1), with mean and std as buffers."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], in_shape: Sequence[int]):
        super().__init__()
        channels = int(in_shape[0])
        mean_t = _per_channel("mean", mean, channels)
        std_t = _per_channel("std", std, channels)
        if not bool((std_t > 0).all()):
            raise ConfigError(f"std must be positive in every channel, got {std_t.tolist()}")
        view = (1, channels) + (1,) * (len(in_shape) - 1)
        self.register_buffer("mean", mean_t.view(view))
        self.register_buffer("std", std_t.view(view))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def _per_channel(what: str, values: Sequence[float], channels: int) -> Tensor:
    try:
        values = [float(v) for v in (values if isinstance(values, Iterable) else [values])]
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{what} must be numbers, one per channel, got {values!r}") from err
    if not all(math.isfinite(v) for v in values):
        raise ConfigError(f"{what} must be finite numbers, got {values}")
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise ConfigError(
            f"{what} has {len(values)} values but the input has {channels} channels: "
            f"give one value per channel (or a single value for all)"
        )
    return torch.tensor(values, dtype=torch.float32)


class Classifier(nn.Module):
    """Normalize -> stages (in order) -> logits, exposing the latent stage's output as z.

    ``stages``: ordered ``nn.ModuleDict``; the last stage produces the logits.
    ``latent``: name of the stage whose output, flattened to [B, K], is z.
    ``stage_shapes``: per-example output shape of every stage, inferred from
    ``in_shape`` on the meta device (no real forward pass, no memory).
    """

    def __init__(self, stages: dict[str, nn.Module], *, in_shape: Sequence[int],
                 mean: Sequence[float], std: Sequence[float], latent: str):
        super().__init__()
        self.in_shape = tuple(int(d) for d in in_shape)
        self.normalize = Normalize(mean, std, self.in_shape)
        self.stages = nn.ModuleDict(stages)
        self.stage_shapes = self._infer_stage_shapes()
        self.latent = latent

    @property
    def latent(self) -> str:
        return self._latent

    @latent.setter
    def latent(self, name: str) -> None:
        if name not in self.stages:
            raise ConfigError(
                f"unknown latent stage {name!r}; this model's stages are "
                f"{list(self.stages)}"
            )
        self._latent = name

    @property
    def latent_dim(self) -> int:
        """K = dim(z), the flattened size of the latent stage's output."""
        return math.prod(self.stage_shapes[self._latent])

    @property
    def num_classes(self) -> int:
        return self.stage_shapes[list(self.stages)[-1]][0]

    def forward(self, x: Tensor, return_latent: bool = False):
        out = self.normalize(x)
        z = None
        for name, stage in self.stages.items():
            out = stage(out)
            if name == self._latent:
                z = out.flatten(1)
        return (out, z) if return_latent else out

    def forward_stages(self, x: Tensor) -> dict[str, Tensor]:
        """Every stage's output, in order (the last is the logits)."""
        outputs = {}
        out = self.normalize(x)
        for name, stage in self.stages.items():
            out = stage(out)
            outputs[name] = out
        return outputs

    def _infer_stage_shapes(self) -> dict[str, tuple[int, ...]]:
        """Run the stages on meta tensors (eval mode) to get each output's shape."""
        tensors = dict(self.named_parameters())
        tensors.update(self.named_buffers())
        meta = {k: torch.empty_like(v, device="meta") for k, v in tensors.items()}
        was_training = self.training
        self.eval()
        try:
            out = torch.empty((1,) + self.in_shape, device="meta")
            shapes = {}
            for name in self.stages:
                stage_tensors = _prefixed(meta, f"stages.{name}.")
                out = functional_call(self.stages[name], stage_tensors, (out,))
                shapes[name] = tuple(out.shape[1:])
        except RuntimeError as err:
            raise ConfigError(
                f"input shape {self.in_shape} does not fit this model ({err}); "
                f"use a larger or correctly shaped input"
            ) from err
        finally:
            self.train(was_training)
        return shapes


def _prefixed(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def image_shape(in_shape: Sequence[int], model: str, min_side: int) -> tuple[int, int, int]:
    """Check that ``in_shape`` is (C, H, W) with H, W >= min_side; return it."""
    shape = tuple(int(d) for d in in_shape)
    if len(shape) != 3 or min(shape) < 1 or min(shape[1:]) < min_side:
        raise ConfigError(
            f"{model} needs an image input shape (C, H, W) with H, W >= {min_side}, "
            f"got {tuple(in_shape)}"
        )
    return shape


def check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    return num_classes


def check_positive_int(what: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    return value


def check_probability(what: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(f"{what} must be a number in [0, 1), got {value!r}")
    return float(value)
