"""ResNet-18 (He et al., CVPR 2016) and PreAct ResNet-18 (He et al., ECCV 2016), CIFAR form.

These are the CIFAR-10 models of the ADR reference (Bui et al., ECCV 2020) and of the
PGD-AT / TRADES literature (L∞, ε = 8/255). CIFAR stem: one 3x3 convolution with
stride 1 and no max-pool, so a 32x32 image keeps full resolution in layer1.

Stages: stem, layer1..layer4, pool (global average pool, flattened: the 512-d feature
that feeds the final linear layer, ADR's z), logits. In the pre-activation variant the
blocks end without a ReLU, so the final BN-ReLU sits in the pool stage: z is then the
pooled post-activation feature, as in the reference code.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from adrnet.models.classifier import Classifier, check_num_classes, image_shape

WIDTHS = (64, 128, 256, 512)
STRIDES = (1, 2, 2, 2)


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def projection(in_channels: int, out_channels: int, stride: int, norm: bool) -> nn.Module:
    """1x1 strided shortcut when the shape changes (followed by BN in the post-act form)."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    conv = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels)) if norm else conv


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN, plus shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = projection(in_channels, out_channels, stride, norm=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn1(self.conv1(x)).relu()
        out = self.bn2(self.conv2(out))
        return (out + self.shortcut(x)).relu()


class PreActBlock(nn.Module):
    """BN-ReLU-conv-BN-ReLU-conv, plus shortcut (taken from the activated input if projected)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.shortcut = projection(in_channels, out_channels, stride, norm=False)

    def forward(self, x: Tensor) -> Tensor:
        activated = self.bn1(x).relu()
        shortcut = x if isinstance(self.shortcut, nn.Identity) else self.shortcut(activated)
        out = self.conv1(activated)
        out = self.conv2(self.bn2(out).relu())
        return out + shortcut


def resnet_stages(block: type[nn.Module], channels: int, num_classes: int,
                  preact: bool) -> dict[str, nn.Module]:
    """stem, layer1..4 (two blocks each), pool, logits."""
    stem = [conv3x3(channels, WIDTHS[0])]
    if not preact:
        stem += [nn.BatchNorm2d(WIDTHS[0]), nn.ReLU()]
    stages: dict[str, nn.Module] = {"stem": nn.Sequential(*stem)}
    in_channels = WIDTHS[0]
    for index, (width, stride) in enumerate(zip(WIDTHS, STRIDES), start=1):
        stages[f"layer{index}"] = nn.Sequential(
            block(in_channels, width, stride), block(width, width, 1)
        )
        in_channels = width
    pool = [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
    if preact:
        pool = [nn.BatchNorm2d(in_channels), nn.ReLU()] + pool
    stages["pool"] = nn.Sequential(*pool)
    stages["logits"] = nn.Linear(in_channels, num_classes)
    return stages


def _build(block, preact: bool, name: str, *, num_classes, in_shape, mean, std,
           latent) -> Classifier:
    channels, _, _ = image_shape(in_shape, name, min_side=8)
    stages = resnet_stages(block, channels, check_num_classes(num_classes), preact)
    return Classifier(stages, in_shape=in_shape, mean=mean, std=std,
                      latent="pool" if latent is None else latent)


def build_resnet18(*, num_classes: int, in_shape: Sequence[int], mean, std,
                   latent: str | None = None) -> Classifier:
    """ResNet-18, CIFAR stem; ``latent`` defaults to "pool" (512-d)."""
    return _build(BasicBlock, False, "resnet18", num_classes=num_classes,
                  in_shape=in_shape, mean=mean, std=std, latent=latent)


def build_preact_resnet18(*, num_classes: int, in_shape: Sequence[int], mean, std,
                          latent: str | None = None) -> Classifier:
    """PreAct ResNet-18, CIFAR stem; ``latent`` defaults to "pool" (512-d, after BN-ReLU)."""
    return _build(PreActBlock, True, "preact_resnet18", num_classes=num_classes,
                  in_shape=in_shape, mean=mean, std=std, latent=latent)
