"""SmallCNN: the MNIST / Fashion-MNIST model of the ADR reference (and of TRADES).

Architecture (docs/method.md, Bui et al. ECCV 2020, following Zhang et al. ICML 2019):
conv32-ReLU-conv32-ReLU-maxpool2 - conv64-ReLU-conv64-ReLU-maxpool2 -
fc200-ReLU-dropout0.5 - fc200-ReLU - fc10, 3x3 convolutions without padding, last layer
zero-initialised. On 1x28x28: 28 -> 26 -> 24 -> 12 -> 10 -> 8 -> 4.

ADR's latent z is the flattened output of the second conv block (64*4*4 = 1024), so
that block's stage ends there (the flatten belongs to it); the fully connected layers
are separate stages so representation divergence can be followed layer by layer.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from adrnet.models.classifier import (Classifier, check_num_classes, check_positive_int,
                                     check_probability, image_shape)


def conv_block(in_channels: int, channels: int) -> list[nn.Module]:
    """conv3x3-ReLU-conv3x3-ReLU-maxpool2, no padding."""
    return [
        nn.Conv2d(in_channels, channels, 3), nn.ReLU(),
        nn.Conv2d(channels, channels, 3), nn.ReLU(),
        nn.MaxPool2d(2),
    ]


def conv_output_side(side: int) -> int:
    """Spatial side after both conv blocks (two valid 3x3 convs, then pool 2, twice)."""
    return ((side - 4) // 2 - 4) // 2


def build_smallcnn(*, num_classes: int, in_shape: Sequence[int], mean, std,
                   latent: str | None = None, hidden: int = 200,
                   dropout: float = 0.5) -> Classifier:
    """SmallCNN; ``latent`` defaults to "conv2" (the 1024-d flattened conv features)."""
    channels, height, width = image_shape(in_shape, "smallcnn", min_side=16)
    num_classes = check_num_classes(num_classes)
    hidden = check_positive_int("hidden", hidden)
    dropout = check_probability("dropout", dropout)
    flat = 64 * conv_output_side(height) * conv_output_side(width)
    logits = nn.Linear(hidden, num_classes)
    nn.init.zeros_(logits.weight)
    nn.init.zeros_(logits.bias)
    stages = {
        "conv1": nn.Sequential(*conv_block(channels, 32)),
        "conv2": nn.Sequential(*conv_block(32, 64), nn.Flatten(1)),
        "fc1": nn.Sequential(nn.Linear(flat, hidden), nn.ReLU(), nn.Dropout(dropout)),
        "fc2": nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU()),
        "logits": logits,
    }
    return Classifier(stages, in_shape=in_shape, mean=mean, std=std,
                      latent="conv2" if latent is None else latent)
