"""Shipped models: ``zoo:NAME`` names trained weights that come with adrnet.

    model, cfg = adrnet.load_model("zoo:mnist_adr_pgd")
    adrnet eval zoo:mnist_adr_pgd --attacks pgd --n 1000

Why: the figures in docs/results.md could not be checked by anyone without retraining
while no weights were kept. A zoo entry is two files in ``adrnet/zoo/``: ``NAME.safetensors``
(the weights of a headline run, tensors only: loading runs no code) and ``NAME.json``, its
record: the run's complete config (the architecture is rebuilt from it and compared tensor
by tensor, as a checkpoint's is), the weights' size and SHA-256 (checked before they are
used), how the run was trained, and the figures ``benchmarks/zoo.py`` measured on these very
weights (the suite checks them again: tests/test_zoo.py). The entries are the runs' *best*
checkpoints, the ones their recorded evaluations used (``adrnet eval`` picks ``best``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from adrnet.atomic import write_bytes_atomic, write_json_atomic
from adrnet.errors import CheckpointError
from adrnet.runs.checkpoint import CheckpointFiles, _read_file, _sha256, encode_weights, read_weights

ZOO_PREFIX = "zoo:"
ZOO_FORMAT, ZOO_VERSION = "adrnet-zoo", 1
#: The shipped files: package data of adrnet (pyproject.toml's package-data).
ZOO_DIR = Path(__file__).resolve().parent.parent / "zoo"
#: Where ``adrnet eval zoo:NAME`` writes NAME/eval.json by default (below the working directory).
ZOO_EVAL_DIR = Path("runs") / "zoo"
_NAME = re.compile(r"[a-z0-9][a-z0-9_]*")
#: What a checkpoint's record says of its training that a zoo record keeps (the metrics
#: history, the optimiser's files and the running state stay with the run).
_TRAINED_KEYS = ("which", "epoch", "global_step", "best", "device", "world_size", "adrnet_version",
                 "torch_version", "python_version")


def is_zoo(target) -> bool:
    """True for a ``zoo:NAME`` target given as a string (a file of that name is reached as
    ``./zoo:NAME`` or as a ``Path``)."""
    return isinstance(target, str) and target.startswith(ZOO_PREFIX)


def zoo_names(folder: Path | None = None) -> list[str]:
    """The names of the shipped models, sorted."""
    return sorted(path.stem for path in (folder or ZOO_DIR).glob("*.json") if _NAME.fullmatch(path.stem))


def zoo_files(target: str, folder: Path | None = None) -> CheckpointFiles:
    """The files of ``zoo:NAME`` (or of ``NAME``), refusing a name the zoo does not hold."""
    name = target[len(ZOO_PREFIX):] if is_zoo(target) else target
    shipped = zoo_names(folder)
    if not _NAME.fullmatch(name) or name not in shipped:
        raise CheckpointError(f"no shipped model {ZOO_PREFIX}{name}; the zoo holds: "
                              f"{', '.join(ZOO_PREFIX + known for known in shipped) or 'nothing'}")
    return CheckpointFiles((folder or ZOO_DIR) / name)


def zoo_record(target: str, folder: Path | None = None) -> dict:
    """The record (``NAME.json``) of a shipped model."""
    return _read_record(zoo_files(target, folder).path("meta"))


def _read_record(path: Path) -> dict:
    try:
        record = json.loads(_read_file(path, "record", None).decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is corrupt ({exc}); reinstall adrnet") from None
    if not isinstance(record, dict) or record.get("format") != ZOO_FORMAT:
        raise CheckpointError(f"{path} is not an adrnet zoo record; reinstall adrnet")
    version = record.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{path} records zoo format version {version!r}: the record is "
                              "corrupt; reinstall adrnet")
    if version > ZOO_VERSION:
        raise CheckpointError(f"{path} has zoo format version {version}; this adrnet reads "
                              f"version {ZOO_VERSION}: upgrade adrnet")
    return record


def read_zoo(target: str, folder: Path | None = None) -> tuple[CheckpointFiles, dict, dict[str, torch.Tensor]]:
    """(files, record, weights) of a shipped model, the weights checked against the
    record's size and SHA-256 (what :func:`~adrnet.runs.checkpoint.read_checkpoint` gives
    for a checkpoint; :func:`adrnet.runs.load.load_checkpoint` builds the model of either)."""
    files = zoo_files(target, folder)
    record = _read_record(files.path("meta"))
    try:
        return files, record, read_weights(files, record)
    except CheckpointError as exc:  # its advice (the other checkpoint, retrain) is for a run's
        message = str(exc).split("; use the other checkpoint")[0]
        raise CheckpointError(f"{message}; the shipped file is damaged: reinstall adrnet") from None


def write_zoo_entry(checkpoint: tuple[CheckpointFiles, dict, dict], name: str, figures: dict,
                    description: str, folder: Path | None = None) -> Path:
    """Ship ``checkpoint`` ((files, record, weights) as
    :func:`~adrnet.runs.checkpoint.read_checkpoint` gives them) as ``zoo:name`` with
    ``figures`` (what benchmarks/zoo.py measured on it) and a one-line ``description``;
    returns the record's path."""
    if not _NAME.fullmatch(name):
        raise CheckpointError(f"a zoo name is lower-case letters, digits and _, got {name!r}")
    files, meta, weights = checkpoint
    if meta.get("objects"):
        raise CheckpointError(f"{files.stem} was trained on objects passed to train(); its config "
                              "cannot rebuild it, so it cannot be shipped")
    data = encode_weights(weights)
    record = {"format": ZOO_FORMAT, "version": ZOO_VERSION, "name": name, "description": description,
              "config": meta["config"], "model": meta.get("model"),
              "splits_sha256": meta.get("splits_sha256"),
              "files": {"weights": {"sha256": _sha256(data), "bytes": len(data)}},
              "trained": {key: meta[key] for key in _TRAINED_KEYS if key in meta},
              "figures": figures}
    if isinstance(meta.get("data"), dict):
        record["data"] = meta["data"]
    stem = CheckpointFiles((folder or ZOO_DIR) / name)
    stem.stem.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(stem.path("weights"), data)
    write_json_atomic(stem.path("meta"), record, indent=1)
    return stem.path("meta")
