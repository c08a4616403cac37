"""``adrnet eval``: parse the arguments, call :func:`adrnet.eval.evaluate_run`, print the table.

Why the ε parsing is here: the command line accepts radii as text (``0.3``,
``8/255``, ``paper`` for the paper's sweep list); the library takes floats (and
``sweep="paper"``, which needs the run's data set), so reading that text is the
command line's job. Attacks: those of ``adrnet.attacks.ATTACKS`` (FGSM, PGD-k, CW (PGD
on the CW margin), multi-targeted PGD, Brendel & Bethge (foolbox), AutoAttack, and any a
user's module registers); threat models L∞ and L2. ``--attacks`` is checked against
the registry when the command runs, not by argparse, so an attack registered by an
``--import``-ed module is accepted.
"""

from __future__ import annotations

import argparse
import math
from fractions import Fraction

from adrnet.attacks import THREATS
from adrnet.cli import add_autoattack_options, autoattack_attacks, positive_int
from adrnet.errors import ConfigError
from adrnet.runs import WHICH

EVAL_EPILOG = """defaults come from the run's config.toml: eps from [eval] eps (unset: the
training eps), the norm of its training threat model, PGD steps/restarts from [eval]
test_steps (200, as in the paper) and test_restarts; PGD step size 2.5*eps/steps.
Results go to RUN_DIR/eval.json.
examples:
  adrnet eval runs/quick --attacks fgsm,pgd --steps 20 --n 1000
  adrnet eval runs/quick --attacks pgd,cw,autoattack --n 1000 --sanity
  adrnet eval runs/quick --attacks autoattack,square --square-queries 20000 --square-restarts 5
  adrnet eval runs/quick --attacks pgd,mt,bb --n 1000
  adrnet eval runs/quick --norm l2 --eps 2.0 --sweep paper
any model, trained anywhere (docs/own_data.md): --model, --weights, --data and --eps
  adrnet eval --model my_models:build --weights model.pt --data npz --data-path mine.npz \
      --eps 8/255 --set model.latent=fc --set model.options.width=32"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("eval", help="robust accuracy of a trained run (worst case over attacks)",
                              description="Attack a trained model and write eval.json.",
                              epilog=EVAL_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", metavar="RUN_DIR_or_CHECKPOINT", nargs="?",
                   help="a run directory or checkpoint, or zoo:NAME, a shipped model (adrnet zoo "
                        "lists them); or give --model and --weights")
    p.add_argument("--model", metavar="NAME", help="evaluate a model not trained by adrnet: "
                   "package.module:factory (imported) or a registered model name; with --weights, "
                   "--data and --eps")
    p.add_argument("--weights", metavar="FILE", help="the --model's weights: .safetensors, or a "
                   ".pt/.pth state dict (read with torch.load(weights_only=True))")
    p.add_argument("--data", metavar="NAME", help="the --model's data set: a registered name, "
                   "npz or folder (with --data-path)")
    p.add_argument("--data-path", metavar="PATH", help="the .npz file or image folder of --data "
                   "npz|folder (for a run: where its data file is now)")
    p.add_argument("--set", dest="overrides", metavar="SECTION.KEY=VALUE", action="append",
                   nargs="+", default=[], help="with --model: config values, TOML syntax, e.g. "
                   "model.latent=fc model.options.width=32 data.mean=[0.5] data.std=[0.25]")
    p.add_argument("--attacks", default="fgsm,pgd", help=attacks_help())
    p.add_argument("--eps", help="radius, e.g. 0.3 or 8/255 (default: the run's eval.eps, else its training eps)")
    p.add_argument("--norm", help=f"threat model: {', '.join(THREATS)} or one a --import module "
                                  "registered (default: the run's)")
    p.add_argument("--n", type=int, help="first N examples of the split (default: all; 1000 with autoattack or bb)")
    p.add_argument("--split", choices=("test", "val"), default="test")
    p.add_argument("--steps", type=positive_int, help="PGD/CW steps (default: eval.test_steps)")
    p.add_argument("--step-size", help="PGD/CW step size (default 2.5*eps/steps)")
    p.add_argument("--restarts", type=positive_int, help="PGD/CW random restarts (default: eval.test_restarts)")
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default auto)")
    p.add_argument("--which", choices=WHICH, default="best", help="checkpoint of a run directory")
    p.add_argument("--data-root", help="data directory (default: the run's)")
    p.add_argument("--sweep", metavar="EPS_LIST", help="also sweep eps: 'paper' or e.g. 0.1,0.2,0.3 or 2/255,4/255")
    p.add_argument("--sanity", action="store_true", help="run the gradient-masking checks")
    p.add_argument("--sanity-n", type=positive_int, default=200, help="examples for --sanity (200)")
    p.add_argument("--no-diagnostics", action="store_true", help="skip layer divergence and t-SNE")
    p.add_argument("--diagnostics-n", type=positive_int, default=200, help="examples for the diagnostics (200)")
    add_autoattack_options(p)
    p.add_argument("--aa-state", help="AutoAttack progress file: rerun the same command to resume")
    p.add_argument("--square-queries", type=positive_int,
                   help="queries per restart of the square attack (default 10000; AutoAttack's Square: 5000)")
    p.add_argument("--square-restarts", type=positive_int,
                   help="restarts of the square attack (default 2; AutoAttack's Square: 1)")
    p.add_argument("--square-state", help="the square attack's progress file: rerun the same command to resume")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="output file (default RUN_DIR/eval.json; runs/zoo/NAME/eval.json "
                                 "for zoo:NAME)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--precision", choices=("fp32", "bf16"),
                   help="the attacks' precision (default: the run's eval.precision, fp32): bf16 runs "
                        "them on a bf16 channels_last copy, 2-3x as fast on CPUs with native bf16, "
                        "and counts a point as a break only if it fools the fp32 model too "
                        "(B&B stays fp32); clean accuracy is always fp32")
    p.add_argument("--force", action="store_true",
                   help="redo an evaluation the output file already holds (same weights, data, "
                        "eps, precision and attacks); without it such a rerun does nothing")
    p.set_defaults(func=cmd_eval)


def attacks_help() -> str:
    """The ``--attacks`` help: every attack registered when the parser is built."""
    from adrnet.attacks import ATTACKS
    listed = "; ".join(f"{name}: {spec.description}" if spec.description else name
                       for name, spec in ATTACKS.items())
    return ("comma-separated attack names (default fgsm,pgd): " + listed).replace("%", "%%")


def options_from_args(args):
    """:class:`EvalOptions` from parsed ``adrnet eval`` arguments."""
    from adrnet.attacks import parse_attack_names
    from adrnet.eval.evaluate import EvalOptions
    sweep = None
    if args.sweep:  # "paper" needs the data set: resolved from the config in evaluate_run
        sweep = "paper" if _is_paper(args.sweep) else tuple(parse_eps_list(args.sweep))
    attacks = tuple(parse_attack_names(args.attacks))
    return EvalOptions(
        attacks=attacks, norm=args.norm, n=args.n, split=args.split,
        eps=None if args.eps is None else parse_eps(args.eps), steps=args.steps,
        step_size=None if args.step_size is None else parse_number(args.step_size, "--step-size"),
        restarts=args.restarts, batch_size=args.batch_size, device=args.device, which=args.which,
        data_root=args.data_root, sweep=sweep, sanity=args.sanity, sanity_n=args.sanity_n,
        diagnostics=not args.no_diagnostics, diagnostics_n=args.diagnostics_n,
        autoattack_version=args.aa_version, autoattack_attacks=autoattack_attacks(args),
        autoattack_state=args.aa_state, seed=args.seed, progress=not args.no_progress, out=args.out,
        precision=args.precision, force=args.force, data_path=args.data_path,
        attack_options=square_options(args, attacks))


def square_options(args, attacks: tuple[str, ...]) -> dict | None:
    """The --square-* options as the square attack's options (None when none is given);
    refused without ``square`` among --attacks, where they would be silently ignored."""
    options = (("--square-queries", "square_queries", args.square_queries),
               ("--square-restarts", "square_restarts", args.square_restarts),
               ("--square-state", "state_path", args.square_state))
    given = {key: value for _, key, value in options if value is not None}
    if not given:
        return None
    if "square" not in attacks:
        flags = [flag for flag, _, value in options if value is not None]
        raise ConfigError(f"{', '.join(flags)} {'is an option' if len(flags) == 1 else 'are options'} "
                          "of the square attack: add square to --attacks, e.g. --attacks autoattack,square")
    return {"square": given}


def cmd_eval(args) -> int:
    from adrnet.eval.evaluate import evaluate_run
    from adrnet.report import format_eval
    record = evaluate_run(eval_target(args), options_from_args(args))
    print(format_eval(record))
    for note in record["notes"]:
        print(f"note: {note}")
    print(f"results: {record['path']}")
    return 0


def eval_target(args):
    """The run or checkpoint to evaluate, or, with --model and --weights, the model they
    give loaded with its weights (:func:`adrnet.runs.weights.load_weights`)."""
    import json
    external = args.model or args.weights or args.data
    if not external:
        if args.target is None:
            raise ConfigError("give a run directory or checkpoint, or --model NAME --weights FILE "
                              "--data NAME --eps EPS for a model trained elsewhere")
        if args.overrides:
            raise ConfigError("--set is for --model: a run's config is its own")
        return args.target
    if args.target is not None:
        raise ConfigError(f"give either a run ({args.target}) or --model/--weights/--data, not both")
    missing = [flag for flag, value in (("--model", args.model), ("--weights", args.weights),
                                        ("--data", args.data), ("--eps", args.eps)) if not value]
    if missing:
        raise ConfigError(f"evaluating a model from --model needs {', '.join(missing)} too (no run "
                          "config to take it from): --model NAME --weights FILE --data NAME --eps EPS")
    from adrnet.config import load_config
    from adrnet.runs.weights import load_weights
    overrides = [f"data.name={json.dumps(args.data)}", f"model.name={json.dumps(args.model)}"]
    if args.data_path:
        overrides.append(f"data.path={json.dumps(args.data_path)}")
    if args.data_root:
        overrides.append(f"data.root={json.dumps(args.data_root)}")
    cfg = load_config(None, overrides + [item for group in args.overrides for item in group])
    args.data_path = None  # already in the config
    return load_weights(cfg, args.weights)


def parse_number(text: str | float, what: str) -> float:
    """``"8/255"`` or ``"0.3"`` -> float (±inf beyond float range, for the range checks
    to refuse by name); ``what`` names the option in the message for anything else."""
    try:
        fraction = Fraction(str(text).strip())
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"cannot read {what} {text!r}; write a number like 0.3 or a "
                          "fraction like 8/255") from None
    try:
        return float(fraction)
    except OverflowError:
        return math.inf if fraction > 0 else -math.inf


def parse_eps(text: str | float) -> float:
    """``"8/255"`` or ``"0.3"`` -> float, refusing anything else with a clear message."""
    value = parse_number(text, "eps")
    if value < 0:
        raise ConfigError(f"eps must be >= 0, got {text}")
    return value


def _is_paper(text: str) -> bool:
    """Whether a --sweep value names the paper's list rather than listing radii."""
    return text.strip().lower() in ("paper", "default")


def parse_eps_list(text: str, *, dataset: str = "mnist", norm: str = "linf") -> list[float]:
    """``"paper"`` -> :func:`default_eps_list`; else comma-separated ε values."""
    if _is_paper(text):
        from adrnet.eval.sweep import default_eps_list
        return default_eps_list(dataset, norm)
    values = [parse_eps(part) for part in text.split(",") if part.strip()]
    if not values:
        raise ConfigError("the eps sweep list is empty; give e.g. --sweep 0.1,0.2,0.3 or --sweep paper")
    return sorted(set(values))
