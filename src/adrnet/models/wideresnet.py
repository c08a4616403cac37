"""WideResNet (Zagoruyko & Komodakis, BMVC 2016), CIFAR form, depth and width configurable.

WRN-34-10 is the large CIFAR-10 model of the PGD-AT / TRADES literature and an option
in the ADR reference (Bui et al., ECCV 2020; L∞, ε = 8/255). Depth d = 6n + 4 gives
three groups of n pre-activation blocks with widths 16k, 32k, 64k (k = width).

Stages: stem (3x3 conv, 16 channels), layer1..layer3, pool (final BN-ReLU, global
average pool, flattened: the 64k-d feature, 640-d for WRN-34-10, which is ADR's z),
logits.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from adrnet.errors import ConfigError
from adrnet.models.classifier import (Classifier, check_num_classes, check_positive_int,
                                      check_probability, image_shape)


class WideBlock(nn.Module):
    """BN-ReLU-conv3x3-(dropout)-BN-ReLU-conv3x3, plus shortcut.

    When the shape changes, the shortcut is a 1x1 strided conv of the *activated*
    input (the original WRN's choice); otherwise it is the identity on the raw input.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.equal = in_channels == out_channels and stride == 1
        self.shortcut = None if self.equal else nn.Conv2d(
            in_channels, out_channels, 1, stride, bias=False
        )

    def forward(self, x: Tensor) -> Tensor:
        activated = self.bn1(x).relu()
        shortcut = x if self.shortcut is None else self.shortcut(activated)
        out = self.dropout(self.bn2(self.conv1(activated)).relu())
        return self.conv2(out) + shortcut


def blocks_per_group(depth: int) -> int:
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
        raise ConfigError(
            f"WideResNet depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 34, ...), "
            f"got {depth!r}"
        )
    return (depth - 4) // 6


def wrn_stages(channels: int, num_classes: int, depth: int, width: int,
               dropout: float) -> dict[str, nn.Module]:
    n = blocks_per_group(depth)
    widths = (16 * width, 32 * width, 64 * width)
    stages: dict[str, nn.Module] = {
        "stem": nn.Conv2d(channels, 16, 3, 1, padding=1, bias=False)
    }
    in_channels = 16
    for index, (out_channels, stride) in enumerate(zip(widths, (1, 2, 2)), start=1):
        blocks = [WideBlock(in_channels if i == 0 else out_channels, out_channels,
                            stride if i == 0 else 1, dropout) for i in range(n)]
        stages[f"layer{index}"] = nn.Sequential(*blocks)
        in_channels = out_channels
    stages["pool"] = nn.Sequential(
        nn.BatchNorm2d(in_channels), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(1)
    )
    stages["logits"] = nn.Linear(in_channels, num_classes)
    return stages


def init_wrn(stages: dict[str, nn.Module]) -> None:
    """He-normal (fan-out) convolutions, BN at (1, 0), zero linear bias: the WRN recipe."""
    for stage in stages.values():
        for module in stage.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)


def build_wrn(*, num_classes: int, in_shape: Sequence[int], mean, std,
              latent: str | None = None, depth: int = 34, width: int = 10,
              dropout: float = 0.0) -> Classifier:
    """WRN-depth-width; ``latent`` defaults to "pool" (64*width-d)."""
    channels, _, _ = image_shape(in_shape, "wrn", min_side=4)
    stages = wrn_stages(channels, check_num_classes(num_classes), depth,
                        check_positive_int("width", width),
                        check_probability("dropout", dropout))
    init_wrn(stages)
    return Classifier(stages, in_shape=in_shape, mean=mean, std=std,
                      latent="pool" if latent is None else latent)


def build_wrn34_10(*, num_classes: int, in_shape: Sequence[int], mean, std,
                   latent: str | None = None, dropout: float = 0.0) -> Classifier:
    """WRN-34-10 preset (640-d latent)."""
    return build_wrn(num_classes=num_classes, in_shape=in_shape, mean=mean, std=std,
                     latent=latent, depth=34, width=10, dropout=dropout)
