"""`adrnet report`: one self-contained HTML page and its Markdown twin.

Why: comparing runs needs their numbers and figures side by side, in a file that
opens anywhere: the HTML page embeds every image as base64 PNG (no server, no
external files); the Markdown twin references PNG files written to
``<name>_files/`` next to it. The report only reads run files (config.toml,
metrics.jsonl, and every ``eval*.json`` of `adrnet eval`, such as ``eval.json`` and
``eval_autoattack.json``); it never runs a model, so it is fast and reproducible. The
run files are read by :mod:`adrnet.runs.records`; this module chooses the sections,
``figures`` draws them and ``tables`` writes their tables and the two pages.

A report overwrites only what an earlier report wrote (recognised by the marker line
:data:`~adrnet.report.tables.REPORT_MARKER` in its pages and the ``Software`` entry of
its PNG images), and never a file that belongs to a run directory.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

from adrnet.atomic import output_file, write_bytes_atomic, write_text_atomic
from adrnet.errors import AdrnetError, OutputError
from adrnet.report import figures
from adrnet.report.tables import (REPORT_MARKER, Section, divergence_table, evaluation_flags,
                                  flag_notes, pct, render_html, render_markdown, results_table,
                                  sanity_table, sweep_comparison_table)
from adrnet.runs.checkpoint import CHECKPOINT_DIR
from adrnet.runs.records import RunRecords, read_run


def unique_labels(paths: list[Path]) -> list[str]:
    """Directory names, lengthened by their parents (``x/run``, then ``a/x/run``) until no
    two runs share one; the same directory given twice is numbered (``run (2)``)."""
    parts = [Path(p).resolve().parts[1:] or (str(Path(p).resolve()),) for p in paths]
    depth = [1] * len(paths)

    def label(i: int) -> str:
        return "/".join(parts[i][-depth[i]:])
    while True:
        labels = [label(i) for i in range(len(paths))]
        grow = [i for i, text in enumerate(labels) if depth[i] < len(parts[i]) and any(
                labels[j] == text and parts[j] != parts[i] for j in range(len(paths)))]
        if not grow:
            break
        for i in grow:
            depth[i] += 1
    seen: set[str] = set()
    for i, text in enumerate(labels):
        number, unique = 1, text
        while unique in seen:
            number += 1
            unique = f"{text} ({number})"
        labels[i] = unique
        seen.add(unique)
    return labels


def _entries(runs: list[tuple[str, RunRecords]]) -> list[tuple[str, str, str, dict]]:
    """(key, run label, file name, record) of every current evaluation; the key names
    the evaluation in sections and figures: the run's label, with the file's name where a
    run has several evaluations."""
    entries, seen = [], set()
    for label, r in runs:
        for e in r.evaluations:
            key = label if len(r.evaluations) == 1 else f"{label} [{e.name}]"
            while key in seen:
                key += "'"
            seen.add(key)
            entries.append((key, label, e.name, e.record))
    return entries


def _evaluated(runs: list[tuple[str, RunRecords]]) -> dict[str, dict]:
    return {key: record for key, _, _, record in _entries(runs)}


def _what(record: dict, name: str) -> str:
    attacks = ", ".join(record["attack_accuracy"]) or "no attack"
    return (f"{name} ({attacks}; first {record['n']} {record['split']} images, "
            f"{record['norm']} ε={record['eps']:.4g})")


def _data(record: dict):
    """The SHA-256 of the examples an evaluation ran on, where its plan records it."""
    plan = record.get("plan")
    return plan.get("data_sha256") if isinstance(plan, dict) else None


def lower_evaluations(label: str, evaluations: list[tuple[str, dict]]) -> list[str]:
    """Sentences saying, for a run evaluated more than once at one threat (norm, ε), which
    evaluation gives the lowest worst case: a higher one is no worst case of these weights.
    On the same examples the lowest is an upper bound of the robust accuracy over all of
    them; on other examples (another n or split) the two are only set side by side."""
    notes = []
    threats = {(r["norm"], r["eps"]) for _, r in evaluations}
    for threat in sorted(threats):
        group = [(n, r) for n, r in evaluations if (r["norm"], r["eps"]) == threat]
        if len(group) < 2:
            continue
        low_name, low = min(group, key=lambda e: e[1]["worst_case_accuracy"])
        for name, r in group:
            if r["worst_case_accuracy"] <= low["worst_case_accuracy"]:
                continue
            same = (r["split"], r["n"]) == (low["split"], low["n"]) and _data(r) == _data(low)
            where = ("on the same examples, so these weights are robust on at most "
                     f"{pct(low['worst_case_accuracy'])}% of them" if same else
                     "on other examples (another n or split)")
            notes.append(f"{label}: {_what(low, low_name)} gives {pct(low['worst_case_accuracy'])}%, "
                         f"lower than the worst case {pct(r['worst_case_accuracy'])}% of "
                         f"{_what(r, name)}, {where}.")
    return notes


def build_sections(runs: list[tuple[str, RunRecords]]) -> list[Section]:
    """Every section of the report, in order, for (label, records) pairs; empty parts
    are explained, not dropped."""
    entries = _entries(runs)
    evaluated = {key: record for key, _, _, record in entries}
    missing = [label for label, r in runs if not r.evaluations and not r.left_out]
    notes = [f"Not evaluated yet (run `adrnet eval RUN_DIR`): {', '.join(missing)}."] if missing else []
    for label, r in runs:
        notes += lower_evaluations(label, [(e.name, e.record) for e in r.evaluations])
        notes += [f"Left out: {label}, {why}." for why in r.left_out]
        notes += [f"Note: {label}, {why}." for why in r.remarks]
    for key, _, _, record in entries:  # beside the marked figures: what flagged them
        notes += flag_notes(record, evaluation_flags(record), key)
    table = results_table([(label, name, record) for _, label, name, record in entries])
    sections = [Section("Robust accuracy (%)", "One row per evaluation of the weights each run holds now; "
                        "worst case = the per-example worst case over the attacks of that row's "
                        "evaluation only, on its n images of its split; clean = accuracy on unperturbed "
                        "inputs. " + " ".join(notes), table if entries else None)]
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
    return [Section(f"Accuracy vs ε ({norm})", "Worst-case robust accuracy (%) per ε, over the "
                    "attacks of each sweep.", sweep_comparison_table(sweeps, norm),
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


# ---- what a report may overwrite ----

_HEAD_BYTES = 4096
_MARKDOWN_BYTES = 16 * 2**20
#: The files of a run directory (and everything under its checkpoints/), which a
#: report never writes over, nor creates.
RUN_FILES = ("config.toml", "metrics.*", "eval*.json", "eval*.json.lock", "objects.json",
             "autoattack_state.json*")


def _is_run_directory(folder: Path) -> bool:
    return (folder / "config.toml").is_file() or (folder / CHECKPOINT_DIR).is_dir() or \
        (folder / "eval.json").is_file()


def run_file(path: Path, run_dirs: list[Path]) -> Path | None:
    """The run directory ``path`` (resolved) belongs to as one of its own files (its
    config, metrics, evaluations or checkpoints), or None."""
    path = path.resolve()
    runs = {d.resolve() for d in run_dirs}
    folder = path.parent
    if (folder in runs or _is_run_directory(folder)) and \
            any(fnmatch.fnmatchcase(path.name, pattern) for pattern in RUN_FILES):
        return folder
    for parent in path.parents:
        if parent.name == CHECKPOINT_DIR and (parent.parent in runs or _is_run_directory(parent.parent)):
            return parent.parent
    return None


def _head(path: Path, limit: int = _HEAD_BYTES) -> bytes:
    try:
        with open(path, "rb") as handle:  # output_file has refused anything but a regular file
            return handle.read(limit)
    except OSError as exc:
        raise OutputError(f"cannot read {path}: {exc.strerror or exc}") from None


def _page_kind(path: Path) -> str:
    """"marker" when the regular file ``path`` is a page an ``adrnet report`` wrote (its
    marker line), "legacy" when it has the layout of one written before there was a
    marker, "" otherwise."""
    head = _head(path)
    marker = REPORT_MARKER.encode()
    if head.startswith(marker) or head.startswith(b"<!DOCTYPE html>\n" + marker):
        return "marker"
    legacy_html = b"<!DOCTYPE html><html><head><meta charset='utf-8'><title>"
    if head.startswith(legacy_html):
        legacy = b"<style>body{font-family:system-ui,sans-serif;max-width:1200px" in head and \
            b"<p class='meta'>runs: " in head
    else:
        text = head.decode("utf-8", errors="replace")
        legacy = text.startswith("# ") and "\n_runs: " in text and "\n## Robust accuracy (%)\n" in text
    return "legacy" if legacy else ""


def _own_page(path: Path) -> bool:
    return bool(_page_kind(path))


def _own_image(path: Path, earlier_markdown: str, link: str) -> bool:
    """True when ``path`` is a PNG a report drew (its ``Software`` entry), or one a
    report written before there was that entry links to (``earlier_markdown``)."""
    head = _head(path)
    return head.startswith(b"\x89PNG") and (figures.PNG_SOFTWARE.encode() in head or
                                            f"]({link})" in earlier_markdown)


def _refuse_foreign(path: Path, target: Path, run_dirs: list[Path], own) -> None:
    run = run_file(target, run_dirs)
    if run is not None:
        raise OutputError(f"cannot write {path}: it is {target.name} of run directory {run}, "
                          "and adrnet report never writes over a run's files; choose another --out")
    if target.exists() and not own(target):
        raise OutputError(f"cannot write {path}: the file exists and was not written by adrnet "
                          "report, so it is not overwritten; move it away or choose another --out")


def _targets(out_html: Path, run_dirs: list[Path], image_names: list[str]) -> tuple[Path, Path, Path]:
    """(HTML page, Markdown twin, image folder) to write, once every file a report would
    replace is known to be its own: refused otherwise, before anything is written."""
    md_path, html_path = output_file(out_html.with_suffix(".md")), output_file(out_html)
    if md_path.resolve() == html_path.resolve():
        raise OutputError(f"cannot write {out_html}: it is the same file as its Markdown twin "
                          f"{out_html.with_suffix('.md')}; give another --out")
    for given, target in ((out_html, html_path), (out_html.with_suffix(".md"), md_path)):
        _refuse_foreign(given, target, run_dirs, _own_page)
    earlier = (_head(md_path, _MARKDOWN_BYTES).decode("utf-8", errors="replace")
               if md_path.exists() and _page_kind(md_path) == "legacy" else "")
    image_dir = html_path.with_name(html_path.stem + "_files")
    for name in image_names:
        image = output_file(image_dir / name)
        link = f"{image_dir.name}/{name}"
        _refuse_foreign(image_dir / name, image, run_dirs,
                        lambda p, link=link: _own_image(p, earlier, link))
    return html_path, md_path, image_dir


def write_report(run_dirs: list, out_html: str | Path, title: str = "adrnet report",
                 warn=None) -> tuple[Path, Path]:
    """Write ``out_html`` and ``<stem>.md`` (+ ``<stem>_files/*.png``); return both paths.
    ``warn`` (a callable) receives one line when something was left out of the report.
    A file that exists is replaced only when an earlier report wrote it; a run's own
    files (config.toml, metrics, eval*.json, checkpoints) never are."""
    if not run_dirs:
        raise AdrnetError("give at least one run directory")
    out_html = Path(out_html)
    if out_html.suffix.lower() == ".md":
        raise AdrnetError(f"--out {out_html} would be overwritten by the Markdown twin; "
                          "give the HTML file (e.g. report.html), report.md is written next to it")
    paths = [Path(p) for p in run_dirs]
    runs = [(label, read_run(p)) for p, label in zip(paths, unique_labels(paths))]
    sections = build_sections(runs)
    html_path, md_path, image_dir = _targets(out_html, paths, [s.image_name for s in sections if s.image])
    meta = "runs: " + ", ".join(f"{label} ({r.path})" for label, r in runs)
    write_text_atomic(html_path, render_html(title, sections, meta))
    for s in sections:
        if s.image:
            write_bytes_atomic(image_dir / s.image_name, s.image)
    write_text_atomic(md_path, render_markdown(title, sections, meta, image_dir.name))
    left_out = sum(len(r.left_out) for _, r in runs)
    if left_out and warn is not None:
        warn(f"{left_out} evaluation(s) or part(s) of one left out of the report (stale or "
             f"damaged); its first section says which: {html_path}")
    return html_path, md_path
