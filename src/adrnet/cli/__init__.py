"""The ``adrnet`` command: ``train``, ``ablate``, ``data fetch|info``, ``eval``, ``report`` and ``zoo``.

Why a thin shell: each subcommand parses its arguments and calls one library
function (``adrnet.train.train``, ``adrnet.eval.evaluate_run``...), so everything
the command line does is also available, and tested, from Python; turning text
such as ``--eps 8/255`` into numbers happens here, and the library takes numbers.
Each subcommand is a module of this package with ``add_parser(subparsers)``, which
sets ``func`` (``args -> int | None``) with ``set_defaults``; this module holds the
parser, :func:`main` and what several subcommands share (argument types, option
groups). User mistakes (``AdrnetError``) print one ``error: ...`` line and exit
with status 2; a run stopped by SIGINT/SIGTERM exits with 128 + the signal.
``python -m adrnet``, ``python -m adrnet.cli`` (what torchrun launches) and the
``adrnet`` script all call :func:`main`.
"""

from __future__ import annotations

import argparse
import sys

from adrnet.device import DEVICES
from adrnet.errors import AdrnetError, ConfigError
from adrnet.plugins import import_plugins


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


def add_config_options(p) -> None:
    """--config, --set, --device and --no-progress: how train and ablate take a config."""
    p.add_argument("--config", metavar="TOML", help="config file (e.g. configs/mnist_quick_adr.toml)")
    p.add_argument("--set", dest="overrides", metavar="SECTION.KEY=VALUE", action="append",
                   nargs="+", default=[], help="override a config value, TOML syntax "
                   "(repeatable): --set train.epochs=3 optim.lr=0.05")
    p.add_argument("--device", choices=DEVICES, help="same as --set train.device=...")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (train.progress=false)")


def config_overrides(args) -> list[str]:
    """The ``--set`` overrides of :func:`add_config_options`, with --device and --no-progress."""
    flat = [item for group in args.overrides for item in group]
    if args.device:
        flat.append(f"train.device={args.device}")
    if args.no_progress:
        flat.append("train.progress=false")
    return flat


def add_autoattack_options(p, version_help: str = "AutoAttack version") -> None:
    """--aa-version and --aa-attacks (eval and ablate); read back by :func:`autoattack_attacks`."""
    from adrnet.attacks.autoattack import AA_VERSIONS
    p.add_argument("--aa-version", default="standard", choices=AA_VERSIONS, help=version_help)
    p.add_argument("--aa-attacks", help="AutoAttack attacks for --aa-version custom, e.g. apgd-ce,square")


def autoattack_attacks(args) -> tuple[str, ...] | None:
    """The --aa-attacks list (only with --aa-version custom), or None."""
    if args.aa_attacks and args.aa_version != "custom":
        raise ConfigError("--aa-attacks needs --aa-version custom")
    return tuple(a.strip() for a in args.aa_attacks.split(",")) if args.aa_attacks else None


def build_parser() -> argparse.ArgumentParser:
    from adrnet import __version__
    from adrnet.cli import ablate, data, evaluate, report, train, zoo
    parser = argparse.ArgumentParser(
        prog="adrnet", description="Adversarially robust training with ADR (Bui et al., "
        "ECCV 2020) on PGD-AT and TRADES, and robustness evaluation.")
    parser.add_argument("--version", action="version", version=f"adrnet {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in (train, ablate, data, evaluate, report, zoo):
        command.add_parser(subparsers)
    for subparser in subparsers.choices.values():
        subparser.add_argument(
            "--import", dest="plugins", metavar="MODULE", action="append", default=[],
            help="import this module of yours first (repeatable): it registers models, data "
                 "sets, loss terms, objectives or attacks (adrnet.register_*) that the config "
                 "or the options then name; ./MODULE.py is found as with python -m")
    return parser


def main(argv=None) -> int:
    from adrnet.train.signals import TrainingInterrupted
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        import_plugins(args.plugins)
        return int(args.func(args) or 0)
    except TrainingInterrupted as exc:
        print(str(exc), file=sys.stderr)
        return 128 + exc.signum
    except AdrnetError as exc:
        # one write of the whole line: under torchrun every rank may print the same error
        # at once, and print() writes the text and its newline separately (lines interleave)
        sys.stderr.write(f"error: {exc}\n")
        sys.stderr.flush()
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
