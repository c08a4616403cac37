"""`adrnet eval` as a library function: load a run, attack it, write ``eval.json``.

Why: the command line only parses arguments; everything it does is this one
function, so it is tested and usable from Python. The protocol follows the
paper's code (Bui et al., ECCV 2020): PGD-k (the config's ``eval.test_steps``,
PGD-200 by default), AutoAttack (Croce & Hein, ICML 2020) and Brendel & Bethge
(NeurIPS 2019, started from PGD-20) on the test split,
and the reported robust accuracy is the per-example worst case over every
attack run. When AutoAttack or B&B is among the attacks and no ``n`` is given, all
attacks use the first ``eval.autoattack_n`` images (1000 in the paper), so the
worst case is taken over one common set of examples.
Attacks are chosen by name from ``adrnet.attacks.ATTACKS`` and run by one loop over
their specs (no attack is special-cased here), so one a user registers runs like the
built-ins.
Threat model: L∞ or L2 ball of radius ε (defaults: the run's training threat).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import torch

from adrnet.atomic import output_file, read_small_file, write_json_atomic
from adrnet.attacks import ATTACKS, make_threat, parse_attack_names
from adrnet.data import describe
from adrnet.device import resolve_device
from adrnet.errors import ConfigError, OutputError
from adrnet.eval.precision import PRECISIONS, LowPrecision, VerifiedAttack
from adrnet.eval.robust import robust_accuracy
from adrnet.locking import file_lock
from adrnet.runs import CHECKPOINT_DIR, load_checkpoint, resolve_checkpoint
from adrnet.runs.load import LoadedCheckpoint
from adrnet.runs.zoo import ZOO_EVAL_DIR, is_zoo


@dataclass(frozen=True)
class EvalOptions:
    """Settings of one evaluation; ``None`` means "take it from the run's config"."""

    attacks: tuple[str, ...] = ("fgsm", "pgd")
    eps: float | None = None
    norm: str | None = None
    n: int | None = None
    split: str = "test"
    steps: int | None = None
    step_size: float | None = None
    restarts: int | None = None
    batch_size: int | None = None
    device: str = "auto"
    which: str = "best"
    data_root: str | None = None
    data_path: str | None = None  # a data file's new place (data.path of npz / folder runs)
    sweep: tuple[float, ...] | str | None = None  # radii, or "paper": the paper's list
    sanity: bool = False
    sanity_n: int = 200
    diagnostics: bool = True
    diagnostics_n: int = 200
    autoattack_version: str = "standard"
    autoattack_attacks: tuple[str, ...] | None = None
    autoattack_state: str | None = None
    #: options of single attacks by name, e.g. {"bb": {"walk_steps": 50}} (over the
    #: autoattack_* fields above, which are the autoattack attack's)
    attack_options: Mapping[str, Mapping[str, Any]] | None = None
    seed: int = 0
    progress: bool = True
    out: str | None = None
    precision: str | None = None  # "fp32" or "bf16" (attacks on a bf16 copy, breaks verified in fp32)
    force: bool = False           # redo an evaluation that eval.json already holds
    #: the threat object (norm, ε) built and checked once by resolve_options; below it,
    #: nothing builds or checks ε again
    threat: Any = None


def resolve_options(options: EvalOptions, cfg) -> EvalOptions:
    """Fill the ``None`` settings from the run's config and validate everything."""
    attacks = tuple(parse_attack_names(list(options.attacks)))
    norm = options.norm or cfg.attack.threat
    if options.eps is None and norm != cfg.attack.threat:
        raise ConfigError(f"give --eps for --norm {norm}: the run was trained under "
                          f"{cfg.attack.threat} eps={cfg.attack.eps}, which is no {norm} radius")
    eps = cfg.eval_eps if options.eps is None else float(options.eps)
    dim = describe(cfg.data).input_values
    threat = make_threat(norm, eps, dim)
    n = options.n
    if n is None and any(ATTACKS.get(a).expensive for a in attacks) and cfg.eval.autoattack_n:
        n = cfg.eval.autoattack_n
    if n is not None and n <= 0:
        raise ConfigError(f"--n must be a positive number of examples, got {n}")
    if options.split not in ("test", "val"):
        raise ConfigError(f"--split must be 'test' or 'val', got {options.split!r}")
    from adrnet.config_values import NUMPY_SEED_RANGE, check_seed  # also t-SNE's (numpy) seed
    check_seed("--seed", options.seed, NUMPY_SEED_RANGE, "t-SNE's numpy RandomState")
    steps = options.steps or cfg.eval.test_steps
    sweep = options.sweep
    if sweep == "paper":  # the paper's list depends on the data set, known only here
        from adrnet.eval.sweep import default_eps_list
        sweep = tuple(default_eps_list(cfg.data.name, norm))
    elif isinstance(sweep, str):
        raise ConfigError(f"sweep must be a sequence of radii (floats) or 'paper', got {sweep!r}")
    for value in sweep or ():
        make_threat(norm, value, dim)
    # the config's step size belongs to its own (steps, ε); with either overridden: 2.5·ε/steps
    step_size = options.step_size if options.step_size is not None else (
        cfg.eval.test_step_size if options.eps is None and options.steps is None else None)
    precision = options.precision or cfg.eval.precision
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return replace(options, attacks=attacks, norm=norm, eps=eps, threat=threat, n=n, steps=steps,
                   sweep=sweep, precision=precision,
                   step_size=step_size, restarts=options.restarts or cfg.eval.test_restarts,
                   batch_size=options.batch_size or cfg.eval.batch_size,
                   device=str(resolve_device(options.device)))


def locate(target: Path, which: str, out: str | None) -> tuple[Path, Path]:
    """(checkpoint stem, output file): ``eval.json`` goes in the run directory, also
    when a checkpoint file is given; the stem names the checkpoint actually used."""
    stem = resolve_checkpoint(target, which).stem.resolve()
    folder = stem.parent
    default = (folder.parent if folder.name == CHECKPOINT_DIR else folder) / "eval.json"
    return stem, Path(out) if out else default


def refuse_state_at_output(opts: EvalOptions, out_path: Path) -> None:
    """Refuse an attack's progress file (``state_path``: ``--aa-state``, ``--square-state``)
    that is the output file itself or another attack's progress file (by name, through a
    link or as a hard link). Why: the record would replace the progress when the
    evaluation ends (or one attack's progress the other's), so no rerun could resume or be
    skipped: each would ask to delete the file."""
    seen = {"--out": out_path}
    for name, options in attack_options(opts).items():
        state = options.get("state_path")
        if state is None:
            continue
        for other, path in seen.items():
            if _same_file(Path(state), path):
                raise ConfigError(f"{name}'s state file and {other} are the same file ({path}): "
                                  "one would overwrite the other; give each attack's state file "
                                  "(--aa-state, --square-state) a name of its own, e.g. "
                                  f"{name}_state.json beside the record")
        seen[f"{name}'s state file"] = Path(state)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or a.samefile(b)
    except OSError:  # one of them does not exist yet (or cannot be looked at): not the same
        return False


def load_eval_data(cfg, split: str, n: int | None, data_root: str | None):
    """(x, y) of the first ``n`` examples of the run's ``split``."""
    from adrnet.data import load
    splits = load(replace(cfg.data, root=data_root or cfg.data.root))
    x, y = splits.test if split == "test" else splits.val
    if n is not None and n > len(y):
        raise ConfigError(f"--n {n} is more than the {len(y)} examples of the {split} split")
    return (x, y) if n is None else (x[:n], y[:n])


def attack_options(opts: EvalOptions) -> dict[str, dict]:
    """The options of each chosen attack (by name): the settings attacks may share
    (``steps``, ``step_size``, ``restarts``, ``seed``) where its defaults name them, the
    ``autoattack_*`` fields (the --aa-* flags) where they are its options, then its own
    entry of ``attack_options``, where an option it does not take is refused."""
    shared = {"steps": opts.steps, "step_size": opts.step_size, "restarts": opts.restarts,
              "seed": opts.seed}
    flags = {"autoattack": {"version": opts.autoattack_version, "attacks": opts.autoattack_attacks,
                            "state_path": opts.autoattack_state}}
    own = dict(opts.attack_options or {})
    for name in own:
        ATTACKS.get(name)  # a misspelt name is refused, not ignored
    chosen = {}
    for name in opts.attacks:
        spec = ATTACKS.get(name)
        chosen[name] = spec.options(**{**spec.pick(shared), **spec.pick(flags.get(name, {})),
                                       **own.get(name, {})})
    return chosen


def attack_plan(opts: EvalOptions) -> dict[str, tuple[str, dict, dict]]:
    """Each chosen attack by label: (name, its options, the settings eval.json records)."""
    options = attack_options(opts)
    plan = {}
    for name in opts.attacks:
        spec = ATTACKS.get(name)
        settings = spec.settings(opts.threat, options[name])
        if opts.precision == "bf16" and runs_in_bf16(spec):
            settings = {**settings, "precision": "bf16"}
        plan[spec.label(options[name])] = (name, options[name], settings)
    return plan


def runs_in_bf16(spec) -> bool:
    """Whether an attack can run on the bf16 copy with its breaks judged in fp32."""
    return spec.bf16 and (not spec.whole_set
                          or "judge" in inspect.signature(spec.evaluate).parameters)


def run_attacks(model, x, y, opts: EvalOptions) -> tuple:
    """(EvalResult, extra record entries: the attacks' summaries by label, and ``bf16_only``
    in bf16) for the chosen attacks. Every attack is built first (a bad setting or a
    missing package stops the evaluation before any attack runs); those that evaluate the
    whole set themselves (``spec.evaluate``) run next, then the others batch by batch on
    the clean-correct examples, and the worst case is taken over all of them. In bf16 the
    attacks run on a bf16 copy of the model and the fp32 model judges every point."""
    fast = LowPrecision(model) if opts.precision == "bf16" else None
    fns, settings, whole_set = {}, {}, []
    for label, (name, options, recorded) in attack_plan(opts).items():
        spec = ATTACKS.get(name)
        if spec.whole_set:
            whole_set.append((label, spec, options))
            continue
        fn = spec.build(opts.threat, **options)
        fns[label] = VerifiedAttack(fn, fast) if fast is not None and spec.bf16 else fn
        settings[label] = recorded
    extra, summaries, seconds = {}, {}, {}
    for label, spec, options in whole_set:
        bf16 = fast is not None and runs_in_bf16(spec)
        started = time.perf_counter()
        run = spec.evaluate(fast if bf16 else model, x, y, opts.threat, device=opts.device,
                            batch_size=opts.batch_size, progress=opts.progress,
                            **({"judge": model} if bf16 else {}), **options)
        seconds[label] = time.perf_counter() - started
        extra[label] = run.correct
        settings[label] = {**run.settings, "precision": "bf16"} if bf16 else run.settings
        if run.summary is not None:
            summaries[label] = run.summary
    result = robust_accuracy(model, x, y, fns, batch_size=opts.batch_size, settings=settings,
                             extra_correct=extra, progress=opts.progress)
    result = replace(result, attack_seconds={**seconds, **result.attack_seconds})
    for label, fn in fns.items():
        if callable(getattr(fn, "summary", None)):  # e.g. B&B's distances
            summaries[label] = fn.summary()
    if fast is not None:
        counts = {label: fn.bf16_only for label, fn in fns.items() if isinstance(fn, VerifiedAttack)}
        counts.update({label: found.pop("bf16_only") for label, found in summaries.items()
                       if "bf16_only" in found})
        summaries["bf16_only"] = counts
    return result, summaries


def evaluate_model(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                   attacks=("fgsm", "pgd"), eps: float, norm: str = "linf", steps: int = 20,
                   step_size: float | None = None, restarts: int = 1, batch_size: int = 256,
                   device: str = "cpu", seed: int = 0, progress: bool = False,
                   attack_options: Mapping[str, Mapping[str, Any]] | None = None,
                   precision: str = "fp32"):
    """Evaluate any model on tensors (inputs in [0, 1]): the attacks of ``adrnet eval``
    (any registered name) and the per-example worst case over them, with no run
    directory and no file written. Returns an :class:`~adrnet.eval.robust.EvalResult`
    (``.to_dict()`` has eval.json's accuracy fields)."""
    opts = EvalOptions(attacks=tuple(parse_attack_names(list(attacks))), eps=float(eps),
                       norm=norm, steps=steps, step_size=step_size, restarts=restarts,
                       batch_size=batch_size, device=str(resolve_device(device)), seed=seed,
                       progress=progress, attack_options=attack_options, diagnostics=False,
                       precision=precision)
    opts = replace(opts, threat=make_threat(norm, eps, x[0].numel()))
    torch.manual_seed(seed)
    return run_attacks(model.to(opts.device), x, y, opts)[0]


def run_diagnostics(model, x, y, opts: EvalOptions) -> dict:
    """Layer divergence and latent t-SNE on the first ``diagnostics_n`` examples."""
    from adrnet.eval.divergence import latent_tsne, layer_divergence
    xs, ys = x[:opts.diagnostics_n], y[:opts.diagnostics_n]
    pgd, threat = ATTACKS.get("pgd"), opts.threat
    options = pgd.options(steps=min(opts.steps, 20))
    x_adv = pgd.build(threat, **options)(model, xs.to(opts.device), ys.to(opts.device)).cpu()
    out = {"n": len(ys), "attack": pgd.settings(threat, options)}
    if hasattr(model, "forward_stages"):
        out["divergence"] = layer_divergence(model, xs, x_adv, opts.batch_size)
    if len(ys) < 2:  # t-SNE needs perplexity < points, and the smallest perplexity is 2
        out["tsne_skipped"] = "t-SNE needs at least 2 examples (raise --n / --diagnostics-n)"
        return out
    try:
        out["tsne"] = latent_tsne(model, xs, x_adv, ys, seed=opts.seed)
    except ImportError:
        out["tsne_skipped"] = "scikit-learn is not installed (pip install scikit-learn)"
    return out


#: An eval.json is a few hundred kB at most (t-SNE coordinates included); a larger
#: file at --out is something else, and is neither read nor overwritten.
EVAL_JSON_LIMIT = 64 * 2**20


def read_previous(path: Path) -> dict | None:
    """The earlier ``eval.json`` at ``path`` (None if there is none); anything at
    ``path`` that is not one is refused, because this evaluation would replace it."""
    data = read_small_file(path, EVAL_JSON_LIMIT, "eval.json")
    if data is None:
        return None
    try:
        previous = json.loads(data)
    except ValueError:
        previous = None
    if not isinstance(previous, dict) or "worst_case_accuracy" not in previous:
        raise OutputError(f"{path} exists and is not an eval.json written by adrnet eval; "
                          "move it away or choose another --out (it would be overwritten)")
    return previous


def kept_sweeps(previous: dict | None, record: dict) -> tuple[dict, list[str]]:
    """The ε sweeps of an earlier ``eval.json`` that belong to this evaluation, and a
    note for each one dropped. A sweep is kept only when it was computed on the same
    weights (SHA-256 of the weights file) and the same examples (split and n), so an
    L∞ and an L2 sweep, run one after the other, both reach the report, while a sweep
    of weights a resumed run has since replaced is never reported as current."""
    sweeps = (previous or {}).get("sweeps")
    if not sweeps or not isinstance(sweeps, dict):
        return {}, []
    why = None
    old_sha = previous.get("weights_sha256")
    if old_sha != record["weights_sha256"]:
        why = (f"computed on other weights (SHA-256 {str(old_sha)[:12]}…, these are "
               f"{record['weights_sha256'][:12]}…)" if old_sha else "recorded without the "
               "SHA-256 of its weights (an older adrnet)")
    elif (previous.get("split"), previous.get("n")) != (record["split"], record["n"]):
        why = (f"computed on {previous.get('n')} {previous.get('split')} examples, not "
               f"{record['n']} {record['split']} ones")
    if why is None:
        return sweeps, []
    return {}, [f"dropped the earlier ε sweep(s) ({', '.join(sorted(sweeps))}): {why}"]


def evaluate_run(target: str | Path | LoadedCheckpoint, options: EvalOptions = EvalOptions()) -> dict:
    """Evaluate a run directory or checkpoint; write and return the ``eval.json`` record.
    ``target`` may also be a model already loaded with its config (``adrnet eval --model
    ... --weights FILE``: :func:`adrnet.runs.weights.load_weights`); its eval.json goes
    next to the weights file. A shipped model, ``"zoo:NAME"``, writes
    ``runs/zoo/NAME/eval.json`` (below the working directory, as training's default run
    directories are: the installed package is not the place for results).

    The output file is locked for the whole evaluation (a second ``adrnet eval``
    writing it is refused), and an earlier record there is checked before any
    attack runs. The returned record's ``notes`` say what was dropped from it."""
    started = time.time()
    given = target if isinstance(target, LoadedCheckpoint) else None
    weights_file = given is not None  # a model from --model/--weights: no objective to record
    zoo_name = str(target) if is_zoo(target) else None
    if zoo_name:  # a shipped model: loaded by name, its results go under runs/zoo/
        given = load_checkpoint(target, map_location="cpu", which=options.which)
        options = replace(options, out=options.out or str(ZOO_EVAL_DIR / given.files.stem.name / "eval.json"))
    target = Path(target) if given is None else given.files.stem
    loaded = given or load_checkpoint(target, map_location="cpu", which=options.which)
    cfg = loaded.cfg
    if options.data_path:
        cfg = replace(cfg, data=replace(cfg.data, path=options.data_path))
    if "splits" in loaded.objects:
        raise ConfigError(f"{target} was trained on data passed to train() as tensors, which its "
                          "config cannot load; evaluate it from Python: "
                          "adrnet.eval.evaluate_model(model, x, y, ...)")
    opts = resolve_options(options, cfg)
    model = loaded.model.to(opts.device).eval()
    stem, out_path = locate(target, opts.which, opts.out) if given is None else (
        target, Path(opts.out) if opts.out else target.parent / "eval.json")
    out_path = output_file(out_path)
    refuse_state_at_output(opts, out_path)
    with file_lock(out_path):
        previous = read_previous(out_path)
        x, y = load_eval_data(cfg, opts.split, opts.n, opts.data_root)
        plan = evaluation_plan(opts, loaded.weights_sha256, x, y)
        if previous is not None and previous.get("plan") == plan and not opts.force:
            return {**previous, "path": str(out_path), "skipped": True,
                    "notes": [f"{out_path} already holds this evaluation (the same weights, data, "
                              "ε, precision and attacks): nothing redone; --force redoes it"]}
        torch.manual_seed(opts.seed)
        result, summaries = run_attacks(model, x, y, opts)
        record = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "checkpoint": zoo_name or str(stem), "which": "best" if zoo_name else stem.name,
                  "weights_sha256": loaded.weights_sha256, "dataset": cfg.data.name,
                  "model": cfg.model.name,
                  "objective": "(weights file)" if weights_file else cfg.objective.name,
                  "split": opts.split,
                  "norm": opts.norm, "eps": opts.eps, "precision": opts.precision,
                  "device": opts.device, "seed": opts.seed, **result.to_dict(), "plan": plan}
        record.update(summaries)
        sweeps, notes = kept_sweeps(previous, record)
        record.update(extra_analyses(model, x, y, opts, sweeps))
        # a resumed attack (AutoAttack) adds the time its earlier calls spent on the batches they saved
        earlier = sum(s.get("resumed_seconds", 0.0) for s in summaries.values() if isinstance(s, dict))
        record["seconds"] = round(time.time() - started + earlier, 1)
        write_json_atomic(out_path, record)
    return {**record, "path": str(out_path), "notes": notes}


def evaluation_plan(opts: EvalOptions, weights_sha256: str, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Everything an evaluation's numbers depend on: the weights and data (SHA-256 of
    each), the examples, ε, the precision, the seed, every attack's settings and the
    optional analyses. ``eval.json`` keeps it; an evaluation with an equal plan is not
    run again (``force`` redoes it)."""
    data = hashlib.sha256(x.detach().cpu().float().contiguous().numpy().tobytes())
    data.update(y.detach().cpu().contiguous().numpy().tobytes())
    plan = {"weights_sha256": weights_sha256, "data_sha256": data.hexdigest(),
            "split": opts.split, "n": len(y), "norm": opts.norm, "eps": opts.eps,
            "precision": opts.precision, "seed": opts.seed,
            "attacks": {label: recorded for label, (_, _, recorded) in attack_plan(opts).items()},
            "sweep": list(opts.sweep or ()), "sanity": opts.sanity and opts.sanity_n,
            "diagnostics": opts.diagnostics and opts.diagnostics_n}
    return json.loads(json.dumps(plan))  # as it reads back from eval.json


def extra_analyses(model, x, y, opts: EvalOptions, sweeps: dict) -> dict:
    """The optional parts of ``eval.json``: ε sweeps (this one added to ``sweeps``,
    those kept from an earlier record), sanity checks, diagnostics."""
    from adrnet.eval.sanity import sanity_checks
    from adrnet.eval.sweep import eps_sweep
    rows, extra = None, {}
    if opts.sweep:
        rows = eps_sweep(model, x, y, norm=opts.norm, eps_list=opts.sweep,
                         attacks=[a for a in opts.attacks if not ATTACKS.get(a).whole_set] or ["pgd"],
                         steps=opts.steps, restarts=opts.restarts, batch_size=opts.batch_size,
                         progress=opts.progress)
    extra["sweeps"] = {**sweeps, opts.norm: rows} if rows is not None else sweeps
    if opts.sanity:
        extra["sanity"] = sanity_checks(model, x[:opts.sanity_n], y[:opts.sanity_n], norm=opts.norm,
                                        eps=opts.eps, steps=min(opts.steps, 20),
                                        batch_size=opts.batch_size, seed=opts.seed).to_dict()
    if opts.diagnostics:
        extra["diagnostics"] = run_diagnostics(model, x, y, opts)
    return extra
