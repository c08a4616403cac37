"""The state of one training run, and everything in it built from the run's config.

Why a single object: the training loop touches a model, its DDP wrapper, an optimiser,
a grad scaler, the objective, the data and the position in training; checkpoints must
save and restore exactly these. The position (epoch, step) always names the *next* step
to run, so a checkpoint's position is where a resumed run starts. Why the builders
live here too: a fresh run and a resumed one must build the same optimiser, objective,
data and per-step attack from the same config (the model comes from
``adrnet.models.model_from_config``, which checkpoint loading shares).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from adrnet.attacks import make_threat, pgd
from adrnet.attacks.pgd import default_step_size
from adrnet.config import Config
from adrnet.data import DATASETS, TensorPair, load_splits, random_crop_flip
from adrnet.device import default_dtype, parameter_dtype
from adrnet.errors import ConfigError
from adrnet.models import model_from_config
from adrnet.objectives import objective_from_config
from adrnet.runs.checkpoint import checkpoint_files


@dataclass
class Run:
    cfg: Config
    run_dir: Path
    info: Any                      # DistInfo of adrnet.train.distributed
    net: torch.nn.Module           # the model itself
    model: torch.nn.Module         # net, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    scaler: Any                    # torch.amp.GradScaler (enabled for fp16 only)
    objective: Any
    train: Any                     # TensorPair
    val: Any                       # TensorPair
    augment: Any = None
    metrics: Any = None            # MetricsLog
    stop: Any = None               # StopFlag
    epoch: int = 0                 # next epoch to run (0-based)
    step: int = 0                  # next step within it (0-based)
    global_step: int = 0           # steps done since the start of the run
    best_value: float | None = None
    best_epoch: int | None = None
    running: dict = field(default_factory=dict)  # sums over the current epoch's steps
    saved_at: str | None = None    # where the last checkpoint was taken, for messages

    @property
    def device(self) -> torch.device:
        return self.info.device

    @property
    def steps_per_epoch(self) -> int:
        global_batch = self.cfg.train.batch_size * self.info.world_size
        return -(-self.train.x.shape[0] // global_batch)

    @property
    def gather(self):
        if not self.info.distributed:
            return None
        from adrnet.train.distributed import gather_detached
        return gather_detached

    def any_rank(self, flag: bool) -> bool:
        """True when ``flag`` holds on at least one rank (the same answer on all)."""
        if not self.info.distributed:
            return bool(flag)
        from adrnet.train.distributed import all_reduce_sum
        return bool(all_reduce_sum(torch.tensor([float(flag)])).item() > 0)

    def last_checkpoint_note(self) -> str:
        files = checkpoint_files(self.run_dir, "last")
        where = self.saved_at or "no checkpoint has been saved in this run yet"
        return f"{files.stem}.json ({where})"


def build_run(cfg: Config, run_dir: Path, info) -> Run:
    """Model (seeded init), optimiser, scaler, objective and data of ``cfg`` on ``info.device``."""
    from adrnet.train.distributed import wrap_ddp
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    if cfg.train.precision == "fp16" and info.device.type != "cuda":
        raise ConfigError("config key 'train.precision' = 'fp16' needs a CUDA device; "
                          "use 'bf16' on CPU")
    train, val = load_data(cfg)
    torch.manual_seed(cfg.train.seed)
    dtype = parameter_dtype(cfg.train.precision)
    with default_dtype(dtype):
        net = model_from_config(cfg).to(info.device, dtype)
    if cfg.train.channels_last and len(dataset_info(cfg).shape) == 3:
        net = net.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg, net)
    scaler = torch.amp.GradScaler(info.device.type, enabled=cfg.train.precision == "fp16")
    return Run(cfg=cfg, run_dir=run_dir, info=info, net=net, model=wrap_ddp(net, info),
               optimizer=optimizer, scaler=scaler, objective=objective_from_config(cfg),
               train=train, val=val, augment=augmentation(cfg))


def dataset_info(cfg: Config):
    return DATASETS[cfg.data.name]


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
    return functools.partial(pgd, threat=make_threat(cfg.attack.threat, eps),
                             steps=cfg.attack.steps, step_size=step_size, loss=attack_loss,
                             random_start=cfg.attack.random_start,
                             keep_train_mode=cfg.attack.train_mode)


def validation_step_size(cfg: Config) -> float:
    """``eval.val_step_size``, or :func:`~adrnet.attacks.pgd.default_step_size` when unset."""
    if cfg.eval.val_step_size is not None:
        return cfg.eval.val_step_size
    return default_step_size(cfg.eval_eps, cfg.eval.val_steps)


def load_data(cfg: Config):
    """The (train, val) tensor pairs of ``cfg`` (the test split is never used here), their
    inputs in the dtype of ``train.precision``'s weights."""
    splits = load_splits(cfg.data.name, root=cfg.data.root, val_size=cfg.data.val_size,
                         seed=cfg.data.split_seed)
    dtype = parameter_dtype(cfg.train.precision)
    train, val = splits.train, splits.val
    n_train = cfg.data.train_subset or train.x.shape[0]
    n_val = cfg.eval.val_size or val.x.shape[0]
    return (TensorPair(train.x[:n_train].to(dtype), train.y[:n_train]),
            TensorPair(val.x[:n_val].to(dtype), val.y[:n_val]))


def augmentation(cfg: Config):
    """The training augmentation (crop+flip) or None."""
    use = cfg.data.augment if cfg.data.augment is not None else dataset_info(cfg).augment
    if not use:
        return None
    if len(dataset_info(cfg).shape) != 3:
        raise ConfigError("config key 'data.augment' = true needs image data (crop and flip)")
    return random_crop_flip
