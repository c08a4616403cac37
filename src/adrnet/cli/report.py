"""``adrnet report``: one HTML page (and its Markdown twin) comparing evaluated runs,
written by :func:`adrnet.report.write_report`."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("report", help="one HTML page (+ Markdown) comparing evaluated runs",
                              description="Write a self-contained HTML report and its Markdown twin.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", default="report.html",
                   help="HTML file (report.md is written next to it); a file that exists is replaced "
                        "only when an earlier adrnet report wrote it, a run's own files never are")
    p.add_argument("--title", default="adrnet report")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    import sys

    from adrnet.report import write_report
    html_path, md_path = write_report(args.runs, args.out, title=args.title,
                                      warn=lambda line: print(f"warning: {line}", file=sys.stderr))
    print(f"report: {html_path}\nmarkdown: {md_path}")
    return 0
