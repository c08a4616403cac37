"""adrnet.report: showing what training and evaluation wrote: tables, figures, the page.

``adrnet.eval`` computes and writes ``eval.json``; this package only shows records: the
terminal summary of ``adrnet eval`` (:func:`format_eval`), the comparison tables of
``adrnet ablate`` (:func:`comparison_markdown`, :func:`csv_text`) and the HTML page and
Markdown twin of ``adrnet report`` (:func:`write_report`). ``tables`` writes every table
(terminal, Markdown, HTML, CSV) and both pages, ``figures`` draws every figure (the only
module that imports matplotlib, the ``plots`` extra, and only when it draws), ``page``
chooses the sections. Run files are read through :mod:`adrnet.runs.records`; nothing here
runs a model, imports the trainer or the evaluator.
"""

from adrnet.report.page import build_sections, unique_labels, write_report
from adrnet.report.tables import (Section, comparison_markdown, csv_text, format_eval,
                                  markdown_table, results_table)

__all__ = ["Section", "build_sections", "comparison_markdown", "csv_text", "format_eval",
           "markdown_table", "results_table", "unique_labels", "write_report"]
