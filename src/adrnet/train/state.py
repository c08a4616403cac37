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

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from adrnet.attacks import attack_mode, make_threat, pgd
from adrnet.attacks.pgd import default_step_size
from adrnet.config import Config
from adrnet.data import DatasetInfo, TensorPair, describe, load, random_crop_flip
from adrnet.data.kinds import splits_sha256
from adrnet.data.splits import checked_pair
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
    objects: dict = field(default_factory=dict)  # what came as objects (Objects.described)
    threat: Any = None             # the training threat (attack.threat, attack.eps), checked once
    val_threat: Any = None         # validation's (attack.threat, the reported eval eps)
    dataset: Any = None            # the DatasetInfo (a file's SHA-256 goes in checkpoints)
    splits_sha256: str = ""        # of the train and val tensors (adrnet.data.kinds.splits_sha256)

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


@dataclass(frozen=True)
class Objects:
    """What a caller passes as objects instead of naming it in the config (``train(cfg, out,
    model=..., splits=..., objective=...)``): a model (any module with ``model(x,
    return_latent=True) -> (logits, z)``, e.g. an :class:`adrnet.models.Classifier`), the
    data as ``(train, val)`` pairs of (inputs in [0, 1], labels) or an
    :class:`adrnet.data.Splits`, and an :class:`adrnet.objectives.Objective`. The config
    still records everything else; the run directory records what came as an object
    (``objects.json`` and the checkpoint record), because the config alone cannot rebuild it."""

    model: torch.nn.Module | None = None
    splits: Any = None
    objective: Any = None

    def described(self) -> dict[str, str]:
        """What came as an object, each with a description (for the run directory)."""
        found = {}
        if self.model is not None:
            found["model"] = f"{type(self.model).__module__}.{type(self.model).__qualname__}"
        if self.splits is not None:
            found["splits"] = "training and validation tensors passed to train()"
        if self.objective is not None:
            found["objective"] = f"weights {dict(self.objective.weights)}, attack loss " \
                                 f"{self.objective.attack_loss!r}"
        return found


def build_run(cfg: Config, run_dir: Path, info, objects: Objects = Objects()) -> Run:
    """Model (seeded init), optimiser, scaler, objective and data of ``cfg`` on
    ``info.device``; any of model, data and objective may come as ``objects`` instead."""
    from adrnet.train.distributed import check_ranks_agree, wrap_ddp
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    if cfg.train.precision == "fp16" and info.device.type != "cuda":
        raise ConfigError("config key 'train.precision' = 'fp16' needs a CUDA device; "
                          "use 'bf16' on CPU")
    data = dataset_info(cfg, objects.splits)
    train, val = load_data(cfg) if objects.splits is None else given_splits(cfg, data, objects.splits)
    data_sha256 = splits_sha256({"training": train, "validation": val})
    check_ranks_agree({"training": len(train.y), "validation": len(val.y)},
                    data_sha256)  # under torchrun: before DDP's first collective
    torch.manual_seed(cfg.train.seed)
    dtype = parameter_dtype(cfg.train.precision)
    if objects.model is None:
        with default_dtype(dtype):
            net = model_from_config(cfg, data).to(info.device, dtype)
    else:
        net = checked_model(objects.model, val.x[:2], data.num_classes, info.device)
    if cfg.train.channels_last and len(data.shape) == 3:
        net = net.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg, net)
    scaler = torch.amp.GradScaler(info.device.type, enabled=cfg.train.precision == "fp16")
    objective = objective_from_config(cfg) if objects.objective is None else objects.objective
    return Run(cfg=cfg, run_dir=run_dir, info=info, net=net, model=wrap_ddp(net, info),
               optimizer=optimizer, scaler=scaler, objective=objective, train=train, val=val,
               augment=augmentation(cfg, data), objects=objects.described(), dataset=data,
               threat=make_threat(cfg.attack.threat, cfg.attack.eps, data.input_values),
               val_threat=make_threat(cfg.attack.threat, cfg.eval_eps, data.input_values),
               splits_sha256=data_sha256)


def dataset_info(cfg: Config, splits=None) -> DatasetInfo:
    """The data set's description: :func:`adrnet.data.describe` of ``cfg.data`` (the
    registry's, or a file's), or, for data passed as objects, one read off the tensors (no
    normalisation; classes from the labels)."""
    if splits is None:
        return describe(cfg.data)
    (x_train, y_train), (_, y_val) = splits[:2]
    classes = int(max(torch.as_tensor(y_train).max(), torch.as_tensor(y_val).max())) + 1
    channels = tuple(x_train.shape[1:])[:1]
    return DatasetInfo("objects", tuple(x_train.shape[1:]), classes, (0.0,) * len(channels),
                       (1.0,) * len(channels), False)


def given_splits(cfg: Config, data: DatasetInfo, splits):
    """The (train, val) pairs a caller passed, checked like a registered data set's splits
    and cut to ``data.train_subset`` / ``eval.val_size`` like them."""
    if not isinstance(splits, (tuple, list)) or len(splits) not in (2, 3):
        raise ConfigError("splits must be (train, val) pairs of (inputs, labels), or a Splits")
    dtype = parameter_dtype(cfg.train.precision)
    train, val = (checked_pair(data, part, pair) for part, pair in zip(("train", "val"), splits[:2]))
    n_train = cfg.data.train_subset or train.x.shape[0]
    n_val = cfg.eval.val_size or val.x.shape[0]
    return (TensorPair(train.x[:n_train].to(dtype), train.y[:n_train]),
            TensorPair(val.x[:n_val].to(dtype), val.y[:n_val]))


def checked_model(model: torch.nn.Module, x: torch.Tensor, num_classes: int,
                  device: torch.device) -> torch.nn.Module:
    """``model`` on ``device`` in ``x``'s dtype, once one forward pass on ``x`` shows it gives
    (logits [N, classes], z [N, ...]) with ``return_latent=True``, as every objective
    needs; else one clear error."""
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    model, x = model.to(device, x.dtype), x.to(device)
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]), attack_mode(model):
            out = model(x, return_latent=True)
    except TypeError as exc:
        raise ConfigError(f"model {type(model).__name__} cannot be called as model(x, "
                          f"return_latent=True) ({exc}); wrap it in adrnet.models.Classifier, "
                          "naming the stage whose output is the latent z") from None
    if not (isinstance(out, tuple) and len(out) == 2 and out[0].shape == (len(x), num_classes)):
        raise ConfigError(f"model {type(model).__name__}(x, return_latent=True) must return "
                          f"(logits of shape [N, {num_classes}], z); got {type(out).__name__}")
    return model


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


def training_attack(cfg: Config, attack_loss: str, threat, share: float = 1.0):
    """``attack(model, x, y) -> x_adv`` for one training step: PGD in the run's ``threat``
    (built and checked once, in :func:`build_run`), shrunk to ``share`` of its radius and
    step size during an ε warm-up."""
    if share != 1:
        threat = dataclasses.replace(threat, eps=threat.eps * share)
    return functools.partial(pgd, threat=threat, steps=cfg.attack.steps,
                             step_size=cfg.attack.step_size * share, loss=attack_loss,
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
    splits = load(cfg.data)
    dtype = parameter_dtype(cfg.train.precision)
    train, val = splits.train, splits.val
    n_train = cfg.data.train_subset or train.x.shape[0]
    n_val = cfg.eval.val_size or val.x.shape[0]
    return (TensorPair(train.x[:n_train].to(dtype), train.y[:n_train]),
            TensorPair(val.x[:n_val].to(dtype), val.y[:n_val]))


def augmentation(cfg: Config, data: DatasetInfo):
    """The training augmentation (crop+flip) or None."""
    use = cfg.data.augment if cfg.data.augment is not None else data.augment
    if not use:
        return None
    if len(data.shape) != 3:
        raise ConfigError("config key 'data.augment' = true needs image data (crop and flip)")
    return random_crop_flip
