"""Run configuration: nested frozen dataclasses, read from and written to TOML.

Why: a training run is defined by a few dozen numbers (ε and norm of the attack, PGD
steps, term weights, schedule...). Keeping every one of them in
one immutable value, saved as ``config.toml`` next to every checkpoint, makes a run
reproducible from its directory alone: ``adrnet train --config RUN/config.toml``.
Presets are plain files in ``configs/``; command-line overrides use TOML value
syntax (``train.epochs=3``, ``schedule.milestones=[55, 75, 90]``). Every unknown key,
wrong type or out-of-range value raises :class:`ConfigError` naming the key and
what is allowed. Optional settings are omitted from the TOML file when unset.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import tomli_w

from adrnet.config_values import (
    MAX_ATTACK_STEPS, MAX_LR, MAX_THREADS, TORCH_SEED_RANGE, check_nesting,
    check_ranges, check_seed, check_step_budget, coerce_section, parse_override, read_config_file,
)
from adrnet.device import DEVICES
from adrnet.errors import ConfigError


def _opt(default, **limits):
    """A dataclass field with value limits (ge, gt, le, lt) checked at load time."""
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=limits)
    return field(default=default, metadata=limits)


@dataclass(frozen=True)
class DataConfig:
    name: str = "mnist"                  # a key of adrnet.data.DATASETS
    root: Optional[str] = None           # data directory; unset: the default search path
    val_size: Optional[int] = _opt(None, ge=1)   # unset: the data set's default split
    augment: Optional[bool] = None       # unset: the data set's default (crop+flip on CIFAR)
    train_subset: int = _opt(0, ge=0)    # >0: train on the first N examples only
    split_seed: int = 0                  # seed of the train/validation split
    # Your own data (name = "npz" or "folder", docs/own_data.md); unset keys stay out of
    # config.toml. path: the .npz file or the image folder (relative to the current directory)
    path: Optional[str] = None
    layout: Optional[Literal["nhwc", "nchw"]] = None  # npz images; unset: from the shape
    resize: Optional[tuple[int, int]] = None  # folder: [H, W]; unset: one size required
    num_classes: Optional[int] = _opt(None, ge=2)  # unset: the largest label + 1
    mean: Optional[tuple[float, ...]] = None  # the model's normalisation (any data set);
    std: Optional[tuple[float, ...]] = None   # unset: the data set's (a file's: computed)


@dataclass(frozen=True)
class ModelConfig:
    # a key of adrnet.models.MODELS, or "package.module:factory" (docs/own_data.md)
    name: str = "smallcnn"
    latent: Optional[str] = None         # stage (a factory's model: submodule) whose output is z
    options: dict[str, Any] = _opt({})   # extra keyword arguments of the model builder


@dataclass(frozen=True)
class AttackConfig:
    threat: Literal["linf", "l2"] = "linf"
    eps: float = _opt(0.3, ge=0)
    steps: int = _opt(40, ge=1, le=MAX_ATTACK_STEPS)  # bound: adrnet.config_values
    step_size: float = _opt(0.01, gt=0)
    random_start: bool = True
    train_mode: bool = False             # attack in train mode (TF reference) instead of eval
    eps_warmup_epochs: float = _opt(0.0, ge=0)  # ε (and step size) ramp linearly, per step


@dataclass(frozen=True)
class ObjectiveConfig:
    name: str = "adr_pgd"                # pgd_at, trades, adr_pgd, adr_pgd_tf, adr_trades, mart, adr_mart
    weights: dict[str, float] = _opt({}) # overrides of the preset's term weights
    scale: float = _opt(0.99, gt=0, le=1)  # s of the pair weight 1 - 1/s
    concat: bool = False                 # one forward pass on [clean; adv] (mixes BN stats)
    # Stabilisers of ADR (docs/training.md, "ADR's stability"); off = the reference maths.
    latent_norm: Literal["none", "l2", "rms"] = "none"  # z seen by the compactness terms
    adr_warmup_epochs: float = _opt(0.0, ge=0)  # the five ADR weights ramp from 0, per step


@dataclass(frozen=True)
class AwpConfig:
    """Adversarial weight perturbation (Wu et al., NeurIPS 2020); see adrnet/train/awp.py."""
    gamma: float = _opt(5e-3, ge=0)      # perturbation size relative to each layer's weight norm
    warmup_epochs: int = _opt(0, ge=0)   # epochs trained without AWP before it starts


@dataclass(frozen=True)
class OptimConfig:
    name: Literal["sgd", "adam"] = "sgd"
    lr: float = _opt(0.01, gt=0, le=MAX_LR)  # bound (also of lr x lr_factors): config_values
    momentum: float = _opt(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = _opt(0.0, ge=0, le=MAX_LR)
    betas: tuple[float, float] = (0.9, 0.999)
    awp: Optional[AwpConfig] = None      # a table {gamma, warmup_epochs}; unset: no AWP


@dataclass(frozen=True)
class ScheduleConfig:
    name: Literal["piecewise", "cosine", "onecycle", "constant"] = "piecewise"
    milestones: tuple[float, ...] = ()   # piecewise: epochs where the factor changes
    lr_factors: tuple[float, ...] = ()   # piecewise: lr = base lr x factor from milestone i on
    warmup_epochs: float = _opt(0.0, ge=0)     # linear warm-up from 0 (piecewise, cosine)
    pct_start: float = _opt(0.3, gt=0, lt=1)   # onecycle: share of the run spent rising
    start_factor: float = _opt(0.04, gt=0, le=1)  # onecycle: lr starts at base x this
    min_factor: float = _opt(0.0, ge=0, le=1)  # cosine/onecycle: final lr = base x this


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = _opt(100, ge=1)
    batch_size: int = _opt(128, ge=1)
    seed: int = 0
    device: str = "auto"                 # auto (CUDA if present), cpu, cuda
    # fp64: the model and every tensor in float64, for gradient checks and for golden
    # values that hold on any CPU (fp32 kernels round differently on each machine).
    precision: Literal["fp32", "bf16", "fp16", "fp64"] = "fp32"
    channels_last: bool = False
    checkpoint_every: int = _opt(0, ge=0)  # steps between resumable checkpoints; 0: epoch ends
    log_every: int = _opt(50, ge=1)      # steps between step records in metrics.jsonl
    progress: bool = True                # tqdm progress bar
    num_threads: int = _opt(0, ge=0, le=MAX_THREADS)  # CPU threads; 0: torch's default


@dataclass(frozen=True)
class EvalConfig:
    # The radius that validation, `adrnet eval` and AutoAttack report; unset: attack.eps.
    # Setting attack.eps above it trains at a larger radius than the one reported (an eps
    # overshoot, which makes up for a weak training attack; docs/training.md).
    eps: Optional[float] = _opt(None, ge=0)
    val_every: int = _opt(1, ge=1)       # epochs between validations (the last always runs)
    val_size: int = _opt(1000, ge=0)     # validation examples used; 0: the whole split
    val_steps: int = _opt(20, ge=1, le=MAX_ATTACK_STEPS)  # PGD-k of validation
    val_step_size: Optional[float] = _opt(None, gt=0)  # unset: 2.5 x eps / val_steps
    batch_size: int = _opt(500, ge=1)
    test_steps: int = _opt(200, ge=1, le=MAX_ATTACK_STEPS)  # PGD-k of `adrnet eval` (paper: 200)
    test_step_size: Optional[float] = _opt(None, gt=0)  # unset: 2.5 x eps / test_steps
    test_restarts: int = _opt(1, ge=1)
    autoattack_n: int = _opt(1000, ge=0)  # first N test images for AutoAttack
    # `adrnet eval`'s attacks: fp32, or bf16 (a bf16 channels_last copy, every break
    # verified on the fp32 model; docs/evaluation.md)
    precision: Literal["fp32", "bf16"] = "fp32"


@dataclass(frozen=True)
class PluginsConfig:
    # The user's modules that register models, data sets, terms, objectives or attacks,
    # imported (adrnet.plugins) when this file is read, before its names are checked.
    modules: tuple[str, ...] = ()


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    plugins: PluginsConfig = field(default_factory=PluginsConfig)

    @property
    def eval_eps(self) -> float:
        """The radius validation and evaluation attack at: eval.eps, else attack.eps."""
        return self.attack.eps if self.eval.eps is None else self.eval.eps


SECTIONS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(Config)}


def config_from_dict(raw: dict) -> Config:
    """Build and validate a Config from nested plain data (missing keys: defaults)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a table of sections, got {type(raw).__name__}")
    check_nesting(raw)
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown config section [{unknown[0]}]; allowed sections: "
                          f"{', '.join(SECTIONS)}")
    sections = {}
    for name, cls in SECTIONS.items():
        section = raw.get(name, {})
        if not isinstance(section, dict):
            raise ConfigError(f"config key '{name}' must be a table [{name}], "
                              f"got {section!r}")
        sections[name] = cls(**coerce_section(name, cls, section))
        check_ranges(name, sections[name])
    cfg = Config(**sections)
    _check_consistency(cfg)
    return cfg


def config_to_dict(cfg: Config) -> dict:
    """Nested plain data (lists for tuples, unset options and an empty [plugins] left
    out), TOML-ready."""
    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if v is not None}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value
    raw = clean(dataclasses.asdict(cfg))
    if not raw["plugins"]["modules"]:
        del raw["plugins"]
    return raw


def load_config(path: str | os.PathLike | None, overrides=()) -> Config:
    """Read a TOML config (or start from the defaults when ``path`` is None) and
    apply overrides ``"section.key=value"`` (value in TOML syntax; bare words are strings).
    The file's own shape is checked first, so its mistakes are blamed on it and not
    on an override (``--no-progress`` adds one the user never typed). The modules the
    ``[plugins]`` section names are imported first (a checkpoint's record, read with
    :func:`config_from_dict`, never imports anything)."""
    raw = _with_overrides(_read_toml(Path(path)) if path is not None else {}, overrides)
    modules = raw.get("plugins", {}).get("modules", ()) if isinstance(raw.get("plugins"), dict) else ()
    if modules:
        from adrnet.plugins import import_plugins
        import_plugins(modules if isinstance(modules, (list, tuple)) else [modules])
    model = raw.get("model")
    if isinstance(model, dict) and isinstance(model.get("name"), str) and ":" in model["name"]:
        from adrnet.plugins import import_model_module
        import_model_module(model["name"])  # a file (or option) the user chose names it
    return config_from_dict(raw)


def apply_overrides(cfg: Config, overrides) -> Config:
    """``cfg`` with ``"section.key=value"`` overrides applied (validated again)."""
    return config_from_dict(_with_overrides(config_to_dict(cfg), overrides))


def save_config(cfg: Config, path: str | os.PathLike, header: str = "") -> None:
    """Write ``cfg`` as TOML atomically (temporary file, fsync, rename), after the
    comment lines ``header`` (a run's config.toml says who wrote it)."""
    from adrnet.atomic import write_bytes_atomic
    write_bytes_atomic(Path(path), (header + tomli_w.dumps(config_to_dict(cfg))).encode())


def config_diff(old: Config, new: Config) -> list[str]:
    """Dotted keys whose values differ between two configs."""
    flat_old, flat_new = _flatten(config_to_dict(old)), _flatten(config_to_dict(new))
    return sorted(k for k in flat_old.keys() | flat_new.keys()
                  if flat_old.get(k) != flat_new.get(k))


def _flatten(raw: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in raw.items():
        if isinstance(value, dict) and key not in ("options", "weights"):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _read_toml(path: Path) -> dict:
    """The tables of config file ``path``: refused when missing, a directory, not TOML,
    empty (it would silently run every default: 100 epochs of PGD-40 on MNIST) or
    shaped other than as [section] tables."""
    if path.is_dir():
        raise ConfigError(f"config path {path} is a directory; give a .toml file in it "
                          f"(e.g. a preset from configs/ or a run's config.toml)")
    try:  # a regular file of at most 1 MiB only (a FIFO, /dev/zero: refused, not read)
        raw = tomllib.loads(read_config_file(path))
    except FileNotFoundError:
        hint = sorted(p.name for p in Path("configs").glob("*.toml"))[:40]
        raise ConfigError(f"config file {path} not found" +
                          (f"; presets in configs/: {', '.join(hint)}" if hint else "")) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"config file {path} nests lists or tables too deeply to be read "
                          "(a config value needs 4 levels at most)") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    if not raw:
        raise ConfigError(f"config file {path} is empty; it would run every default (100 "
                          "epochs of PGD-40 ADR on MNIST): start from a preset in configs/")
    for name, section in raw.items():
        if name in SECTIONS and not isinstance(section, dict):
            raise ConfigError(f"config file {path}: '{name}' must be a [{name}] table, "
                              f"got {section!r}")
    return raw


def _with_overrides(raw: dict, overrides) -> dict:
    """``raw`` (changed in place) with each ``"section.key=value"`` override set."""
    for text in overrides:
        keys, value = parse_override(text)
        table = raw
        for key in keys[:-1]:
            table = table.setdefault(key, {})
            if not isinstance(table, dict):
                raise ConfigError(f"override {text!r}: '{key}' is not a table")
        table[keys[-1]] = value
    return raw


def _check_consistency(cfg: Config) -> None:
    """Checks that involve several keys or the registries of other packages."""
    _check_optimisation(cfg)
    if cfg.train.device not in DEVICES:
        raise ConfigError(f"config key 'train.device' must be one of {', '.join(DEVICES)} "
                          f"(got {cfg.train.device!r}); under torchrun each process takes "
                          "cuda:LOCAL_RANK")
    _check_registry("data.name", cfg.data.name, "adrnet.data", "DATASETS")
    _check_data(cfg)
    if ":" in cfg.model.name:  # "package.module:factory": its form only; nothing is imported
        from adrnet.plugins import split_import_path
        split_import_path(cfg.model.name)
    else:
        _check_registry("model.name", cfg.model.name, "adrnet.models", "MODELS")
    _check_registry("objective.name", cfg.objective.name, "adrnet.objectives", "OBJECTIVES")
    _check_weights(cfg.objective.weights)
    _check_objective_trains(cfg)
    _check_radius(cfg)
    _check_bounds(cfg)  # seeds, lr x factors, attack step budgets, model size



def _check_bounds(cfg: Config) -> None:
    """The bounds (adrnet.config_values) that involve several keys (the single-key ones are
    field limits above): seeds, lr x lr_factors, the attacks' step budget and the model's
    size (adrnet.models.size). Run on every config read, a checkpoint's record included."""
    check_seed("config key 'train.seed'", cfg.train.seed, TORCH_SEED_RANGE, "torch.manual_seed")
    toy = _registry("adrnet.data.toy", "TOY_GENERATORS") or ()
    if cfg.data.name in toy:  # generated by numpy's default_rng, which takes seeds >= 0
        check_seed(f"config key 'data.split_seed' (data set {cfg.data.name!r}, generated by "
                   "numpy)", cfg.data.split_seed, (0, TORCH_SEED_RANGE[1]), "numpy's default_rng")
    else:
        check_seed("config key 'data.split_seed'", cfg.data.split_seed, TORCH_SEED_RANGE,
                   "torch.Generator.manual_seed")
    sched = cfg.schedule
    for index, factor in enumerate(sched.lr_factors):
        if cfg.optim.lr * factor > MAX_LR:
            raise ConfigError(f"config key 'schedule.lr_factors[{index}]' = {factor:g} makes the "
                              f"learning rate optim.lr x factor = {cfg.optim.lr * factor:g}, above "
                              f"{MAX_LR:g} (no run learns at such a rate; float32 overflows)")
    eps = cfg.attack.eps
    reported = eps if cfg.eval.eps is None else cfg.eval.eps
    check_step_budget("config key 'attack.step_size'", cfg.attack.steps, cfg.attack.step_size,
                      eps, "raise attack.step_size or attack.steps")
    for kind in ("val", "test"):
        size = getattr(cfg.eval, f"{kind}_step_size")
        if size is not None:
            check_step_budget(f"config key 'eval.{kind}_step_size'", getattr(cfg.eval, f"{kind}_steps"),
                              size, reported, f"leave it unset for 2.5 x eps / eval.{kind}_steps")
    fits = _registry("adrnet.models.size", "check_model_fits")
    if fits is not None:
        fits(cfg)


def _check_objective_trains(cfg: Config) -> None:
    """Refuse an objective whose weights leave no term to train on (its loss would be the
    constant 0), or, with an ADR warm-up, no term while the five ADR weights start at 0."""
    objectives, terms = _registry("adrnet.objectives", "OBJECTIVES"), _registry("adrnet.objectives", "TERMS")
    if objectives is None or terms is None:
        return
    section = cfg.objective
    weights = {**objectives[section.name][0], **section.weights}
    if not any(weight > 0 for weight in weights.values()):
        raise ConfigError(f"objective '{section.name}' with these weights has no term of weight "
                          f"> 0, so there is nothing to train: give one of "
                          f"{', '.join(sorted(weights))} a positive objective.weights value")
    base = sorted(name for name, weight in weights.items() if weight > 0 and not terms[name].adr)
    if section.adr_warmup_epochs > 0 and not base:
        raise ConfigError("config key 'objective.adr_warmup_epochs' ramps the ADR weights from 0, "
                          f"but objective '{section.name}' has no other term of weight > 0, so "
                          "the first steps would train on nothing: give a base term (ce_adv, "
                          "ce_clean, trades_kl...) a positive weight or set adr_warmup_epochs = 0")


def _check_radius(cfg: Config) -> None:
    """attack.eps and eval.eps within the bound of the threat model (adrnet.attacks.threats),
    for the inputs of the data set (√(2^32) for L2 while the data registry is unavailable)."""
    make_threat, datasets = _registry("adrnet.attacks", "make_threat"), _registry("adrnet.data", "DATASETS")
    if make_threat is None:
        return
    # a data set read from a file (data.path) is described when the run starts, not here:
    # its radius is checked then, against its own inputs
    from_file = bool(datasets) and datasets.metadata(cfg.data.name).get("from_file")
    dim = datasets[cfg.data.name].input_values if datasets and not from_file else None
    for key, eps in (("attack.eps", cfg.attack.eps), ("eval.eps", cfg.eval.eps)):
        try:
            if eps is not None:
                make_threat(cfg.attack.threat, eps, dim)
        except ConfigError as exc:
            raise ConfigError(f"config key '{key}': {exc}") from None


def _check_data(cfg: Config) -> None:
    """The [data] keys that fit data.name's kind (adrnet.data.kinds)."""
    kinds = _registry("adrnet.data.kinds", "check_data_keys")
    if kinds is not None:
        kinds(cfg.data)


def _check_optimisation(cfg: Config) -> None:
    """The lr schedule and the optimiser settings that one key's limits cannot express."""
    sched = cfg.schedule
    if len(sched.milestones) != len(sched.lr_factors):
        raise ConfigError("config keys 'schedule.milestones' and 'schedule.lr_factors' "
                          f"must have the same length (got {len(sched.milestones)} and "
                          f"{len(sched.lr_factors)}): one lr factor per milestone")
    if list(sched.milestones) != sorted(set(sched.milestones)):
        raise ConfigError("config key 'schedule.milestones' must be strictly increasing, "
                          f"got {list(sched.milestones)}")
    if any(factor < 0 for factor in sched.lr_factors):
        raise ConfigError("config key 'schedule.lr_factors' must hold factors >= 0 (a negative "
                          f"learning rate would ascend the loss), got {list(sched.lr_factors)}")
    if not all(0 <= beta < 1 for beta in cfg.optim.betas):
        raise ConfigError("config key 'optim.betas' must be two numbers in [0, 1) (Adam's "
                          f"moment decay rates), got {list(cfg.optim.betas)}")


def _registry(module: str, name: str):
    """A registry of another package, or None while that package is not importable."""
    try:
        return getattr(__import__(module, fromlist=[name]), name)
    except (ImportError, AttributeError):
        return None


def _check_registry(key: str, value: str, module: str, name: str) -> None:
    registry = _registry(module, name)
    if registry is not None and value not in registry:
        raise ConfigError(f"config key '{key}' must be one of {', '.join(sorted(registry))} "
                          f"(got {value!r})")


def _check_weights(weights: dict[str, float]) -> None:
    """Term names from the objectives' registry of terms (one place for them), and weights >= 0."""
    names = _registry("adrnet.objectives", "TERMS")
    for term, weight in weights.items():
        if names is not None and term not in names:
            raise ConfigError(f"unknown config key 'objective.weights.{term}'; allowed "
                              f"terms: {', '.join(names)}")
        if weight < 0:
            raise ConfigError(f"config key 'objective.weights.{term}' must be >= 0 "
                              f"(got {weight})")
