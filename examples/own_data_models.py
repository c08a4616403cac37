"""A model of your own for adrnet, named by its import path: ``own_data_models:build``.

Nothing here imports adrnet or registers anything: a factory ``build(num_classes=,
in_shape=, **options)`` returning a plain ``nn.Module`` (inputs in -> logits out) is all a
config needs (``[model] name = "own_data_models:build"``, ``latent = "embedding"``, the
submodule whose flattened output is ADR's latent z; ``[model.options] width = 8``).
adrnet puts the data set's normalisation in front of it and reads z with a forward hook.
A torchvision or timm constructor fits the same way (e.g. a factory calling
``torchvision.models.resnet18(num_classes=num_classes)``, ``latent = "avgpool"``).
"""

from torch import nn


class SmallNet(nn.Module):
    def __init__(self, num_classes: int, channels: int, width: int):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.embedding = nn.Sequential(nn.Linear(4 * width, 32), nn.ReLU())
        self.classifier = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.classifier(self.embedding(self.features(x)))


def build(num_classes: int, in_shape: tuple[int, ...], width: int = 8) -> nn.Module:
    """The factory adrnet calls: ``in_shape`` is (C, H, W) of the data set's images."""
    return SmallNet(num_classes, in_shape[0], width)
