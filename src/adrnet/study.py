"""Studies: several configs trained at the same budget and evaluated the same way.

Why one module: the questions a researcher brings to ADR (Bui et al., ECCV 2020),
"does it beat its base?" and "which component matters?", are both answered by
training a few variants of one config (same data, seed, schedule and attack budget)
and comparing their test accuracies under the same attacks. ``adrnet ablate`` builds
the variants of an ablation (:func:`ablation_variants`); ``benchmarks/quality.py``
passes its own. :func:`run_study` does the rest and is resumable at every level: a
finished run is not retrained (an interrupted one continues from its checkpoint), and
an evaluation is redone only when the weights it was computed on have changed (it is
keyed by the SHA-256 of the evaluated checkpoint's weights). AutoAttack keeps its own
progress file, so even a long AutoAttack evaluation continues where it stopped.

Every run is evaluated on the test split: clean and PGD-k accuracy on the whole split
(``eval.json``), AutoAttack standard on the first ``autoattack_n`` images
(``eval_autoattack.json``), with the checkpoint chosen on the validation split
(``best``), never on the test set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from adrnet.atomic import write_json_atomic, write_text_atomic
from adrnet.config import Config, apply_overrides, config_diff, config_to_dict
from adrnet.errors import CheckpointError, ConfigError
from adrnet.report.tables import comparison_markdown, csv_text
from adrnet.locking import run_lock
from adrnet.objectives import TERMS, adr_term_names, objective_from_config


def components() -> dict[str, str]:
    """ADR's terms and their short names (log labels), used in run names and tables;
    read from the term registry, so a term registered with ``adr=True`` is ablated too."""
    return {name: TERMS[name].label for name in adr_term_names()}

STATE = "study.json"

#: Config keys a rerun of a study may change: how its runs execute, never what a row
#: measures (see :func:`check_same_study`).
EXECUTION_KEYS = ("train.device", "train.progress", "train.num_threads",
                  "train.checkpoint_every", "train.log_every", "eval.batch_size")


@dataclass(frozen=True)
class EvalPlan:
    """How every run of a study is evaluated (the same for all)."""

    pgd_steps: int | None = None      # None: each config's eval.test_steps
    autoattack_n: int | None = None   # None: each config's eval.autoattack_n; 0: no AutoAttack
    autoattack_version: str = "standard"
    autoattack_attacks: tuple[str, ...] | None = None  # for version "custom"
    which: str = "best"
    device: str = "auto"
    progress: bool = True
    diagnostics: bool = True          # layer divergence and t-SNE (for the report)


def ablation_variants(cfg: Config) -> dict[str, Config]:
    """The runs of an ablation of ``cfg`` (an ADR objective): the base (every ADR weight
    0), full ADR (``cfg`` itself), each component alone on the base, and full ADR with
    each component removed. A component keeps the weight ``cfg`` gives it."""
    weights = objective_from_config(cfg).weights
    labels = components()
    present = {name: weights.get(name, 0.0) for name in labels}
    if not any(present.values()):
        raise ConfigError(f"objective '{cfg.objective.name}' has no ADR term to ablate; give a "
                          "config with an ADR objective (adr_pgd, adr_pgd_tf or adr_trades)")

    def with_weights(chosen: dict) -> Config:
        return apply_overrides(cfg, [f"objective.weights.{n}={w}" for n, w in chosen.items()])

    variants = {"base": with_weights({n: 0.0 for n in present}), "full": cfg}
    active = [name for name, weight in present.items() if weight]
    for name in active:
        variants[f"base+{labels[name]}"] = with_weights(
            {n: (present[n] if n == name else 0.0) for n in present})
    for name in active:
        variants[f"full-{labels[name]}"] = with_weights({name: 0.0})
    return variants


def describe(name: str, cfg: Config) -> str:
    """One line per variant for ``--dry-run``: its objective and non-zero ADR weights."""
    objective = objective_from_config(cfg)
    labels = components()
    weights = ", ".join(f"{labels.get(n, n)}={w:g}" for n, w in objective.active.items())
    normalised = any(TERMS[n].reads_latent for n in objective.active)
    extras = ([f"latent_norm={cfg.objective.latent_norm}"]
              if normalised and cfg.objective.latent_norm != "none" else [])
    if cfg.objective.adr_warmup_epochs:
        extras.append(f"adr_warmup_epochs={cfg.objective.adr_warmup_epochs:g}")
    return f"{name:<10} {cfg.objective.name}: {weights}" + (f" ({', '.join(extras)})" if extras else "")


def weights_digest(run_dir: Path, which: str) -> str:
    """SHA-256 of the weights of checkpoint ``which`` of a run (from its verified record)."""
    from adrnet.runs.checkpoint import checkpoint_files, open_checkpoint
    _, meta = open_checkpoint(checkpoint_files(run_dir, which))
    return meta["files"]["weights"]["sha256"]


def _train(cfg: Config, run_dir: Path) -> None:
    from adrnet.runs import has_checkpoint
    from adrnet.train import train
    train(cfg, run_dir, resume=has_checkpoint(run_dir))


def _evaluate(run_dir: Path, plan: EvalPlan, cfg: Config, digest: str) -> dict:
    """Clean + PGD-k on the whole test split, then AutoAttack on its first n images.
    An evaluation already on disk for the same weights and settings is reused, so a
    study stopped during AutoAttack does not redo its PGD evaluation."""
    common = dict(which=plan.which, device=plan.device, progress=plan.progress, split="test")
    steps = plan.pgd_steps or cfg.eval.test_steps
    pgd = cached_evaluation(run_dir / "eval.json", digest, dict(
        attacks=("pgd",), steps=plan.pgd_steps, diagnostics=plan.diagnostics, **common),
        lambda r: r["n"] == _test_size(cfg) and f"pgd-{steps}" in r["attack_accuracy"])
    (label, accuracy), = pgd["attack_accuracy"].items()  # "pgd-K": the one attack run
    summary = {"n": pgd["n"], "clean": pgd["clean_accuracy"], "pgd": accuracy,
               "pgd_steps": pgd["attack_settings"][label]["steps"], "eps": pgd["eps"],
               "norm": pgd["norm"], "eval_seconds": pgd["seconds"]}
    aa_n = cfg.eval.autoattack_n if plan.autoattack_n is None else plan.autoattack_n
    if aa_n:
        aa = cached_evaluation(run_dir / "eval_autoattack.json", digest, dict(
            attacks=("autoattack",), n=aa_n, diagnostics=False,
            autoattack_version=plan.autoattack_version, autoattack_attacks=plan.autoattack_attacks,
            autoattack_state=str(run_dir / "autoattack_state.json"), **common),
            lambda r: r["n"] == aa_n and _aa_settings(r) == _aa_settings_of(plan))
        summary.update(autoattack=aa["worst_case_accuracy"], autoattack_n=aa["n"],
                       autoattack_clean=aa["clean_accuracy"],
                       autoattack_after=aa["autoattack"]["accuracy_after"],
                       autoattack_warnings=aa["autoattack"].get("warnings", []),
                       eval_seconds=summary["eval_seconds"] + aa["seconds"])
    return summary


def cached_evaluation(path: Path, digest: str, options: dict, matches) -> dict:
    """The record in ``path`` when it is of these weights, split and checkpoint and
    ``matches(record)``; else a new evaluation written there."""
    from adrnet.eval.evaluate import EvalOptions, evaluate_run
    try:
        record = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        record = None
    if (isinstance(record, dict) and record.get("weights_sha256") == digest
            and record.get("split") == options["split"] and record.get("which") == options["which"]):
        try:
            if matches(record):
                return record
        except (KeyError, TypeError):
            pass  # a record of another shape: evaluate again
    return evaluate_run(path.parent, EvalOptions(out=str(path), **options))


def _aa_settings(record: dict) -> tuple:
    settings = record["attack_settings"]["autoattack"]
    return settings["version"], tuple(settings["attacks"] or ())


def _aa_settings_of(plan: EvalPlan) -> tuple:
    return plan.autoattack_version, tuple(plan.autoattack_attacks or ())


def _test_size(cfg: Config) -> int:
    from adrnet.data import load
    return len(load(cfg.data).test.y)


def run_study(variants: dict[str, Config], out_dir: str | Path, plan: EvalPlan = EvalPlan(),
              log=print) -> dict:
    """Train and evaluate every variant into ``out_dir/<name>``; return ``{name: summary}``.

    The summaries (and the digest of the weights each was computed on) are kept in
    ``out_dir/study.json`` after every evaluation, so an interrupted study loses at
    most the run or evaluation in progress. ``out_dir`` is locked for the whole call:
    a second study into it is refused, naming the process that holds it.
    """
    out_dir = Path(out_dir)
    with run_lock(out_dir):
        check_same_study(variants, out_dir, plan)
        state = _read_state(out_dir)
        for index, (name, cfg) in enumerate(variants.items(), 1):
            _run_variant(f"[{index}/{len(variants)}] {name}", name, cfg, out_dir, plan, state, log)
    return {name: state[name] for name in variants}


def check_same_study(variants: dict[str, Config], out_dir: Path, plan: EvalPlan) -> None:
    """Refuse, before anything is trained, a rerun whose config differs from the one the
    runs already in ``out_dir`` were trained with (their checkpoints record it) in anything
    but how they execute (:data:`EXECUTION_KEYS`) or where their data are (training checks
    the data themselves by their fingerprint).

    Why: the rows of a study are compared with each other. A run already there keeps its
    config; a run not yet there would be trained and evaluated with the new one; so a
    rerun with another ``eval.eps`` put rows at ε 0.05 and ε 0.2 into one table, and their
    differences were artefacts of the mix (so would other epochs, PGD steps or
    AutoAttack images be). Re-evaluating at the new radius would not make them
    comparable either: each run's ``best`` checkpoint was chosen by validation at the old
    one. The evaluation plan (``--pgd-steps``, ``--aa-n``, the AutoAttack options) may
    change: it evaluates every run again, alike; the config keys it overrides are not
    compared."""
    from adrnet.runs.checkpoint import checkpoint_files, read_meta
    from adrnet.runs.load import config_of
    from adrnet.train.resume import DATA_PLACE_KEYS
    ignored = {*EXECUTION_KEYS, *DATA_PLACE_KEYS}
    if plan.pgd_steps is not None:
        ignored |= {"eval.test_steps", "eval.test_step_size"}
    if plan.autoattack_n is not None:
        ignored.add("eval.autoattack_n")
    for name, cfg in variants.items():
        for which in dict.fromkeys(("last", plan.which)):
            files = checkpoint_files(out_dir / name, which)
            try:
                saved = _measured(config_of(read_meta(files), files.path("meta")))
            except CheckpointError:
                continue  # no such checkpoint, or a damaged one: training says which
            now = _measured(cfg)
            changed = [key for key in config_diff(saved, now) if key not in ignored]
            if changed:
                what = "; ".join(f"{key} = {_value(now, key)!r} (run {name} has "
                                 f"{_value(saved, key)!r})" for key in changed)
                raise ConfigError(
                    f"cannot continue the study in {out_dir} with {what}: the runs of a study "
                    "are compared with each other, so they are trained and evaluated alike; "
                    "rerun it with the config it was started with, or give another --out for "
                    "a new study (--pgd-steps, --aa-n and the AutoAttack options may change: "
                    "every run is then evaluated again)")


def _measured(cfg: Config) -> Config:
    """``cfg`` with the radius it reports written out (eval.eps unset means attack.eps)."""
    return replace(cfg, eval=replace(cfg.eval, eps=cfg.eval_eps))


def _value(cfg: Config, key: str):
    """The value of a dotted config key (as config_diff names it), for messages."""
    value = config_to_dict(cfg)
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _run_variant(label: str, name: str, cfg: Config, out_dir: Path, plan: EvalPlan,
                 state: dict, log) -> None:
    """Train one variant (resuming) and evaluate it unless ``state`` already holds an
    evaluation of the same weights under the same plan."""
    run_dir = out_dir / name
    log(f"{label}: training ({run_dir})")
    _train(cfg, run_dir)
    digest = weights_digest(run_dir, plan.which)
    saved = state.get(name, {})
    if saved.get("weights_sha256") == digest and saved.get("plan") == _plan_key(plan):
        log(f"{label}: evaluated already (same weights)")
        return
    log(f"{label}: evaluating on the test split")
    summary = _evaluate(run_dir, plan, cfg, digest)
    state[name] = {"weights_sha256": digest, "plan": _plan_key(plan), "summary": summary,
                   "config": config_to_dict(cfg), "train_seconds": train_seconds(run_dir)}
    write_json_atomic(out_dir / STATE, state)


def _plan_key(plan: EvalPlan) -> dict:
    """The settings that change an evaluation's numbers (not device or progress bars)."""
    return {"pgd_steps": plan.pgd_steps, "autoattack_n": plan.autoattack_n, "which": plan.which,
            "autoattack": [plan.autoattack_version, list(plan.autoattack_attacks or [])]}


def train_seconds(run_dir: Path) -> float:
    """Training time of a run: the sum of its epoch records' ``time_s``."""
    path = run_dir / "metrics.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return round(sum(r.get("time_s", 0.0) for r in records if r.get("kind") == "epoch"), 1)


def _read_state(out_dir: Path) -> dict:
    path = out_dir / STATE
    if not path.exists():
        return {}
    try:
        state = json.loads(path.read_text())
    except ValueError:
        return {}  # a damaged state only costs re-evaluation
    return state if isinstance(state, dict) else {}


METRICS = ("clean", "pgd", "autoattack")


#: What a row's accuracies were measured with: rows of one table must agree on all.
MEASURED_WITH = ("norm", "eps", "n", "pgd_steps", "autoattack_n")


def check_comparable(results: dict) -> None:
    """Refuse to put runs evaluated differently (another radius, PGD-k or number of
    images) into one table, whose point differences would then be artefacts."""
    (first, entry), *_ = results.items()
    for name, other in results.items():
        differ = [f"{key} {other['summary'].get(key)!r} against {entry['summary'].get(key)!r}"
                  for key in MEASURED_WITH
                  if other["summary"].get(key) != entry["summary"].get(key)]
        if differ:
            raise ConfigError(f"runs {name} and {first} were evaluated differently "
                              f"({', '.join(differ)}) and cannot be compared in one table; "
                              "evaluate them alike (rerun the study with one config and plan)")


def comparison_rows(results: dict, references=("base", "full")) -> list[dict]:
    """One flat record per run: its accuracies and their differences (in points) to
    each reference run that exists (``d_clean_vs_base`` ...), once
    :func:`check_comparable` holds."""
    check_comparable(results)
    rows = []
    for name, entry in results.items():
        summary = entry["summary"]
        row = {"run": name, **{key: summary.get(key) for key in METRICS},
               "n": summary["n"], "autoattack_n": summary.get("autoattack_n")}
        for ref in references:
            if ref not in results:
                continue
            for key in METRICS:
                mine, theirs = summary.get(key), results[ref]["summary"].get(key)
                row[f"d_{key}_vs_{ref}"] = (None if mine is None or theirs is None
                                            else round(100 * (mine - theirs), 2))
        if summary.get("autoattack") is not None:  # AutoAttack's own flags on its figure
            from adrnet.attacks.autoattack import autoattack_flags
            flags = autoattack_flags(summary.get("autoattack_warnings"), summary.get("autoattack_after"))
            if flags:  # a column only when one is raised: the CSV of an unflagged study is unchanged
                row["autoattack_flags"] = " ".join(flags)
        rows.append(row)
    return rows


def write_tables(results: dict, out_dir: str | Path, stem: str = "ablation") -> tuple[Path, Path]:
    """``stem.md`` and ``stem.csv`` in ``out_dir``; returns both paths."""
    out_dir = Path(out_dir)
    rows = comparison_rows(results)
    md_path, csv_path = out_dir / f"{stem}.md", out_dir / f"{stem}.csv"
    write_text_atomic(md_path, comparison_markdown(rows, next(iter(results.values()))["summary"]))
    write_text_atomic(csv_path, csv_text(rows))
    return md_path, csv_path
