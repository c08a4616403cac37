"""Reading a run directory's records: ``config.toml``, ``metrics.jsonl``, ``eval*.json``.

Why here: these files are written by training (config, metrics, checkpoints) and by
``adrnet eval`` (eval.json, and any other ``eval*.json`` such as the AutoAttack
evaluation ``eval_autoattack.json``); whatever shows them (``adrnet report``) reads
them through these functions, below both, so that the shower imports neither the
trainer nor the evaluator. Every file is read only when it is a regular file of bounded
size (a pipe would hang the reader, ``/dev/zero`` would fill the memory). Reading is
forgiving where a crash can leave a file cut (the lines of metrics.jsonl) or where a
part is optional (an ε sweep, a diagnostic: left out with a note), and strict, with
the fix in the message, where an evaluation's own numbers are damaged.
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

from adrnet.atomic import read_bounded
from adrnet.errors import AdrnetError
from adrnet.runs.checkpoint import CHECKPOINT_DIR, RECORD_LIMIT

EVAL_JSON_LIMIT = 64 * 2**20        # as adrnet.eval.evaluate's: no eval.json is larger
CONFIG_LIMIT = 16 * 2**20
METRICS_LIMIT = 256 * 2**20
CHECKPOINT_RECORD_LIMIT = RECORD_LIMIT  # as the checkpoint reader's


@dataclass(frozen=True)
class Evaluation:
    """One evaluation file of a run (``eval.json``, ``eval_autoattack.json``, ...):
    its name and its record, checked to have the shape the report uses."""

    name: str
    record: dict


@dataclass(frozen=True)
class RunRecords:
    """What a run directory records: its config, its metrics records and its
    evaluations of the weights it holds now (``eval.json`` first); ``left_out`` says
    why each other evaluation, or a damaged part of one, was set aside, ``remarks``
    what could not be checked."""

    path: Path
    config: dict
    metrics: list
    evaluations: tuple = ()
    left_out: tuple = ()
    remarks: tuple = ()

    @property
    def eval(self) -> dict | None:
        """The record of ``eval.json`` (None when there is none or it was set aside)."""
        return next((e.record for e in self.evaluations if e.name == "eval.json"), None)

    @property
    def stale(self) -> str:
        """Why evaluations were set aside ("" when none was)."""
        return "; ".join(self.left_out)


def read_jsonl(path: Path) -> list[dict]:
    """The records (JSON objects) of a JSON-lines file (``metrics.jsonl``); [] when
    there is none. A line that is not a JSON object (a line cut by a crash) is skipped."""
    return read_metrics(path)[0]


def read_metrics(path: Path) -> tuple[list[dict], list[str]]:
    """(records, notes) of ``metrics.jsonl``: lines that are not JSON objects are
    skipped (a cut last line silently: a crash leaves one), and a file that cannot be
    one (not a regular file, too large, not UTF-8) is left out; each with a note."""
    try:
        data = read_bounded(path, METRICS_LIMIT, "metrics.jsonl")
    except AdrnetError as exc:
        return [], [f"{path.name} left out: {exc}"]
    if data is None:
        return [], []
    lines = data.decode("utf-8", errors="replace").splitlines()
    records, skipped = [], 0
    for index, line in enumerate(lines):
        try:
            record, cut = json.loads(line), False
        except ValueError:
            record, cut = None, True
        if isinstance(record, dict):
            records.append(record)
        elif line.strip() and not (cut and index == len(lines) - 1):
            skipped += 1
    notes = [f"{skipped} line(s) of {path.name} that are not records were skipped"] if skipped else []
    return records, notes


def read_config_toml(path: Path) -> dict:
    """The ``config.toml`` at ``path`` as a plain dict ({} when there is none)."""
    data = read_bounded(path, CONFIG_LIMIT, "config.toml")
    try:
        return tomllib.loads(data.decode("utf-8")) if data is not None else {}
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise AdrnetError(f"{path} is not valid TOML ({exc}); restore it from the run") from exc


def read_eval_record(path: Path, run_dir: Path) -> dict | None:
    """The record (a JSON object) of an ``eval.json`` (or ``eval_*.json``) at ``path``;
    None when there is none. Its fields are checked by :func:`check_evaluation`."""
    data = read_bounded(path, EVAL_JSON_LIMIT, "eval.json")
    if data is None:
        return None
    try:
        record = json.loads(data)
    except ValueError as exc:
        raise AdrnetError(f"{path} is not valid JSON ({exc}); rerun `adrnet eval {run_dir}`") from exc
    if not isinstance(record, dict):
        raise AdrnetError(f"{path} holds a JSON {_kind(record)}, not an evaluation record; rerun "
                          f"`adrnet eval {run_dir}` or move it away")
    return record


# ---- the shape of an evaluation record ----

def _kind(value) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null",
             int: "number", float: "number"}
    return names.get(type(value), type(value).__name__)


def _real(value) -> bool:
    """A number a table or an axis can show (JSON also allows NaN, Infinity and 1e308)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value) and abs(value) <= 1e100


def _accuracy(value) -> bool:
    return _real(value) and 0 <= value <= 1


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


_REQUIRED = {
    "split": (lambda v: isinstance(v, str) and v != "", "a split name"),
    "n": (lambda v: _count(v) and v > 0, "a positive whole number of examples"),
    "norm": (lambda v: isinstance(v, str) and v != "", "a norm name"),
    "eps": (lambda v: _real(v) and v >= 0, "a radius (a number, 0 or more)"),
    "clean_accuracy": (_accuracy, "an accuracy (a number from 0 to 1)"),
    "worst_case_accuracy": (_accuracy, "an accuracy (a number from 0 to 1)"),
    "attack_accuracy": (lambda v: isinstance(v, dict) and all(
        isinstance(k, str) and (a is None or _accuracy(a)) for k, a in v.items()),
        "a table of attack names to accuracies (numbers from 0 to 1)"),
}
_TEXT_FIELDS = ("which", "objective", "precision", "weights_sha256", "checkpoint", "dataset", "model")


def _sweep_problem(rows) -> str:
    if not isinstance(rows, list) or not rows:
        return f"it is a {_kind(rows)}, not a list of rows"
    for index, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            return f"row {index} is a {_kind(row)}, not an object"
        if not (_real(row.get("eps")) and row["eps"] >= 0):
            return f"row {index} has no radius eps"
        if not _accuracy(row.get("worst_case")):
            return f"row {index} has no worst_case accuracy"
    return ""


def _sanity_problem(sanity) -> str:
    if not isinstance(sanity, dict) or not isinstance(sanity.get("passed"), bool):
        return "it has no passed verdict"
    flags, checks = sanity.get("flags"), sanity.get("checks")
    if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
        return "its flags are not a list of names"
    if not isinstance(checks, dict) or not all(
            isinstance(c, dict) and isinstance(c.get("passed"), bool) and isinstance(c.get("message"), str)
            for c in checks.values()):
        return "its checks are not a table of verdicts with messages"
    return ""


def _points(value) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(p, list) and len(p) == 2 and all(_real(c) for c in p) for p in value)


def _tsne_problem(tsne) -> str:
    if not isinstance(tsne, dict):
        return f"it is a {_kind(tsne)}, not an object"
    if not (_points(tsne.get("clean")) and _points(tsne.get("adv"))):
        return "its clean and adv points are not lists of [x, y] pairs"
    labels = tsne.get("labels")
    if not isinstance(labels, list) or not all(_count(v) for v in labels):
        return "its labels are not a list of class numbers"
    if not len(labels) == len(tsne["clean"]) == len(tsne["adv"]):
        return "its labels, clean and adv points differ in number"
    return ""


def check_evaluation(record: dict, path: Path, run_dir: Path) -> tuple[dict, list[str]]:
    """(record, notes): the record with every field the report shows checked. A damaged
    number of the evaluation itself is refused (:class:`AdrnetError`, with the fix); a
    damaged optional part (an ε sweep, the sanity checks, a diagnostic, a name) is
    dropped from the returned copy, with a note saying what and why."""
    for key, (valid, expected) in _REQUIRED.items():
        if key not in record:
            raise AdrnetError(f"{path} records no {key}, so it is not an evaluation written by "
                              f"adrnet eval; rerun `adrnet eval {run_dir}` or move it away")
        if not valid(record[key]):
            raise AdrnetError(f"{path}: {key} is {_kind(record[key])} {str(record[key])[:40]!r}, "
                              f"not {expected}; the file is damaged: rerun `adrnet eval {run_dir}` "
                              "or move it away")
    record, notes = dict(record), []

    def drop(key: str, why: str) -> None:
        record.pop(key, None)
        notes.append(f"{path.name}: its {key} ({why})")
    for key in _TEXT_FIELDS:
        if key in record and not isinstance(record[key], str):
            drop(key, f"a {_kind(record[key])}, not a text")
    if "bf16_only" in record and not (isinstance(record["bf16_only"], dict) and all(
            _count(v) for v in record["bf16_only"].values())):
        drop("bf16_only", "not a table of counts")
    if record.get("sanity") is not None and (why := _sanity_problem(record["sanity"])):
        drop("sanity", why)
    sweeps = record.get("sweeps")
    if sweeps is not None and not isinstance(sweeps, dict):
        drop("sweeps", f"a {_kind(sweeps)}, not a table of sweeps per norm")
    elif sweeps:
        kept = {}
        for norm, rows in sweeps.items():
            if why := _sweep_problem(rows):
                notes.append(f"{path.name}: its {norm} ε sweep ({why})")
            else:
                kept[norm] = rows
        record["sweeps"] = kept
    diagnostics = record.get("diagnostics")
    if diagnostics is not None and not isinstance(diagnostics, dict):
        drop("diagnostics", f"a {_kind(diagnostics)}, not an object")
    elif diagnostics:
        diagnostics = record["diagnostics"] = dict(diagnostics)
        divergence = diagnostics.get("divergence")
        if divergence and not (isinstance(divergence, dict) and all(
                _real(v) or (isinstance(v, float) and math.isnan(v)) for v in divergence.values())):
            diagnostics.pop("divergence")
            notes.append(f"{path.name}: its divergence across layers (not a table of numbers per layer)")
        if diagnostics.get("tsne") and (why := _tsne_problem(diagnostics["tsne"])):
            diagnostics.pop("tsne")
            notes.append(f"{path.name}: its t-SNE ({why})")
    return record, notes


# ---- which evaluations describe the weights the run directory holds ----

def checkpoint_weights(run_dir: Path, which: str) -> tuple[str | None, str]:
    """(SHA-256 of the weights of checkpoint ``which`` of ``run_dir`` as its record
    states it, or None; why it is not known). The record is that of the run directory
    itself (``run_dir/checkpoints/WHICH.json``, else the previous generation an
    interrupted save keeps), never one an absolute path stored elsewhere names: a run
    copied or moved, then trained further, holds other weights than its original."""
    if not which or Path(which).name != which or which in (".", ".."):
        return None, "it names no checkpoint"
    folder = run_dir / CHECKPOINT_DIR
    problems = []
    for name in (which, which + ".prev"):
        path = folder / f"{name}.json"
        try:
            data = read_bounded(path, CHECKPOINT_RECORD_LIMIT, "checkpoint record")
            meta = json.loads(data) if data is not None else None
        except (AdrnetError, ValueError) as exc:
            problems.append(f"{path} cannot be read ({str(exc)[:80]})")
            continue
        if meta is None:
            continue
        try:
            sha = meta["files"]["weights"]["sha256"]
        except (KeyError, TypeError):
            sha = None
        if isinstance(sha, str) and sha:
            return sha, ""
        problems.append(f"{path} records no SHA-256 of its weights")
    return None, "; ".join(problems) or f"{run_dir} holds no {CHECKPOINT_DIR}/{which}.json"


def stale_evaluation(evaluation: dict | None, path: Path, name: str = "eval.json") -> str:
    """Why ``evaluation`` no longer describes the weights of run directory ``path``
    ("" when it does, or when that cannot be told: see :func:`weights_check`)."""
    return weights_check(evaluation or {}, path, name)[0]


def weights_check(evaluation: dict, path: Path, name: str) -> tuple[str, str]:
    """(why the evaluation is stale, what could not be checked): the SHA-256 of the
    weights it was computed on against that of its checkpoint in run directory ``path``."""
    sha, which = evaluation.get("weights_sha256"), evaluation.get("which")
    if not isinstance(sha, str) or not sha:
        return "", (f"{name} records no SHA-256 of its weights (an older adrnet): not checked "
                    "against the run's checkpoint")
    current, why = checkpoint_weights(path, which if isinstance(which, str) else "")
    if current is None:
        return "", f"{name}'s weights not checked: {why}"
    if current == sha:
        return "", ""
    return (f"its {name} was computed on earlier weights of its {which} checkpoint than "
            f"{path}/{CHECKPOINT_DIR}/{which} holds now (SHA-256 {sha[:12]}…, now {current[:12]}…); "
            f"rerun `adrnet eval {path}`"), ""


def evaluation_files(path: Path) -> list[Path]:
    """The evaluation files of a run directory: ``eval.json`` first, then every other
    ``eval*.json`` by name."""
    found = sorted(p for p in path.glob("eval*.json") if p.name != "eval.json")
    return ([path / "eval.json"] if (path / "eval.json").exists() or (path / "eval.json").is_symlink()
            else []) + found


def read_run(path: str | Path) -> RunRecords:
    """Read one run directory; refuse a path that is not one, with the fix."""
    path = Path(path)
    if not path.is_dir():
        raise AdrnetError(f"run directory {path} does not exist; give directories made by `adrnet train`")
    files = evaluation_files(path)
    if not (path / "config.toml").exists() and not files:
        raise AdrnetError(f"{path} holds neither config.toml nor eval.json; is it an adrnet run directory?")
    config = read_config_toml(path / "config.toml")
    evaluations, left_out, remarks = [], [], []
    for file in files:
        record = read_eval_record(file, path)
        if record is None:
            continue
        record, notes = check_evaluation(record, file, path)
        left_out += notes
        stale, remark = weights_check(record, path, file.name)
        if remark:
            remarks.append(remark)
        if stale:
            left_out.append(stale)
        else:
            evaluations.append(Evaluation(file.name, record))
    metrics, notes = read_metrics(path / "metrics.jsonl")
    return RunRecords(path, config, metrics, tuple(evaluations), tuple(left_out + notes),
                      tuple(remarks))
