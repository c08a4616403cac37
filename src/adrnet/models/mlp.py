"""A small MLP for the 2-D toy data sets (moons, circles, blobs).

Used where decision boundaries and latent clusters can be drawn directly (examples/toy.py,
the fast tests).
Stages: fc1, fc2, ... (Linear-ReLU each), logits; the latent z defaults to the last
hidden layer, the feature that feeds the final linear layer, as for the CNNs.
Inputs of any shape are flattened first, so the MLP also runs on images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from adrnet.errors import ConfigError
from adrnet.models.classifier import Classifier, check_num_classes, check_positive_int


def build_mlp(*, num_classes: int, in_shape: Sequence[int], mean, std,
              latent: str | None = None, hidden: Sequence[int] = (64, 64)) -> Classifier:
    """MLP with ReLU hidden layers ``hidden``; ``latent`` defaults to the last one."""
    num_classes = check_num_classes(num_classes)
    if isinstance(hidden, int) or not hidden:
        raise ConfigError(f"mlp hidden must be a non-empty list of widths, got {hidden!r}")
    widths = [check_positive_int("mlp hidden width", w) for w in hidden]
    in_features = math.prod(int(d) for d in in_shape)
    stages: dict[str, nn.Module] = {}
    for index, width in enumerate(widths, start=1):
        layers = [nn.Linear(in_features, width), nn.ReLU()]
        stages[f"fc{index}"] = nn.Sequential(*([nn.Flatten(1)] if index == 1 else []), *layers)
        in_features = width
    stages["logits"] = nn.Linear(in_features, num_classes)
    return Classifier(stages, in_shape=in_shape, mean=mean, std=std,
                      latent=f"fc{len(widths)}" if latent is None else latent)
