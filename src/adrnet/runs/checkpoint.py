"""Checkpoints that lose nothing and execute nothing.

Why: a training run lasts hours to days; a crash must cost at most a few steps, and
loading a checkpoint found on the internet must never run code. A checkpoint ``NAME``
(``last`` or ``best``) in ``RUN/checkpoints/`` is three files:

- ``NAME.safetensors``: model weights and buffers (safetensors: tensors only);
- ``NAME.state.pt``: optimiser, grad scaler and RNG states, read back with
  ``torch.load(weights_only=True)``, which refuses any pickle that would build
  arbitrary objects;
- ``NAME.json``: epoch, step, metrics, the full config, the model's identity and
  the SHA-256 of the two other files. It is written last: it commits the checkpoint.

Every file is written atomically (temporary file, fsync, rename). So that a kill
between the three renames cannot leave a mixed checkpoint, the previous
generation is hard-linked as ``NAME.prev.*`` first and removed once the new one
is complete; a reader that finds ``NAME`` inconsistent falls back to ``prev``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from adrnet.atomic import fsync_dir, output_errors, write_temporary
from adrnet.errors import CheckpointError

FORMAT = "adrnet-checkpoint"
VERSION = 1
CHECKPOINT_DIR = "checkpoints"
#: In a run directory: what training received as objects rather than from its config
#: (``train(cfg, out, model=...)``), which the config alone cannot rebuild.
OBJECTS_FILE = "objects.json"
_SUFFIXES = {"weights": ".safetensors", "state": ".state.pt", "meta": ".json"}


@dataclass(frozen=True)
class CheckpointFiles:
    """The three files of checkpoint ``stem`` (e.g. ``RUN/checkpoints/last``)."""

    stem: Path

    def path(self, role: str) -> Path:
        return self.stem.with_name(self.stem.name + _SUFFIXES[role])

    def sibling(self, name: str) -> "CheckpointFiles":
        return CheckpointFiles(self.stem.with_name(name))

    @property
    def prev(self) -> "CheckpointFiles":
        """The previous generation, kept while a save renames its files."""
        return self.sibling(self.stem.name + ".prev")

    def exists(self) -> bool:
        """True when this checkpoint or its previous generation has a JSON record."""
        return self.path("meta").exists() or self.prev.path("meta").exists()


def checkpoint_files(run_dir: str | os.PathLike, which: str) -> CheckpointFiles:
    """Where checkpoint ``which`` ("last" or "best") of run ``run_dir`` lives."""
    return CheckpointFiles(Path(run_dir) / CHECKPOINT_DIR / which)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def encode_weights(state_dict: dict) -> bytes:
    """safetensors bytes of a model's state dict (contiguous CPU copies)."""
    return safetensors_save({k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()})


def encode_state(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def save_checkpoint(files: CheckpointFiles, weights: bytes, state: bytes, meta: dict) -> None:
    """Commit a checkpoint: temporaries first, then the previous generation is kept
    as ``prev`` while the three renames happen, with the JSON renamed last. When a
    write fails (a full disk), every temporary written so far is removed, the
    previous checkpoint stays as it was, and :class:`OutputError` is raised."""
    meta = {**meta, "format": FORMAT, "version": VERSION,
            "files": {"weights": {"sha256": _sha256(weights), "bytes": len(weights)},
                      "state": {"sha256": _sha256(state), "bytes": len(state)}}}
    payload = {"weights": weights, "state": state,
               "meta": json.dumps(meta, indent=1, allow_nan=False).encode()}
    folder = files.stem.parent
    new_folder = not folder.exists()
    temporaries = {}  # filled one by one: a failed write still finds the earlier ones
    try:
        for role, data in payload.items():
            temporaries[role] = write_temporary(files.path(role), data)
        with output_errors(folder):
            _keep_previous(files)
            for role in ("weights", "state", "meta"):
                os.replace(temporaries.pop(role), files.path(role))
        fsync_dir(folder)
    finally:
        for tmp in temporaries.values():
            tmp.unlink(missing_ok=True)
        if new_folder and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()  # a first save that failed leaves no empty checkpoints/
    remove_checkpoint(files.prev)


def remove_checkpoint(files: CheckpointFiles) -> None:
    """Delete the three files of ``files`` (those that exist)."""
    for role in ("meta", "weights", "state"):  # meta first: it is what marks a set complete
        files.path(role).unlink(missing_ok=True)


def _keep_previous(files: CheckpointFiles) -> None:
    """Hard-link the current generation as ``prev`` (unless ``prev`` is the only
    good copy left by an interrupted save, in which case it stays as it is)."""
    prev = files.prev
    if prev.path("meta").exists():
        if not _is_complete(files):
            return
        remove_checkpoint(prev)
    for role in ("weights", "state", "meta"):
        prev.path(role).unlink(missing_ok=True)
        if files.path(role).exists():
            os.link(files.path(role), prev.path(role))


def _is_complete(files: CheckpointFiles) -> bool:
    try:
        _verified_meta(files)
        return True
    except CheckpointError:
        return False


def _verified_meta(files: CheckpointFiles) -> dict:
    """The JSON record of ``files``, once both other files match its SHA-256."""
    meta = read_meta(files)
    for role in ("weights", "state"):
        _verified_bytes(files, meta, role)
    return meta


def read_meta(files: CheckpointFiles) -> dict:
    """The JSON record of a checkpoint, checked to be an adrnet checkpoint."""
    path = files.path("meta")
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: the file does not exist")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint record {path} is truncated or corrupt ({exc}); "
                              "use the other checkpoint (best/last) or retrain") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an adrnet checkpoint record")
    version = meta.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{path} records format version {version!r}, not an integer: "
                              "the record is corrupt; use the other checkpoint or retrain")
    if version > VERSION:
        raise CheckpointError(f"{path} was written by a newer adrnet (format version "
                              f"{meta['version']}); upgrade adrnet to read it")
    return meta


def _verified_bytes(files: CheckpointFiles, meta: dict, role: str) -> bytes:
    path = files.path(role)
    try:
        data = path.read_bytes()
        expected = meta["files"][role]
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file {path} is missing") from None
    except (KeyError, TypeError):
        raise CheckpointError(f"{files.path('meta')} lists no {role} file") from None
    if not isinstance(expected, dict):
        raise CheckpointError(f"{files.path('meta')} lists no {role} file")
    if len(data) != expected.get("bytes") or _sha256(data) != expected.get("sha256"):
        raise CheckpointError(
            f"checkpoint file {path} is truncated or corrupt ({len(data)} bytes, expected "
            f"{expected.get('bytes')}; SHA-256 differs from {files.path('meta').name}); "
            "use the other checkpoint (best/last) or retrain")
    return data


def read_weights(files: CheckpointFiles, meta: dict) -> dict[str, torch.Tensor]:
    """The verified state dict (CPU tensors) of a checkpoint."""
    data = _verified_bytes(files, meta, "weights")
    try:
        return safetensors_load(data)
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{files.path('weights')} is not a valid safetensors file "
                              f"({exc})") from None


def read_state(files: CheckpointFiles, meta: dict) -> dict:
    """Optimiser/scaler/RNG states, loaded with ``weights_only=True`` (no code runs)."""
    data = _verified_bytes(files, meta, "state")
    return load_state_bytes(data, files.path("state"))


def load_state_bytes(data: bytes, path: Path) -> dict:
    """Unpickle with torch's restricted loader: tensors and plain data only."""
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(
            f"refused to load {path}: it holds objects other than tensors and plain data "
            f"(a pickle that could execute code); nothing was run. ({first})") from None
    except Exception as exc:
        raise CheckpointError(f"{path} is truncated or not a torch state file ({exc})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a training state dict")
    return state


def open_checkpoint(files: CheckpointFiles) -> tuple[CheckpointFiles, dict]:
    """(files, meta) of a complete checkpoint: ``files`` itself, or its ``prev``
    generation when a save was interrupted between its renames."""
    try:
        return files, _verified_meta(files)
    except CheckpointError as first_error:
        prev = files.prev
        if not prev.path("meta").exists() or not _is_complete(prev):
            raise first_error
        warnings.warn(f"{files.stem} was left incomplete by an interrupted save; "
                      f"using the previous generation {prev.stem}", stacklevel=2)
        return prev, read_meta(prev)
