"""Every piece of table text of adrnet's evaluation: terminal, Markdown and HTML.

Why one module: `adrnet eval` prints its numbers and `adrnet report` shows them
across runs; both read the same ``eval.json`` records, so the same formatting
(accuracies as percentages of the n evaluated examples, ε written as k/255 where
it is one) serves both, and the report's HTML page and its Markdown twin are
rendered here from the sections (``Section``) that ``page`` assembles. ``Section`` is
defined here, the lower of the two modules, so that ``page`` imports ``tables`` and
never the other way round.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import re
from dataclasses import dataclass
from typing import Mapping, Sequence
from urllib.parse import quote

#: The first line of a page ``adrnet report`` writes (after ``<!DOCTYPE html>`` in the
#: HTML page): how a later report recognises a file it may overwrite.
REPORT_MARKER = "<!-- written by adrnet report: running it again overwrites this file -->"


@dataclass(frozen=True)
class Section:
    """One section of the report page: a title, text, a table, an image."""

    title: str
    text: str = ""
    table: tuple | None = None      # (headers, rows)
    image: bytes | None = None
    image_name: str = ""


def pct(value) -> str:
    return "–" if value is None else f"{100 * float(value):.2f}"


def _fmt_eps(eps: float, norm: str) -> str:
    k = eps * 255
    return f"{round(k)}/255" if norm == "linf" and abs(k - round(k)) < 1e-6 and eps < 0.1 else f"{eps:g}"


def sweep_table_markdown(rows: Sequence[dict], norm: str = "linf") -> str:
    """A Markdown table of a sweep (accuracies in %)."""
    if not rows:
        return "_no sweep_\n"
    keys = [k for k in rows[0] if k not in ("eps", "n")]
    lines = ["| ε | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for row in rows:
        lines.append(f"| {_fmt_eps(row['eps'], norm)} | " +
                     " | ".join(f"{100 * row[k]:.1f}" for k in keys) + " |")
    return "\n".join(lines) + "\n"


#: The mark beside a figure of an evaluation that flagged itself as possibly unreliable
#: (AutoAttack's own checks); the flag's text follows the table.
FLAG_MARK = "†"


def evaluation_flags(record: dict) -> dict[str, list[str]]:
    """The flags each attack of one evaluation raised about its own reliability, by label:
    AutoAttack's (the package's checks and the Square check, recomputed from the accuracy
    after each of its attacks, so an older eval.json shows it too), recorded in the
    attack's summary. {} when none did."""
    from adrnet.attacks.autoattack import autoattack_flags
    flags = {}
    for label in record.get("attack_accuracy") or {}:
        summary = record.get(label)
        if isinstance(summary, dict) and ("warnings" in summary or "accuracy_after" in summary):
            found = autoattack_flags(summary.get("warnings"), summary.get("accuracy_after"))
            if found:
                flags[label] = found
    return flags


def square_follow_ups(record: dict) -> list[str]:
    """The labels of an evaluation's Square follow-ups (AutoAttack's Square alone: the
    ``square`` attack), whose breaks its worst case includes."""
    settings = record.get("attack_settings") or {}
    return [label for label in record.get("attack_accuracy") or {}
            if isinstance(settings.get(label), dict) and settings[label].get("attacks") == ["square"]]


def flag_notes(record: dict, flags: dict[str, list[str]], where: str = "") -> list[str]:
    """One sentence per flag, each opening with :data:`FLAG_MARK` (``where`` names the
    evaluation in a table of several), and whether a Square follow-up is in its worst case."""
    if not flags:
        return []
    prefix = f"{FLAG_MARK} {where + ': ' if where else ''}"
    notes = [f"{prefix}{label} flagged by AutoAttack's own check: {message}"
             for label, messages in flags.items() for message in messages]
    done = square_follow_ups(record)
    accuracy = record.get("attack_accuracy") or {}
    notes.append(f"{prefix}the worst case includes the flagged attack(s); " + (
        "Square follow-up in it: " + ", ".join(f"{label} {pct(accuracy.get(label))}%" for label in done)
        if done else "no Square follow-up in this evaluation (see docs/evaluation.md)"))
    return notes


def format_eval(record: dict) -> str:
    """Plain-text summary of one ``eval.json`` record, for the terminal. A figure of an
    attack that flagged itself, and the worst case over it, carry :data:`FLAG_MARK`, the
    flags' text below the table."""
    head = (f"{record.get('dataset')} / {record.get('model')} / {record.get('objective')}: "
            f"{record['split']} split, n={record['n']}, {record['norm']} eps={record['eps']:.4g}, "
            f"{precision_note(record)}")
    seconds, rates = record.get("attack_seconds") or {}, record.get("attack_images_per_s") or {}
    rows = [("clean", record["clean_accuracy"], "")]
    rows += [(name, value, f"{seconds[name]:>9.1f} s {rates[name] or 0:>9.1f} img/s"
              if name in seconds else "") for name, value in record["attack_accuracy"].items()]
    rows.append(("worst case", record["worst_case_accuracy"], ""))
    flags = evaluation_flags(record)
    marked = set(flags) | ({"worst case"} if flags else set())
    width = max(len(name) for name, _, _ in rows) + 2
    lines = [head, f"{'attack':<{width}}accuracy (%)" + ("   time, speed" if seconds else "")]
    lines += [(f"{name:<{width}}{pct(value):>8}"
               + ((" " + FLAG_MARK if name in marked else "  ") if flags else "")
               + f"{'  ' + time if time else ''}").rstrip()
              for name, value, time in rows]
    lines += flag_notes(record, flags)
    for norm, sweep in (record.get("sweeps") or {}).items():
        lines += [f"eps sweep ({norm}), accuracy (%):", sweep_table_markdown(sweep, norm).rstrip()]
    sanity = record.get("sanity")
    if sanity:
        lines.append("sanity checks: " + ("all passed" if sanity["passed"] else
                                          "FLAGGED " + ", ".join(sanity["flags"])))
        lines += [f"  [{'ok' if c['passed'] else 'FAIL'}] {name}: {c['message']}"
                  for name, c in sanity["checks"].items()]
    return "\n".join(lines)


def precision_note(record: dict) -> str:
    """The precision an evaluation's attacks ran in, as a table or page says it."""
    if record.get("precision") != "bf16":
        return "attacks in fp32"
    missed = sum((record.get("bf16_only") or {}).values())
    return (f"attacks in bf16, every break verified in fp32 ({missed} point(s) fooled only "
            "the bf16 copy, counted robust)")


def results_table(runs: Mapping[str, dict] | Sequence[tuple[str, str, dict]]
                  ) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of the robust-accuracy table: one row per run (``runs`` a mapping
    of label to ``eval.json`` record) or per evaluation (``runs`` a list of (run label,
    evaluation file name, record), with a column naming the file). "worst case" is that
    row's own: the per-example worst case over the attacks of that one evaluation. A figure
    of an attack that flagged itself, and that row's worst case, carry :data:`FLAG_MARK`
    (the text: :func:`flag_notes`)."""
    entries = ([(label, "", r) for label, r in runs.items()] if isinstance(runs, Mapping)
               else list(runs))
    named = any(name for _, name, _ in entries)
    attacks = list(dict.fromkeys(a for _, _, r in entries for a in r.get("attack_accuracy", {})))
    headers = ["run", "checkpoint", "objective"] + (["evaluation"] if named else []) + \
        ["split", "n", "threat", "precision", "clean"] + attacks + ["worst case (its attacks)", "sanity"]
    rows = []
    for label, name, r in entries:
        flags = evaluation_flags(r)

        def marked(text: str, flagged: bool) -> str:
            return f"{text} {FLAG_MARK}" if flagged else text
        sanity = r.get("sanity")
        flag = "–" if not sanity else ("passed" if sanity["passed"] else "flags: " + ", ".join(sanity["flags"]))
        rows.append([label, str(r.get("which", "")), str(r.get("objective", ""))] + ([name] if named else []) +
                    [r["split"], str(r["n"]), f"{r['norm']} {r['eps']:.4g}", str(r.get("precision", "fp32")),
                     pct(r["clean_accuracy"])] +
                    [marked(pct(r["attack_accuracy"].get(a)), a in flags) for a in attacks] +
                    [marked(pct(r["worst_case_accuracy"]), bool(flags)), flag])
    return headers, rows


_MARKDOWN_SPECIAL = re.compile(r"([\\`*\[\]|$~#]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")


def md_escape(text) -> str:
    """``text`` as Markdown shows it literally: HTML (``<b>``, ``&amp;``) as text, the
    characters that make emphasis, links, code, tables or math backslash-escaped (an
    underscore inside a word, as in ``adr_pgd``, is left alone: it makes no emphasis),
    line breaks as spaces (a table row is one line)."""
    text = html.escape(str(text), quote=False).replace("\r", " ").replace("\n", " ")
    return _MARKDOWN_SPECIAL.sub(lambda m: "\\" + m.group(0), text)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(md_escape(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def comparison_markdown(rows: Sequence[dict], first: dict) -> str:
    """Runs compared with a base and a full run (``adrnet ablate``): accuracy (%) with the
    difference in points to base / to full in brackets. ``first`` is one run's summary
    (the evaluation settings every run shares)."""
    headers = ["run", "clean", f"PGD-{first['pgd_steps']}"]
    if any(r.get("autoattack") is not None for r in rows):
        headers.append(f"AutoAttack (n={first.get('autoattack_n')})")
    keys = ("clean", "pgd", "autoattack")[:len(headers) - 1]
    body = [[row["run"], *(_with_differences(row, key) + (f" {FLAG_MARK}" if key == "autoattack"
                                                           and row.get("autoattack_flags") else "")
                           for key in keys)] for row in rows]
    note = (f"\nAccuracy (%) on the test split (clean and PGD: n={first['n']}), "
            f"{first['norm']} ε={first['eps']:g}; in brackets the difference in points to "
            "base / to full.\n")
    note += "".join(f"\n{FLAG_MARK} {row['run']}: AutoAttack flagged by its own check: "
                    f"{row['autoattack_flags']}\n" for row in rows if row.get("autoattack_flags"))
    return markdown_table(headers, body) + note


def _with_differences(row: dict, key: str) -> str:
    value = row.get(key)
    if value is None:
        return "–"
    deltas = [row.get(f"d_{key}_vs_{ref}") for ref in ("base", "full")]
    shown = " / ".join("–" if d is None else f"{d:+.2f}" for d in deltas)
    return f"{100 * value:.2f} ({shown})"


def csv_text(rows: Sequence[dict]) -> str:
    """Flat records as CSV, the columns in order of first appearance."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _cell(value) -> str:
    """Numbers right-aligned (class "num"), text left-aligned."""
    text = str(value)
    try:
        float(text.removesuffix(" " + FLAG_MARK))
        numeric = True
    except ValueError:
        numeric = text == "–"
    return f"<td class='num'>{html.escape(text)}</td>" if numeric else f"<td>{html.escape(text)}</td>"


def html_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def sweep_comparison_table(sweeps: dict[str, dict[str, list[dict]]],
                           norm: str) -> tuple[list[str], list[list[str]]]:
    """(headers, rows): worst-case accuracy per ε (rows) of every run that swept ``norm``."""
    runs = [label for label, per_norm in sweeps.items() if norm in per_norm]
    worst = {label: {r["eps"]: r["worst_case"] for r in sweeps[label][norm]} for label in runs}
    eps_values = sorted({e for per_eps in worst.values() for e in per_eps})
    rows = [[f"{e:.4g}"] + [pct(worst[label].get(e)) for label in runs] for e in eps_values]
    return [f"ε ({norm})"] + runs, rows


def divergence_table(curves: dict[str, dict[str, float]]) -> tuple[list[str], list[list[str]]]:
    """(headers, rows): one row of per-layer divergences per run."""
    layers = list(dict.fromkeys(k for c in curves.values() for k in c))
    return ["run"] + layers, [[label] + [f"{c.get(k, float('nan')):.3f}" for k in layers]
                              for label, c in curves.items()]


def sanity_table(checked: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    """(headers, rows): one row per check, one column of verdicts per run."""
    names = list(dict.fromkeys(k for s in checked.values() for k in s["checks"]))
    rows = [[name] + [("ok: " if s["checks"][name]["passed"] else "FAIL: ") + s["checks"][name]["message"]
                      if name in s["checks"] else "–" for s in checked.values()] for name in names]
    return ["check"] + list(checked), rows


STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}th,td{border:1px solid #bbb;padding:4px 8px;text-align:left}
th{background:#eee}td.num{text-align:right;font-variant-numeric:tabular-nums}img{max-width:100%;border:1px solid #ddd}
h2{border-bottom:1px solid #ccc;padding-bottom:4px}.meta{color:#666;font-size:13px}"""


def render_html(title: str, sections: list[Section], meta: str) -> str:
    """The report as one self-contained page: every image embedded as base64 PNG."""
    parts = [f"<!DOCTYPE html>\n{REPORT_MARKER}\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
             f"<p class='meta'>{html.escape(meta)}</p>"]
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.text:
            parts.append(f"<p>{html.escape(s.text)}</p>")
        if s.table:
            parts.append(html_table(*s.table))
        if s.image:
            data = base64.b64encode(s.image).decode("ascii")
            parts.append(f"<img alt='{html.escape(s.title)}' src='data:image/png;base64,{data}'>")
    return "\n".join(parts) + "\n</body></html>\n"


def render_markdown(title: str, sections: list[Section], meta: str, image_dir: str) -> str:
    """The report's Markdown twin; its images are the PNG files in ``image_dir``. Every
    text is escaped (:func:`md_escape`): run names, titles and notes show as written,
    never as HTML or Markdown."""
    parts = [REPORT_MARKER + "\n", f"# {md_escape(title)}\n", f"_{md_escape(meta)}_\n"]
    for s in sections:
        parts.append(f"## {md_escape(s.title)}\n")
        if s.text:
            parts.append(md_escape(s.text) + "\n")
        if s.table:
            parts.append(markdown_table(*s.table))
        if s.image:
            parts.append(f"![{md_escape(s.title)}]({quote(f'{image_dir}/{s.image_name}')})\n")
    return "\n".join(parts)
