"""Turn a :class:`~adrnet.config.Config` into the objects a run needs.

Why one place: a fresh run and a resumed one must build the same optimiser, objective,
data and per-step attack from the same config. (The model itself is built by
``adrnet.models.model_from_config``, which checkpoint loading shares.)
"""

from __future__ import annotations

import functools
import math

import torch

from adrnet.config import Config
from adrnet.errors import ConfigError


def dataset_info(cfg: Config):
    from adrnet.data import DATASETS
    return DATASETS[cfg.data.name]


def build_objective(cfg: Config):
    from adrnet.objectives import make_objective
    return make_objective(cfg.objective.name, scale=cfg.objective.scale,
                          concat=cfg.objective.concat, latent_norm=cfg.objective.latent_norm,
                          **cfg.objective.weights)


def build_optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov, weight decay) or Adam, with lr = ``optim.lr``."""
    opt = cfg.optim
    params = [p for p in model.parameters() if p.requires_grad]
    if opt.name == "sgd":
        if opt.nesterov and opt.momentum == 0:
            raise ConfigError("config key 'optim.nesterov' needs optim.momentum > 0")
        return torch.optim.SGD(params, lr=opt.lr, momentum=opt.momentum,
                               nesterov=opt.nesterov, weight_decay=opt.weight_decay)
    return torch.optim.Adam(params, lr=opt.lr, betas=opt.betas, weight_decay=opt.weight_decay)


def training_attack(cfg: Config, attack_loss: str, eps: float, step_size: float):
    """``attack(model, x, y) -> x_adv`` for one training step at radius ``eps``."""
    from adrnet.attacks import make_threat, pgd
    return functools.partial(pgd, threat=make_threat(cfg.attack.threat, eps),
                             steps=cfg.attack.steps, step_size=step_size, loss=attack_loss,
                             random_start=cfg.attack.random_start,
                             keep_train_mode=cfg.attack.train_mode)


def validation_step_size(cfg: Config) -> float:
    """``eval.val_step_size``, or :func:`~adrnet.attacks.pgd.default_step_size` when unset."""
    if cfg.eval.val_step_size is not None:
        return cfg.eval.val_step_size
    from adrnet.attacks.pgd import default_step_size
    return default_step_size(cfg.attack.eps, cfg.eval.val_steps)


def load_data(cfg: Config):
    """The (train, val) tensor pairs of ``cfg`` (the test split is never used here)."""
    from adrnet.data import TensorPair, load_splits
    splits = load_splits(cfg.data.name, root=cfg.data.root, val_size=cfg.data.val_size,
                         seed=cfg.data.split_seed)
    train = splits.train
    if cfg.data.train_subset:
        n = cfg.data.train_subset
        train = TensorPair(train.x[:n], train.y[:n])
    val = splits.val
    if cfg.eval.val_size:
        val = TensorPair(val.x[:cfg.eval.val_size], val.y[:cfg.eval.val_size])
    return train, val


def augmentation(cfg: Config):
    """The training augmentation (crop+flip) or None."""
    use = cfg.data.augment if cfg.data.augment is not None else dataset_info(cfg).augment
    if not use:
        return None
    from adrnet.data import random_crop_flip
    if len(dataset_info(cfg).shape) != 3:
        raise ConfigError("config key 'data.augment' = true needs image data (crop and flip)")
    return random_crop_flip
