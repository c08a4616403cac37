"""``load_model``: a trained classifier and its config from a run directory or checkpoint.

Why: evaluation and user code need the model exactly as trained, without trusting the
files: the weights are safetensors (no code), verified against the SHA-256 in the
checkpoint's JSON record (read with it, so a run may be evaluated while it trains and
saves), refused when they hold NaN or inf, and the architecture is rebuilt from the config
stored in that record and compared tensor by tensor before anything is loaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from adrnet.config import Config, config_from_dict
from adrnet.errors import CheckpointError, ConfigError
from adrnet.models import info_from_spec, model_from_config
from adrnet.runs.checkpoint import (
    CHECKPOINT_DIR, CheckpointFiles, _SUFFIXES, check_finite, checkpoint_files, read_checkpoint,
)
from adrnet.runs.zoo import is_zoo, read_zoo

WHICH = ("best", "last")


def resolve_checkpoint(path: str | os.PathLike, which: str = "best") -> CheckpointFiles:
    """The checkpoint a user means by ``path``: a run directory (its ``which``
    checkpoint), its checkpoints/ folder, or any of a checkpoint's three files."""
    if which not in WHICH:
        raise CheckpointError(f"which must be 'best' or 'last', got {which!r}")
    path = Path(path)
    if path.is_dir():
        folder = path if path.name == CHECKPOINT_DIR else path / CHECKPOINT_DIR
        if not folder.is_dir():
            raise CheckpointError(f"{path} is not an adrnet run directory (no {CHECKPOINT_DIR}/ "
                                  "inside); give a run directory or a checkpoint file")
        return CheckpointFiles(folder / which)
    for suffix in _SUFFIXES.values():
        if path.name.endswith(suffix):
            return CheckpointFiles(path.with_name(path.name[: -len(suffix)]))
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; give a run directory or a checkpoint file")
    raise CheckpointError(f"{path} is not an adrnet checkpoint (expected a run directory or "
                          f"a file ending in {', '.join(_SUFFIXES.values())})")


def has_checkpoint(run_dir: str | os.PathLike) -> bool:
    """True when ``run_dir`` holds a ``last`` checkpoint to resume from."""
    return checkpoint_files(run_dir, "last").exists()


def model_identity(model: torch.nn.Module, cfg: Config) -> dict:
    """What a checkpoint records to recognise its architecture."""
    spec = getattr(model, "spec", None) or {"name": cfg.model.name}
    return {**spec, "parameters": {k: list(v.shape) for k, v in model.state_dict().items()}}


def check_architecture(model: torch.nn.Module, weights: dict, source) -> None:
    """Refuse weights whose tensor names or shapes differ from ``model``'s (freshly
    built), or that hold NaN or inf where the model's own tensors are finite
    (:func:`~adrnet.runs.checkpoint.check_finite`)."""
    own = model.state_dict()
    expected = {k: tuple(v.shape) for k, v in own.items()}
    found = {k: tuple(v.shape) for k, v in weights.items()}
    missing, unexpected = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
    wrong = sorted(k for k in expected.keys() & found.keys() if expected[k] != found[k])
    if not (missing or unexpected or wrong):
        check_finite(weights, source, own)
        return
    details = []
    if wrong:
        details.append(f"shape of {wrong[0]} is {list(found[wrong[0]])}, the model needs "
                       f"{list(expected[wrong[0]])}" + (f" (+{len(wrong) - 1} more)" if len(wrong) > 1 else ""))
    if missing:
        details.append(f"missing {_first_three(missing)}")
    if unexpected:
        details.append(f"unexpected {_first_three(unexpected)}")
    raise CheckpointError(f"{source} holds weights of a different architecture than its "
                          f"config describes: {'; '.join(details)}")


def _first_three(names: list[str]) -> str:
    return f"{names[:3]}" + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")


def config_of(meta: dict, source) -> Config:
    try:
        return config_from_dict(meta["config"])
    except KeyError:
        raise CheckpointError(f"{source} records no config") from None
    except ConfigError as exc:
        plugins = (meta["config"].get("plugins") or {}).get("modules") \
            if isinstance(meta["config"], dict) and isinstance(meta["config"].get("plugins"), dict) else None
        hint = (f" (it was trained with plugin module(s) {', '.join(map(str, plugins))}: import "
                "them first, e.g. --import MODULE)") if plugins else ""
        raise CheckpointError(f"{source} records a config this adrnet cannot use: {exc}{hint}") from None


def recorded_data(cfg: Config, meta: dict):
    """For a run on a data file (its record has "data", the file's SHA-256): the data set's
    facts its model was built for, as the checkpoint records them (so loading the model
    needs no data file); else None (the data set's own)."""
    if not isinstance(meta.get("data"), dict):
        return None
    return info_from_spec(cfg.data.name, meta.get("model"))


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A checkpoint's model (eval mode), config, files and the SHA-256 of its weights
    file (checked against the bytes loaded): results stored by evaluation are keyed
    by it, so a number computed on other weights is never reported as current."""

    model: torch.nn.Module
    cfg: Config
    files: CheckpointFiles
    weights_sha256: str
    objects: dict  # what training received as objects (empty for a run built from its config)


def load_checkpoint(run_dir_or_checkpoint: str | os.PathLike, map_location="cpu",
                    which: str = "best", model: torch.nn.Module | None = None) -> LoadedCheckpoint:
    """The checkpoint of a run directory (its ``which``: "best", the highest
    validation robust accuracy, or "last") or of a checkpoint file.

    The model is rebuilt from the recorded config, or, for a run trained on a model passed
    as an object, loaded into ``model`` (a module of the same architecture: only weights
    are read, no code). ``"zoo:NAME"`` is a model shipped with adrnet (:mod:`adrnet.runs.zoo`)."""
    if is_zoo(run_dir_or_checkpoint):
        if which != "best":
            raise CheckpointError(f"{run_dir_or_checkpoint} is one checkpoint, its run's best: "
                                  f"which={which!r} does not apply")
        files, meta, weights = read_zoo(run_dir_or_checkpoint)  # verified against its SHA-256
    else:
        files = resolve_checkpoint(run_dir_or_checkpoint, which)
        last = files.sibling("last")
        if files.stem.name == "best" and not files.path("meta").exists() and last.path("meta").exists():
            raise CheckpointError(f"{files.stem.parent} has no best checkpoint yet (no validation "
                                  "has finished); use the last one (which='last', adrnet eval "
                                  "--which last)")
        files, meta, weights = read_checkpoint(files)  # verified against meta's SHA-256
    cfg = config_of(meta, files.path("meta"))
    objects = meta.get("objects") or {}
    if model is None and "model" in objects:
        raise CheckpointError(f"{files.path('meta')} was trained on a model passed to train() "
                              f"as an object ({objects['model']}); load it into a module of "
                              "that architecture: adrnet.load_model(RUN, model=module)")
    if model is None:
        with torch.random.fork_rng(devices=[]):
            model = model_from_config(cfg, recorded_data(cfg, meta))
    check_architecture(model, weights, files.path("weights"))
    model.load_state_dict(weights)
    return LoadedCheckpoint(model.to(map_location).eval(), cfg, files,
                            meta["files"]["weights"]["sha256"], objects)


def load_model(run_dir_or_checkpoint: str | os.PathLike, map_location="cpu",
               which: str = "best", model: torch.nn.Module | None = None):
    """(model in eval mode on ``map_location``, Config) of a run, a checkpoint or a
    shipped model (``"zoo:NAME"``).

    ``which`` picks the run's "best" (highest validation robust accuracy) or
    "last" checkpoint when a run directory is given; ``model`` receives the weights of a
    run trained on a model passed as an object.
    """
    loaded = load_checkpoint(run_dir_or_checkpoint, map_location, which, model)
    return loaded.model, loaded.cfg
