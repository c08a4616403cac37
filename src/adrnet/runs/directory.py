"""What a new training run may find in its ``--out`` directory, and what it refuses.

Why: a new run writes ``config.toml``, ``metrics.jsonl``, ``metrics.csv`` and
``checkpoints/`` into its directory, replacing whatever has those names. So it starts
only in a directory that is missing, empty, or holds nothing but what an earlier
adrnet run left before its first checkpoint (killed or failed early, so that a
requeued ``--resume-if-exists`` job can start again). Anything else is refused with
one line naming what is there, before anything is built or written:

- a file or folder adrnet did not write (the user's own ``config.toml`` or
  ``metrics.csv`` in ``--out .``, an evaluation, a report);
- a run: its ``last`` checkpoint (resume it), or a ``best`` checkpoint without
  ``last`` (its last was removed: it can no longer be resumed, and a new run would
  replace its best weights);
- a ``checkpoints`` that is not a folder, a symbolic link that cannot be followed,
  or a checkpoint name that is not a regular file.

adrnet recognises its own ``config.toml`` by its first line, :data:`RUN_CONFIG_HEADER`,
and it writes every other file of a run only after that one, so a directory without
that line holds nothing adrnet may replace.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from adrnet.atomic import file_kind
from adrnet.errors import ConfigError, OutputError
from adrnet.locking import RUN_LOCK
from adrnet.runs.checkpoint import _SUFFIXES, CHECKPOINT_DIR, OBJECTS_FILE
from adrnet.runs.load import has_checkpoint

#: The first line of every ``config.toml`` that ``adrnet train`` writes.
RUN_CONFIG_HEADER = "# written by adrnet train: the complete config of this run\n"
#: The files a run writes before its first checkpoint (config.toml first).
EARLY_FILES = ("config.toml", OBJECTS_FILE, "metrics.jsonl", "metrics.csv")
#: The folder a run makes besides checkpoints/: TensorBoard's events (when installed).
EARLY_FOLDERS = ("tensorboard",)
#: The pieces of a first checkpoint whose save was cut before its record (last.json)
#: committed it: the next save replaces them.
UNCOMMITTED = tuple(f"last{_SUFFIXES[role]}" for role in ("weights", "state"))
_SHOWN = 5  # names listed in a refusal


def check_fresh_run_dir(run_dir: str | os.PathLike) -> None:
    """Refuse ``run_dir`` as the directory of a new run unless it is missing, empty or
    holds only an earlier run's files from before its first checkpoint (see the module
    docstring); one :class:`~adrnet.errors.AdrnetError` line says what is there."""
    run_dir = Path(run_dir)
    try:
        _check(run_dir)
    except OSError as exc:  # a folder that cannot be listed, a link loop met on the way
        where = exc.filename or run_dir
        raise OutputError(f"cannot start a run in {run_dir}: cannot read {where} "
                          f"({exc.strerror or exc}); choose another --out") from None


def _check(run_dir: Path) -> None:
    if not run_dir.is_dir():
        return  # missing (run_lock makes it), or a file the lock has refused already
    if has_checkpoint(run_dir):
        raise ConfigError(f"{run_dir} already holds a run; continue it with "
                          f"`adrnet train --resume {run_dir}` (or --resume-if-exists), "
                          "or choose another --out")
    entries = {entry.name: entry for entry in os.scandir(run_dir)}
    # checkpoints/ first: a best without last is refused as what it is, whoever wrote the rest
    in_checkpoints = (_foreign_checkpoint_files(run_dir, entries[CHECKPOINT_DIR])
                      if CHECKPOINT_DIR in entries else [])
    ours = _written_by_adrnet(run_dir / "config.toml")
    foreign = []
    for name, entry in sorted(entries.items()):
        if name == RUN_LOCK or _is_temporary(name, EARLY_FILES):
            continue
        if name == CHECKPOINT_DIR:
            foreign += in_checkpoints
        elif not ours:
            foreign.append(name)
        elif name in EARLY_FILES:
            if not _is_file(entry):
                foreign.append(f"{name} ({_kind(entry)})")
        elif name in EARLY_FOLDERS:
            if not entry.is_dir(follow_symlinks=False):
                foreign.append(f"{name} ({_kind(entry)})")
        else:
            foreign.append(name)
    if foreign:
        shown = ", ".join(foreign[:_SHOWN]) + (f" and {len(foreign) - _SHOWN} more"
                                               if len(foreign) > _SHOWN else "")
        why = ("" if ours or "config.toml" not in entries else
               f"; its config.toml was not written by adrnet train (whose first line is "
               f"`{RUN_CONFIG_HEADER.strip()}`)")
        raise OutputError(f"{run_dir} holds what adrnet did not write or a new run would "
                          f"replace: {shown}{why}. adrnet never overwrites a file it did not "
                          "write: choose an empty or new --out, or move these away")


def _foreign_checkpoint_files(run_dir: Path, entry: os.DirEntry) -> list[str]:
    """What in ``RUN/checkpoints`` a new run may not replace (its names, as
    ``checkpoints/NAME``); a ``best`` checkpoint without ``last`` is refused outright."""
    folder = run_dir / CHECKPOINT_DIR
    if entry.is_symlink():
        try:
            os.stat(folder)
        except OSError as exc:
            raise OutputError(f"{folder} is a symbolic link that cannot be followed "
                              f"({exc.strerror}); it is not a checkpoint folder: remove it, "
                              "or choose another --out") from None
    if not entry.is_dir():
        raise OutputError(f"{folder} is {_kind(entry)}, not a checkpoint folder; adrnet "
                          "would have to replace it: move it away, or choose another --out")
    names = sorted(os.listdir(folder))
    best = [name for name in names if name.startswith("best.")]
    if any(name in (f"best{suffix}" for suffix in _SUFFIXES.values()) and
           _is_file_at(folder / name) for name in best):
        raise OutputError(
            f"{run_dir} holds a best checkpoint ({folder}/best.*) but no last one: its last "
            f"checkpoint was removed, so it cannot be resumed, and a new run would replace its "
            f"best weights. Evaluate it as it is (adrnet eval {run_dir}), or move it away "
            "and rerun, or choose another --out")
    checkpoint_names = [f"last{suffix}" for suffix in _SUFFIXES.values()]
    foreign = []
    for name in names:
        path = folder / name
        if _is_temporary(name, checkpoint_names):
            continue
        if name in UNCOMMITTED and _is_file_at(path):
            continue
        kind = "" if _is_file_at(path) else f" ({_kind_at(path)})"
        foreign.append(f"{CHECKPOINT_DIR}/{name}{kind}")
    return foreign


def _written_by_adrnet(config: Path) -> bool:
    """Whether ``config`` is a regular file (not a link) whose first line is
    :data:`RUN_CONFIG_HEADER`, read without following links or waiting on a pipe."""
    header = RUN_CONFIG_HEADER.encode()
    try:
        fd = os.open(config, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        return os.pread(fd, len(header), 0) == header
    finally:
        os.close(fd)


def _is_temporary(name: str, targets) -> bool:
    """Whether ``name`` is a temporary of :func:`adrnet.atomic.write_temporary` for one of
    ``targets`` (``.NAME.<random>.tmp``), left by a write a kill cut short."""
    return name.endswith(".tmp") and any(name.startswith(f".{target}.") for target in targets)


def _is_file(entry: os.DirEntry) -> bool:
    return entry.is_file(follow_symlinks=False)


def _is_file_at(path: Path) -> bool:
    return stat.S_ISREG(os.lstat(path).st_mode)


def _kind(entry: os.DirEntry) -> str:
    return _kind_at(Path(entry.path))


def _kind_at(path: Path) -> str:
    mode = os.lstat(path).st_mode
    return "a symbolic link" if stat.S_ISLNK(mode) else file_kind(mode)
