"""``adrnet ablate``: train and evaluate the ADR ablation of one config.

The runs (base, full ADR, each component alone and removed) come from
:func:`adrnet.study.ablation_variants`; training, evaluation and the tables are
:mod:`adrnet.study`'s, the HTML page :func:`adrnet.report.write_report`'s.
"""

from __future__ import annotations

from pathlib import Path

from adrnet.cli import (add_autoattack_options, add_config_options, autoattack_attacks,
                        config_overrides, non_negative_int, positive_int)
from adrnet.errors import ConfigError
from adrnet.runs import WHICH


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "ablate", help="ADR ablation: base, full ADR, each component alone and removed",
        description="Train, at the config's seed and budget, the base (every ADR weight 0), "
        "full ADR, each ADR component alone on the base and full ADR without each component; "
        "evaluate each on the test split (clean and PGD-k on all of it, AutoAttack on the first "
        "N images, best checkpoint by validation); write OUT/ablation.md, OUT/ablation.csv and "
        "OUT/report.html. Rerun the same command to continue an interrupted ablation (a "
        "rerun with another config is refused: one table compares runs trained and evaluated alike).")
    add_config_options(p)
    p.add_argument("--out", metavar="DIR", help="study directory (default: runs/ablate_<config name>)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their weights, train nothing")
    p.add_argument("--pgd-steps", type=positive_int, help="PGD-k of the evaluation "
                   "(default: the config's eval.test_steps)")
    p.add_argument("--aa-n", type=non_negative_int, help="AutoAttack on the first N test images "
                   "(default: the config's eval.autoattack_n; 0: none)")
    p.add_argument("--which", choices=WHICH, default="best",
                   help="checkpoint to evaluate (best: chosen on the validation split)")
    add_autoattack_options(p, "AutoAttack version (standard needs 4 or more classes)")
    p.add_argument("--no-diagnostics", action="store_true", help="skip layer divergence and t-SNE")
    p.set_defaults(func=cmd_ablate)


def cmd_ablate(args) -> int:
    from adrnet.config import load_config
    from adrnet.report import write_report
    from adrnet.study import EvalPlan, ablation_variants, describe, run_study, write_tables
    if not args.config:
        raise ConfigError("give --config TOML: the ADR config to ablate (e.g. configs/mnist_quick_adr.toml)")
    out_dir = Path(args.out) if args.out else Path("runs") / f"ablate_{Path(args.config).stem}"
    variants = ablation_variants(load_config(args.config, config_overrides(args)))
    if args.dry_run:
        print(f"{len(variants)} runs into {out_dir}/<name> (same seed, data and budget):")
        print("\n".join(describe(name, cfg) for name, cfg in variants.items()))
        return 0
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
