"""The state of one training run, assembled from a config.

Why a single object: the training loop touches a model, its DDP wrapper, an optimiser, a grad scaler, the data and
the position in training; checkpoints must save and restore exactly these. The
position (epoch, step) always names the *next* step to run, so a checkpoint's
position is where a resumed run starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from adrnet.config import Config
from adrnet.errors import ConfigError
from adrnet.models import model_from_config
from adrnet.runs.checkpoint import checkpoint_files
from adrnet.train import builders


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
    train, val = builders.load_data(cfg)
    torch.manual_seed(cfg.train.seed)
    net = model_from_config(cfg).to(info.device)
    if cfg.train.channels_last and len(builders.dataset_info(cfg).shape) == 3:
        net = net.to(memory_format=torch.channels_last)
    optimizer = builders.build_optimizer(cfg, net)
    scaler = torch.amp.GradScaler(info.device.type, enabled=cfg.train.precision == "fp16")
    return Run(cfg=cfg, run_dir=run_dir, info=info, net=net, model=wrap_ddp(net, info),
               optimizer=optimizer, scaler=scaler, objective=builders.build_objective(cfg),
               train=train, val=val, augment=builders.augmentation(cfg))
