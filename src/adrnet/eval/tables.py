"""Small text, Markdown and HTML tables of evaluation results.

Why: `adrnet eval` prints its numbers and the report shows them across runs;
both read the same ``eval.json`` record, so one module formats it. Accuracies
are percentages of the n evaluated examples; "worst case" is the per-example
worst case over every attack (Croce & Hein 2020). Threat model: as recorded.
"""

from __future__ import annotations

import html
from typing import Sequence

from adrnet.eval.sweep import sweep_table_markdown


def pct(value) -> str:
    return "–" if value is None else f"{100 * float(value):.2f}"


def format_eval(record: dict) -> str:
    """Plain-text summary of one ``eval.json`` record, for the terminal."""
    head = (f"{record.get('dataset')} / {record.get('model')} / {record.get('objective')}: "
            f"{record['split']} split, n={record['n']}, {record['norm']} eps={record['eps']:.4g}")
    rows = [("clean", record["clean_accuracy"])]
    rows += list(record["attack_accuracy"].items())
    rows.append(("worst case", record["worst_case_accuracy"]))
    width = max(len(name) for name, _ in rows) + 2
    lines = [head, f"{'attack':<{width}}accuracy (%)"]
    lines += [f"{name:<{width}}{pct(value):>8}" for name, value in rows]
    for norm, sweep in (record.get("sweeps") or {}).items():
        lines += [f"eps sweep ({norm}), accuracy (%):", sweep_table_markdown(sweep, norm).rstrip()]
    sanity = record.get("sanity")
    if sanity:
        lines.append("sanity checks: " + ("all passed" if sanity["passed"] else
                                          "FLAGGED " + ", ".join(sanity["flags"])))
        lines += [f"  [{'ok' if c['passed'] else 'FAIL'}] {name}: {c['message']}"
                  for name, c in sanity["checks"].items()]
    return "\n".join(lines)


def results_table(runs: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of the robust-accuracy table across runs (one row per run)."""
    attacks = list(dict.fromkeys(a for r in runs.values() for a in r.get("attack_accuracy", {})))
    headers = ["run", "checkpoint", "objective", "split", "n", "threat", "clean"] + attacks + ["worst case", "sanity"]
    rows = []
    for label, r in runs.items():
        sanity = r.get("sanity")
        flag = "–" if not sanity else ("passed" if sanity["passed"] else "flags: " + ", ".join(sanity["flags"]))
        rows.append([label, str(r.get("which", "")), str(r.get("objective", "")), r["split"], str(r["n"]),
                     f"{r['norm']} {r['eps']:.4g}", pct(r["clean_accuracy"])] +
                    [pct(r["attack_accuracy"].get(a)) for a in attacks] +
                    [pct(r["worst_case_accuracy"]), flag])
    return headers, rows


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    """Numbers right-aligned (class "num"), text left-aligned."""
    text = str(value)
    try:
        float(text)
        numeric = True
    except ValueError:
        numeric = text == "–"
    return f"<td class='num'>{html.escape(text)}</td>" if numeric else f"<td>{html.escape(text)}</td>"


def html_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
