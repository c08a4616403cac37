"""`adrnet eval` and `adrnet report`: argument parsing only.

Why a thin shell: each subcommand parses its arguments and calls one library
function (:func:`adrnet.eval.evaluate.evaluate_run`,
:func:`adrnet.eval.report.write_report`), so everything is testable from
Python. Attacks: FGSM, PGD-k, CW (PGD on the CW margin), multi-targeted PGD,
Brendel & Bethge (foolbox), AutoAttack (Croce & Hein 2020); threat models L∞ and L2. Registered by ``adrnet.cli`` through
:func:`add_subcommands`.
"""

from __future__ import annotations

import argparse

from adrnet.cli import positive_int
from adrnet.errors import ConfigError

EVAL_EPILOG = """defaults come from the run's config.toml: eps and norm of its training
threat model, PGD steps/restarts from [eval] test_steps (200, as in the paper) and
test_restarts; PGD step size 2.5*eps/steps. Results go to RUN_DIR/eval.json.
examples:
  adrnet eval runs/quick --attacks fgsm,pgd --steps 20 --n 1000
  adrnet eval runs/quick --attacks pgd,cw,autoattack --n 1000 --sanity
  adrnet eval runs/quick --attacks pgd,mt,bb --n 1000
  adrnet eval runs/quick --norm l2 --eps 2.0 --sweep paper"""


def add_autoattack_options(p, version_help: str = "AutoAttack version") -> None:
    """--aa-version and --aa-attacks (eval and ablate); read back by :func:`autoattack_attacks`."""
    from adrnet.eval.autoattack import AA_VERSIONS
    p.add_argument("--aa-version", default="standard", choices=AA_VERSIONS, help=version_help)
    p.add_argument("--aa-attacks", help="AutoAttack attacks for --aa-version custom, e.g. apgd-ce,square")


def autoattack_attacks(args) -> tuple[str, ...] | None:
    """The --aa-attacks list (only with --aa-version custom), or None."""
    if args.aa_attacks and args.aa_version != "custom":
        raise ConfigError("--aa-attacks needs --aa-version custom")
    return tuple(a.strip() for a in args.aa_attacks.split(",")) if args.aa_attacks else None


def _eval_parser(subparsers) -> None:
    p = subparsers.add_parser("eval", help="robust accuracy of a trained run (worst case over attacks)",
                              description="Attack a trained model and write eval.json.",
                              epilog=EVAL_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", metavar="RUN_DIR_or_CHECKPOINT")
    p.add_argument("--attacks", default="fgsm,pgd", help="comma-separated: fgsm,pgd,cw,mt (multi-targeted PGD),bb (Brendel & Bethge, "
                        "needs adrnet[bb]),autoattack (default fgsm,pgd)")
    p.add_argument("--eps", help="radius, e.g. 0.3 or 8/255 (default: the run's training eps)")
    p.add_argument("--norm", choices=("linf", "l2"), help="threat model (default: the run's)")
    p.add_argument("--n", type=int, help="first N examples of the split (default: all; 1000 with autoattack or bb)")
    p.add_argument("--split", choices=("test", "val"), default="test")
    p.add_argument("--steps", type=positive_int, help="PGD/CW steps (default: eval.test_steps)")
    p.add_argument("--step-size", help="PGD/CW step size (default 2.5*eps/steps)")
    p.add_argument("--restarts", type=positive_int, help="PGD/CW random restarts (default: eval.test_restarts)")
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default auto)")
    p.add_argument("--which", choices=("best", "last"), default="best", help="checkpoint of a run directory")
    p.add_argument("--data-root", help="data directory (default: the run's)")
    p.add_argument("--sweep", metavar="EPS_LIST", help="also sweep eps: 'paper' or e.g. 0.1,0.2,0.3 or 2/255,4/255")
    p.add_argument("--sanity", action="store_true", help="run the gradient-masking checks")
    p.add_argument("--sanity-n", type=positive_int, default=200, help="examples for --sanity (200)")
    p.add_argument("--no-diagnostics", action="store_true", help="skip layer divergence and t-SNE")
    p.add_argument("--diagnostics-n", type=positive_int, default=200, help="examples for the diagnostics (200)")
    add_autoattack_options(p)
    p.add_argument("--aa-state", help="AutoAttack progress file: rerun the same command to resume")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="output file (default RUN_DIR/eval.json)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_eval)


def _report_parser(subparsers) -> None:
    p = subparsers.add_parser("report", help="one HTML page (+ Markdown) comparing evaluated runs",
                              description="Write a self-contained HTML report and its Markdown twin.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", default="report.html", help="HTML file (report.md is written next to it)")
    p.add_argument("--title", default="adrnet report")
    p.set_defaults(func=cmd_report)


def add_subcommands(subparsers) -> None:
    """Register ``eval`` and ``report`` on the main ``adrnet`` parser."""
    _eval_parser(subparsers)
    _report_parser(subparsers)


def options_from_args(args):
    """:class:`EvalOptions` from parsed ``adrnet eval`` arguments."""
    from adrnet.eval.attacks_suite import parse_attack_names
    from adrnet.eval.evaluate import EvalOptions
    from adrnet.eval.sweep import parse_eps, parse_eps_list, parse_number
    sweep = None
    if args.sweep:  # "paper" needs the data set: resolved from the config in evaluate_run
        sweep = args.sweep if args.sweep.strip().lower() in ("paper", "default") else tuple(parse_eps_list(args.sweep))
    return EvalOptions(
        attacks=tuple(parse_attack_names(args.attacks)), norm=args.norm, n=args.n, split=args.split,
        eps=None if args.eps is None else parse_eps(args.eps), steps=args.steps,
        step_size=None if args.step_size is None else parse_number(args.step_size, "--step-size"),
        restarts=args.restarts, batch_size=args.batch_size, device=args.device, which=args.which,
        data_root=args.data_root, sweep=sweep, sanity=args.sanity, sanity_n=args.sanity_n,
        diagnostics=not args.no_diagnostics, diagnostics_n=args.diagnostics_n,
        autoattack_version=args.aa_version, autoattack_attacks=autoattack_attacks(args),
        autoattack_state=args.aa_state, seed=args.seed, progress=not args.no_progress, out=args.out)


def cmd_eval(args) -> int:
    from adrnet.eval.evaluate import evaluate_run
    from adrnet.eval.tables import format_eval
    record = evaluate_run(args.target, options_from_args(args))
    print(format_eval(record))
    for note in record["notes"]:
        print(f"note: {note}")
    print(f"results: {record['path']}")
    return 0


def cmd_report(args) -> int:
    from adrnet.eval.report import write_report
    html_path, md_path = write_report(args.runs, args.out, title=args.title)
    print(f"report: {html_path}\nmarkdown: {md_path}")
    return 0
