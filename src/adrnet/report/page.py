"""`adrnet report`: one self-contained HTML page and its Markdown twin.

Why: comparing runs needs their numbers and figures side by side, in a file that
opens anywhere: the HTML page embeds every image as base64 PNG (no server, no
external files); the Markdown twin references PNG files written to
``<name>_files/`` next to it. The report only reads run files (config.toml,
metrics.jsonl, eval.json from `adrnet eval`); it never runs a model, so it is
fast and reproducible. The run files are read by :mod:`adrnet.runs.records`; this
module chooses the sections, ``figures`` draws them and ``tables`` writes their tables
and the two pages.
"""

from __future__ import annotations

from pathlib import Path

from adrnet.atomic import output_file, write_bytes_atomic, write_text_atomic
from adrnet.errors import AdrnetError
from adrnet.report import figures
from adrnet.report.tables import (Section, divergence_table, render_html, render_markdown,
                                  results_table, sanity_table, sweep_comparison_table)
from adrnet.runs.records import RunRecords, read_run


def unique_labels(paths: list[Path]) -> list[str]:
    """Directory names, with the parent prepended where two runs share a name."""
    names = [p.resolve().name for p in paths]
    return [f"{p.resolve().parent.name}/{n}" if names.count(n) > 1 else n for p, n in zip(paths, names)]


def _evaluated(runs: list[tuple[str, RunRecords]]) -> dict[str, dict]:
    return {label: r.eval for label, r in runs if r.eval}


def build_sections(runs: list[tuple[str, RunRecords]]) -> list[Section]:
    """Every section of the report, in order, for (label, records) pairs; empty parts
    are explained, not dropped."""
    evaluated = _evaluated(runs)
    missing = [label for label, r in runs if not r.eval and not r.stale]
    note = (f"Not evaluated yet (run `adrnet eval RUN_DIR`): {', '.join(missing)}. " if missing else "")
    note += "".join(f"Left out: {label}, {r.stale}. " for label, r in runs if r.stale)
    sections = [Section("Robust accuracy (%)", "Per-example worst case over every attack run; "
                        "clean = accuracy on unperturbed inputs. " + note,
                        results_table(evaluated) if evaluated else None)]
    sections.append(Section("Training curves", "" if any(r.metrics for _, r in runs) else "No metrics.jsonl found.",
                            image=figures.training_curves({label: r.metrics for label, r in runs}),
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
    runs = [(label, read_run(p)) for p, label in zip(paths, unique_labels(paths))]
    sections = build_sections(runs)
    meta = "runs: " + ", ".join(f"{label} ({r.path})" for label, r in runs)
    write_text_atomic(out_html, render_html(title, sections, meta))
    image_dir = out_html.with_name(out_html.stem + "_files")
    for s in sections:
        if s.image:
            write_bytes_atomic(image_dir / s.image_name, s.image)
    write_text_atomic(md_path, render_markdown(title, sections, meta, image_dir.name))
    return out_html, md_path
