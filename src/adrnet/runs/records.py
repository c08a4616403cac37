"""Reading a run directory's records: ``config.toml``, ``metrics.jsonl``, ``eval.json``.

Why here: these files are written by training (config, metrics, checkpoints) and by
``adrnet eval`` (eval.json); whatever shows them (``adrnet report``) reads them through
these functions, below both, so that the shower imports neither the trainer nor the
evaluator. Reading is forgiving where a crash can leave a file cut (the last line of
metrics.jsonl) and strict, with the fix in the message, where a file is damaged.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

from adrnet.errors import AdrnetError
from adrnet.runs.checkpoint import CheckpointFiles, read_meta


@dataclass(frozen=True)
class RunRecords:
    """What a run directory records: its config, its metrics records and its
    evaluation (None when there is none, or when it was set aside as ``stale``)."""

    path: Path
    config: dict
    metrics: list
    eval: dict | None
    stale: str = ""                 # why eval.json was set aside, if it was


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines file (``metrics.jsonl``); [] when there is none."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # a line cut by a crash: skip it, keep the rest
    return records


def read_config_toml(path: Path) -> dict:
    """The ``config.toml`` at ``path`` as a plain dict ({} when there is none)."""
    try:
        return tomllib.loads(path.read_text()) if path.exists() else {}
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise AdrnetError(f"{path} is not valid TOML ({exc}); restore it from the run") from exc


def read_eval_record(path: Path, run_dir: Path) -> dict | None:
    """The record of an ``eval.json`` (or ``eval_*.json``) at ``path``; None when there is none."""
    try:
        return json.loads(path.read_text()) if path.exists() else None
    except ValueError as exc:
        raise AdrnetError(f"{path} is not valid JSON ({exc}); rerun `adrnet eval {run_dir}`") from exc


def read_run(path: str | Path) -> RunRecords:
    """Read one run directory; refuse a path that is not one, with the fix."""
    path = Path(path)
    if not path.is_dir():
        raise AdrnetError(f"run directory {path} does not exist; give directories made by `adrnet train`")
    if not (path / "config.toml").exists() and not (path / "eval.json").exists():
        raise AdrnetError(f"{path} holds neither config.toml nor eval.json; is it an adrnet run directory?")
    config = read_config_toml(path / "config.toml")
    evaluation = read_eval_record(path / "eval.json", path)
    stale = stale_evaluation(evaluation, path)
    return RunRecords(path, config, read_jsonl(path / "metrics.jsonl"),
                      None if stale else evaluation, stale)


def stale_evaluation(evaluation: dict | None, path: Path) -> str:
    """Why ``evaluation`` no longer describes its checkpoint ("" when it does, or when
    that cannot be told): the checkpoint's record names other weights than those the
    evaluation was computed on (the run was trained further after `adrnet eval`)."""
    sha = (evaluation or {}).get("weights_sha256")
    if not sha or not evaluation.get("checkpoint"):
        return ""
    try:
        meta = read_meta(CheckpointFiles(Path(evaluation["checkpoint"])))
        current = meta["files"]["weights"]["sha256"]
    except (AdrnetError, KeyError, TypeError):
        return ""
    if current == sha:
        return ""
    return (f"its eval.json was computed on earlier weights of its {evaluation.get('which')} "
            f"checkpoint; rerun `adrnet eval {path}`")
