"""Toy 2-D data sets (moons, circles, blobs) generated in code from a seed.

Why: demonstrations and fast tests of the whole pipeline (ADR, PGD, plots of
decision boundaries) without any file. Features are [N, 2] float32 rescaled
into [0, 1] (one min-max over all generated points, so ε means the same in
every split), which keeps the "inputs are in [0, 1]" contract of the attacks.
"""

from __future__ import annotations

import math

import numpy as np

TOY_TRAIN, TOY_TEST = 2500, 1000  # the default val split (500) comes out of TOY_TRAIN


def _moons(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, 2, n)
    angle = rng.uniform(0.0, math.pi, n)
    upper = np.stack([np.cos(angle), np.sin(angle)], 1)
    lower = np.stack([1.0 - np.cos(angle), 0.5 - np.sin(angle)], 1)
    points = np.where(labels[:, None] == 0, upper, lower)
    return points + rng.normal(0.0, 0.1, (n, 2)), labels


def _circles(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, 2, n)
    angle = rng.uniform(0.0, 2 * math.pi, n)
    radius = np.where(labels == 0, 1.0, 0.5)
    points = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1)
    return points + rng.normal(0.0, 0.05, (n, 2)), labels


def _blobs(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, 3, n)
    angles = 2 * math.pi * np.arange(3) / 3
    centres = 2.0 * np.stack([np.cos(angles), np.sin(angles)], 1)
    return centres[labels] + rng.normal(0.0, 0.5, (n, 2)), labels


TOY_GENERATORS = {"moons": _moons, "circles": _circles, "blobs": _blobs}


def make_toy(name: str, seed: int):
    """((x_train, y_train), (x_test, y_test)): float32 [N, 2] in [0, 1], int64."""
    rng = np.random.default_rng([seed, sum(map(ord, name))])
    points, labels = TOY_GENERATORS[name](rng, TOY_TRAIN + TOY_TEST)
    low, high = points.min(0), points.max(0)
    points = ((points - low) / (high - low)).astype(np.float32).clip(0.0, 1.0)
    labels = labels.astype(np.int64)
    return (points[:TOY_TRAIN], labels[:TOY_TRAIN]), (points[TOY_TRAIN:], labels[TOY_TRAIN:])
