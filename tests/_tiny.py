"""Tiny classifiers for fast tests: the adrnet Classifier interface in a few lines."""

import torch
from torch import nn


class TinyNet(nn.Module):
    """conv → (BatchNorm) → ReLU → pool → z (latent) → linear; forward(x, return_latent)."""

    def __init__(self, in_channels=1, num_classes=10, hidden=8, batchnorm=False, dropout=0.0):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, padding=1),
            nn.BatchNorm2d(hidden) if batchnorm else nn.Identity(),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Dropout(dropout),
        )
        self.head = nn.Linear(hidden * 4, num_classes)

    def forward(self, x, return_latent=False):
        z = self.features(x)
        logits = self.head(z)
        return (logits, z) if return_latent else logits


def tiny_batch(n=16, channels=1, size=8, num_classes=10, seed=0):
    """Random images in [0, 1] and labels, from a private generator."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, channels, size, size, generator=gen)
    y = torch.randint(0, num_classes, (n,), generator=gen)
    return x, y
