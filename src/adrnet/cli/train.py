"""``adrnet train``: train from a TOML config into a run directory, or resume a run.

Runs are described by the TOML presets in ``configs/``; this module only turns the
arguments into a config, a run directory and a resume decision for
:func:`adrnet.train.train`.
"""

from __future__ import annotations

import os
from pathlib import Path

from adrnet.cli import add_config_options, config_overrides
from adrnet.errors import ConfigError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train a model (PGD-AT, TRADES, ADR) from a TOML config",
        description="Train from a TOML config into a run directory, or resume a run.")
    add_config_options(p)
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default: runs/<config name>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its "
                   "last checkpoint, with RUN_DIR/config.toml")
    p.add_argument("--resume-if-exists", action="store_true", help="resume when the --out "
                   "directory already holds a checkpoint, else start a new run")
    p.set_defaults(func=cmd_train)


def _plan(args) -> tuple:
    """(config, run directory, resume?) from the train arguments."""
    from adrnet.config import load_config
    from adrnet.runs import has_checkpoint
    if args.resume:
        if args.config or args.out:
            raise ConfigError("--resume RUN_DIR takes the config from RUN_DIR/config.toml: "
                              "drop --config/--out (use --set to extend train.epochs)")
        run_dir = Path(args.resume)
        if not (run_dir / "config.toml").is_file():
            raise ConfigError(f"cannot resume {run_dir}: no config.toml there (is it a run "
                              "directory made by `adrnet train`?)")
        return load_config(run_dir / "config.toml", config_overrides(args)), run_dir, True
    if not args.config:
        raise ConfigError("give --config TOML (presets are in configs/) or --resume RUN_DIR")
    run_dir = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    cfg = load_config(args.config, config_overrides(args))
    return cfg, run_dir, bool(args.resume_if_exists and has_checkpoint(run_dir))


def cmd_train(args) -> int:
    from adrnet.train import train
    cfg, run_dir, resume = _plan(args)
    result = train(cfg, run_dir, resume=resume)
    if os.environ.get("RANK", "0") not in ("", "0"):
        return 0  # under torchrun only rank 0 reports
    best = ("no validation yet" if result.best_val_acc_robust is None else
            f"best validation robust accuracy {result.best_val_acc_robust:.4f} "
            f"(epoch {result.best_epoch})")
    print(f"done: {result.epochs_completed} epochs, {best}\nrun directory: {run_dir}\n"
          f"evaluate it with: adrnet eval {run_dir}")
    return 0
