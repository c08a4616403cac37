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

Reading is as careful as writing. A file is read only when it is a regular file
(a pipe would hang the reader, /dev/zero fill its memory) of the size its record
states, checked before a byte is read. A reader may meet a save of the training
that is still running (``adrnet eval`` on a run while it trains): then the record
it read and the weights it reads next may belong to two generations. Each file is
checked against the SHA-256 in the record read with it, so nothing mixed is ever
loaded; and a failed check is blamed on the files only when no save replaced any
of them meanwhile, else the reader reads again, so a sound checkpoint is never
called corrupt. Weights holding NaN or inf are refused: a model of them still
predicts (the argmax of NaN is class 0) and would be scored.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from adrnet.atomic import NotRegularFile, fsync_dir, open_regular_file, output_errors, write_temporary
from adrnet.errors import CheckpointError

FORMAT = "adrnet-checkpoint"
VERSION = 1
CHECKPOINT_DIR = "checkpoints"
#: In a run directory: what training received as objects rather than from its config
#: (``train(cfg, out, model=...)``), which the config alone cannot rebuild.
OBJECTS_FILE = "objects.json"
_SUFFIXES = {"weights": ".safetensors", "state": ".state.pt", "meta": ".json"}
#: No checkpoint record (config, metrics, the model's identity) comes near this size.
RECORD_LIMIT = 64 * 2**20
#: How long a reader keeps reading again while saves keep replacing the files it reads
#: (a training checkpointing every step), before it reports what it found.
SAVE_WAIT_S = 30.0
#: How long a reader that found a checkpoint inconsistent waits for a save that may be
#: between its renames (microseconds apart) before it concludes the save was interrupted.
SETTLE_S = 0.05


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
        _read_generation(files, keep=())
        return True
    except CheckpointError:
        return False


def read_meta(files: CheckpointFiles) -> dict:
    """The JSON record of a checkpoint, checked to be an adrnet checkpoint."""
    path = files.path("meta")
    data = _read_file(path, "record", None)
    try:
        meta = json.loads(data.decode("utf-8"))
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


def _read_file(path: Path, role: str, size: int | None) -> bytes:
    """The bytes of checkpoint file ``path``, read only when it is a regular file of
    exactly ``size`` bytes (the size its record states), or for the record itself
    (``size`` None) of at most :data:`RECORD_LIMIT`; the size is checked on the open
    file before anything is read, so a huge or sparse file is never read whole."""
    try:
        handle = open_regular_file(path)
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}: the file does not exist" if role == "record"
                              else f"checkpoint file {path} is missing") from None
    except NotRegularFile as exc:
        raise CheckpointError(f"checkpoint {role} file {path} is {exc.kind}, not a regular file; "
                              "nothing was read from it: restore the file, or use the other "
                              "checkpoint (best/last)") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint file {path}: {exc.strerror or exc}") from None
    bound = RECORD_LIMIT if size is None else size
    with handle:
        found = os.fstat(handle.fileno()).st_size
        data = handle.read(bound + 1) if found <= bound else b""
    if size is None and (found > bound or len(data) > bound):
        raise CheckpointError(f"checkpoint record {path} is larger than any checkpoint record "
                              f"({bound} bytes at most), so it is not one; nothing was read from "
                              "it: use the other checkpoint (best/last) or retrain")
    if size is not None and (found != size or len(data) != size):
        got = found if found != size else len(data)
        raise CheckpointError(f"checkpoint file {path} is truncated or corrupt ({got} bytes, its "
                              f"record says {size}); use the other checkpoint (best/last) or retrain")
    return data


def _verified_bytes(files: CheckpointFiles, meta: dict, role: str) -> bytes:
    """The bytes of file ``role`` of ``files``, read bounded by the size ``meta`` states
    and checked against its SHA-256."""
    path, record = files.path(role), files.path("meta")
    expected = meta.get("files")
    expected = expected.get(role) if isinstance(expected, dict) else None
    size = expected.get("bytes") if isinstance(expected, dict) else None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise CheckpointError(f"{record} lists no {role} file with its size; the record is "
                              "corrupt: use the other checkpoint (best/last) or retrain")
    data = _read_file(path, role, size)
    if _sha256(data) != expected.get("sha256"):
        raise CheckpointError(
            f"checkpoint file {path} is truncated or corrupt ({len(data)} bytes as "
            f"expected, but its SHA-256 differs from {record.name}'s); use the other "
            "checkpoint (best/last) or retrain")
    return data


def read_weights(files: CheckpointFiles, meta: dict) -> dict[str, torch.Tensor]:
    """The verified state dict (CPU tensors) of a checkpoint."""
    return decode_weights(_verified_bytes(files, meta, "weights"), files.path("weights"))


def decode_weights(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of safetensors bytes ``data`` (of file ``path``)."""
    try:
        return safetensors_load(data)
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{path} is not a valid safetensors file ({exc})") from None


def check_finite(weights: dict[str, torch.Tensor], source, reference: dict[str, torch.Tensor]) -> None:
    """Refuse weights holding NaN or inf where ``reference`` (the state dict of the freshly
    built model they are for) holds a finite value, naming the first such tensor: training
    stops before such a step is taken, so these weights were damaged or made elsewhere,
    and a model of them still predicts a class (the argmax of NaN is 0) that would be
    scored. Why a reference: a model may hold infinities of its own (a -inf mask buffer)."""
    def bad(name, tensor):
        if not (tensor.is_floating_point() or tensor.is_complex()):
            return torch.zeros((), dtype=torch.bool)
        return ~torch.isfinite(tensor) & torch.isfinite(reference[name].to(tensor.device))
    damaged = [name for name, tensor in sorted(weights.items())  # one order, each time
               if bool(bad(name, tensor).any())]
    if not damaged:
        return
    tensor = weights[damaged[0]]
    count = int(bad(damaged[0], tensor).sum())
    more = f" (and {len(damaged) - 1} more tensor(s))" if len(damaged) > 1 else ""
    raise CheckpointError(f"{source} holds non-finite weights: tensor {damaged[0]} has {count} "
                          f"NaN or inf value(s) of {tensor.numel()}{more}; such a model cannot "
                          "be evaluated: use the other checkpoint (best/last) or retrain")


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
    generation when a save was interrupted between its renames. A caller that reads
    files of it later must not race a save (the trainer holds the run's lock); one that
    may, reads the weights with the record: :func:`read_checkpoint`."""
    files, meta, _ = _read_consistently(files, keep=())
    return files, meta


def read_checkpoint(files: CheckpointFiles) -> tuple[CheckpointFiles, dict, dict[str, torch.Tensor]]:
    """(files, meta, weights) of a complete checkpoint, the weights read together with
    the record that vouches for them: safe while a training saves this checkpoint."""
    files, meta, data = _read_consistently(files, keep=("weights",))
    return files, meta, decode_weights(data["weights"], files.path("weights"))


def _read_generation(files: CheckpointFiles, keep: tuple) -> tuple[dict, dict[str, bytes]]:
    """The record of ``files`` once both other files match it, and the bytes of those in ``keep``."""
    meta, kept = read_meta(files), {}
    for role in ("weights", "state"):
        data = _verified_bytes(files, meta, role)
        if role in keep:
            kept[role] = data
    return meta, kept


def _stamp(files: CheckpointFiles) -> tuple:
    """The identity (inode, size, time) of each file of ``files`` and of its ``prev``
    generation: a save renames new files over them and removes ``prev``, so any save
    that ran between two stamps makes them differ."""
    marks = []
    for generation in (files, files.prev):
        for role in _SUFFIXES:
            try:
                found = os.stat(generation.path(role))
                marks.append((found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns))
            except OSError:
                marks.append(None)
    return tuple(marks)


def _read_consistently(files: CheckpointFiles, keep: tuple) -> tuple[CheckpointFiles, dict, dict]:
    """(files, meta, bytes of ``keep``) of ``files`` or, after an interrupted save, of its
    ``prev``. A read that fails while a save replaces the files (another process
    training) is repeated, for up to :data:`SAVE_WAIT_S`; only a failure with no save
    meanwhile is reported, so a sound checkpoint is never called corrupt."""
    deadline = time.monotonic() + SAVE_WAIT_S
    while True:
        before = _stamp(files)
        try:
            meta, kept = _read_generation(files, keep)
            return files, meta, kept
        except CheckpointError as exc:
            error = exc
        time.sleep(SETTLE_S)  # a save between its renames completes them
        if _stamp(files) != before and time.monotonic() < deadline:
            continue
        prev = files.prev
        if not (prev.path("meta").exists() or prev.path("meta").is_symlink()):
            raise error
        try:
            meta, kept = _read_generation(prev, keep)
        except CheckpointError:
            if _stamp(files) != before and time.monotonic() < deadline:
                continue
            raise error from None
        warnings.warn(f"{files.stem} was left incomplete by an interrupted save; "
                      f"using the previous generation {prev.stem}", stacklevel=3)
        return prev, meta, kept
