"""``adrnet zoo``: list the models shipped with adrnet, each usable as ``zoo:NAME``
(``adrnet eval zoo:NAME``, ``adrnet.load_model("zoo:NAME")``), with the figures measured
on its weights (docs/zoo.md has the whole table)."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("zoo", help="list the shipped models (adrnet eval zoo:NAME)",
                              description="The trained models that come with adrnet: evaluate one "
                              "with `adrnet eval zoo:NAME`, load it with adrnet.load_model('zoo:NAME').")
    p.set_defaults(func=cmd_zoo)


def cmd_zoo(args) -> int:
    from adrnet.runs.zoo import zoo_names, zoo_record
    for name in zoo_names():
        record = zoo_record(name)
        figures, cfg = record["figures"], record["config"]
        clean, pgd = figures["clean_test"], figures["pgd20_first_200"]
        print(f"zoo:{name:<22} {cfg['data']['name']:<14} clean {100 * clean['correct'] / clean['n']:6.2f}%  "
              f"PGD-20 {100 * pgd['correct'] / pgd['n']:6.2f}% (first {pgd['n']}, eps {pgd['eps']:g})  "
              f"{record['description']}")
    return 0
