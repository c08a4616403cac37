"""`adrnet report`: one self-contained HTML page and its Markdown twin.

Why: comparing runs needs their numbers and figures side by side, in a file that
opens anywhere: the HTML page embeds every image as base64 PNG (no server, no
external files); the Markdown twin references PNG files written to
``<name>_files/`` next to it. The report only reads run files (config.toml,
metrics.jsonl, eval.json from `adrnet eval`); it never runs a model, so it is
fast and reproducible. This module reads the runs and chooses the sections;
``figures`` draws them and ``tables`` writes their tables and the two pages.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

from adrnet.atomic import output_file, write_bytes_atomic, write_text_atomic
from adrnet.errors import AdrnetError
from adrnet.eval import figures
from adrnet.eval.tables import (divergence_table, render_html, render_markdown, results_table,
                                sanity_table, sweep_comparison_table)


@dataclass(frozen=True)
class RunFiles:
    label: str
    path: Path
    config: dict
    metrics: list
    eval: dict | None
    stale: str = ""                 # why eval.json was set aside, if it was


@dataclass(frozen=True)
class Section:
    title: str
    text: str = ""
    table: tuple | None = None      # (headers, rows)
    image: bytes | None = None
    image_name: str = ""


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # a line cut by a crash: skip it, keep the rest
    return records


def load_run(path: str | Path, label: str) -> RunFiles:
    """Read one run directory; refuse a path that is not one, with the fix."""
    path = Path(path)
    if not path.is_dir():
        raise AdrnetError(f"run directory {path} does not exist; give directories made by `adrnet train`")
    if not (path / "config.toml").exists() and not (path / "eval.json").exists():
        raise AdrnetError(f"{path} holds neither config.toml nor eval.json; is it an adrnet run directory?")
    try:
        config = tomllib.loads((path / "config.toml").read_text()) if (path / "config.toml").exists() else {}
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise AdrnetError(f"{path / 'config.toml'} is not valid TOML ({exc}); restore it from the run") from exc
    try:
        evaluation = json.loads((path / "eval.json").read_text()) if (path / "eval.json").exists() else None
    except ValueError as exc:
        raise AdrnetError(f"{path / 'eval.json'} is not valid JSON ({exc}); rerun `adrnet eval {path}`") from exc
    stale = _stale(evaluation, path)
    return RunFiles(label, path, config, _read_jsonl(path / "metrics.jsonl"),
                    None if stale else evaluation, stale)


def _stale(evaluation: dict | None, path: Path) -> str:
    """Why ``evaluation`` no longer describes its checkpoint ("" when it does, or when
    that cannot be told): the checkpoint's record names other weights than those the
    evaluation was computed on (the run was trained further after `adrnet eval`)."""
    from adrnet.runs.checkpoint import CheckpointFiles, read_meta
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


def unique_labels(paths: list[Path]) -> list[str]:
    """Directory names, with the parent prepended where two runs share a name."""
    names = [p.resolve().name for p in paths]
    return [f"{p.resolve().parent.name}/{n}" if names.count(n) > 1 else n for p, n in zip(paths, names)]


def _evaluated(runs):
    return {r.label: r.eval for r in runs if r.eval}


def build_sections(runs: list[RunFiles]) -> list[Section]:
    """Every section of the report, in order; empty parts are explained, not dropped."""
    evaluated = _evaluated(runs)
    missing = [r.label for r in runs if not r.eval and not r.stale]
    note = (f"Not evaluated yet (run `adrnet eval RUN_DIR`): {', '.join(missing)}. " if missing else "")
    note += "".join(f"Left out: {r.label}, {r.stale}. " for r in runs if r.stale)
    sections = [Section("Robust accuracy (%)", "Per-example worst case over every attack run; "
                        "clean = accuracy on unperturbed inputs. " + note,
                        results_table(evaluated) if evaluated else None)]
    sections.append(Section("Training curves", "" if any(r.metrics for r in runs) else "No metrics.jsonl found.",
                            image=figures.training_curves({r.label: r.metrics for r in runs}),
                            image_name="training_curves.png"))
    sections += _sweep_sections(evaluated)
    sections += _diagnostic_sections(evaluated)
    sections += _sanity_sections(evaluated)
    return sections


def _sweep_sections(evaluated: dict) -> list[Section]:
    sweeps = {label: r.get("sweeps") or {} for label, r in evaluated.items()}
    image = figures.sweep_figure(sweeps)
    norms = sorted({norm for per_norm in sweeps.values() for norm in per_norm})
    if not norms:
        return [Section("Accuracy vs ε", "No ε sweep recorded (run `adrnet eval RUN_DIR --sweep paper`).")]
    return [Section(f"Accuracy vs ε ({norm})", "Worst-case robust accuracy (%) per ε.",
                    sweep_comparison_table(sweeps, norm),
                    image if index == len(norms) - 1 else None, "eps_sweep.png")
            for index, norm in enumerate(norms)]


def _diagnostic_sections(evaluated: dict) -> list[Section]:
    diags = {label: r.get("diagnostics") or {} for label, r in evaluated.items()}
    curves = {label: d["divergence"] for label, d in diags.items() if d.get("divergence")}
    tsne = {label: d["tsne"] for label, d in diags.items() if d.get("tsne")}
    text = ("D = mean |s(x') − s(x)| / mean |s(x)| at every stage s, for PGD examples x' "
            "(Bui et al.: the gap grows with depth; ADR should shrink it at the latent layer).")
    return [Section("Representation divergence across layers", text if curves else "No diagnostics recorded.",
                    divergence_table(curves) if curves else None, figures.divergence_figure(curves),
                    "divergence.png"),
            Section("t-SNE of the latent z", "Clean (o) and adversarial (x) test examples, coloured by "
                    "true class; adversarial points far from their class cluster are the divergence ADR "
                    "penalises." if tsne else "No t-SNE recorded.", None,
                    figures.tsne_figure(tsne), "tsne.png")]


def _sanity_sections(evaluated: dict) -> list[Section]:
    checked = {label: r["sanity"] for label, r in evaluated.items() if r.get("sanity")}
    if not checked:
        return [Section("Gradient-masking checks", "Not run (add `--sanity` to `adrnet eval`).")]
    return [Section("Gradient-masking checks", "A failed check means the robust accuracy above may be "
                    "overestimated (Athalye et al. 2018; Carlini et al. 2019).", sanity_table(checked))]


def write_report(run_dirs: list, out_html: str | Path, title: str = "adrnet report") -> tuple[Path, Path]:
    """Write ``out_html`` and ``<stem>.md`` (+ ``<stem>_files/*.png``); return both paths."""
    if not run_dirs:
        raise AdrnetError("give at least one run directory")
    out_html = Path(out_html)
    if out_html.suffix.lower() == ".md":
        raise AdrnetError(f"--out {out_html} would be overwritten by the Markdown twin; "
                          "give the HTML file (e.g. report.html), report.md is written next to it")
    md_path = output_file(out_html.with_suffix(".md"))
    out_html = output_file(out_html)
    paths = [Path(p) for p in run_dirs]
    runs = [load_run(p, label) for p, label in zip(paths, unique_labels(paths))]
    sections = build_sections(runs)
    meta = "runs: " + ", ".join(f"{r.label} ({r.path})" for r in runs)
    write_text_atomic(out_html, render_html(title, sections, meta))
    image_dir = out_html.with_name(out_html.stem + "_files")
    for s in sections:
        if s.image:
            write_bytes_atomic(image_dir / s.image_name, s.image)
    write_text_atomic(md_path, render_markdown(title, sections, meta, image_dir.name))
    return out_html, md_path
