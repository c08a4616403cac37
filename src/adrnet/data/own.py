"""Your own data from a file: the ``npz`` and ``folder`` data set kinds (docs/own_data.md).

Why data set *kinds*: a registered data set has fixed facts (MNIST is 1x28x28, 10
classes); these two read theirs (input shape, classes, mean/std, a SHA-256 of the data)
from the file a config names under ``[data]``::

    [data]
    name = "npz"              # x_train, y_train, x_test, y_test (optional x_val, y_val)
    path = "mine.npz"         # relative to the current directory, like data.root
    # layout = "nhwc"         # unset: channels-last when the last axis is 1 or 3 and
    #                         #        the second is not (else channels-first)
    # num_classes = 10        # unset: the largest label + 1
    # mean = [0.5]  std = [0.25]   # unset: per channel, on the file's training split

    [data]
    name = "folder"           # path/train/<class>/*.png|jpg, path/test/<class>/*,
    path = "images"           # optional path/val/<class>/*; classes sorted by name
    # resize = [32, 32]       # unset: every image must have the same size

They join :data:`adrnet.data.DATASETS` with the metadata ``from_file=True``,
``describe(data_config) -> DatasetInfo`` and ``read(data_config) -> Splits``, through
which :func:`adrnet.data.describe` and :func:`adrnet.data.load` dispatch; a user's own
file kind registers the same three. Files are read with ``numpy.load(allow_pickle=False)``
and Pillow: nothing is unpickled. Every mistake in a file is one :class:`DataError` naming
the file (and the image, or the array) and what to do; a file that does not fit in the
memory available is refused before it is read, saying how much it needs.
"""

from __future__ import annotations

import hashlib
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from adrnet.data.info import DATASETS, DatasetInfo, Splits, TensorPair
from adrnet.errors import ConfigError, DataError

NPZ_HOW = ("set data.path to an .npz file with arrays x_train, y_train, x_test, y_test "
           "(optional x_val, y_val), e.g. numpy.savez('mine.npz', x_train=..., ...); see "
           "docs/own_data.md")
FOLDER_HOW = ("set data.path to a folder with train/<class>/*.png|jpg and test/<class>/* "
              "(optional val/<class>/*); see docs/own_data.md")
#: Image formats an image folder may hold (Pillow decodes them; nothing else is tried).
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")
_SPLITS = ("train", "val", "test")
_GIB = 2 ** 30


# ----------------------------------------------------------------------------- helpers
def available_memory() -> int | None:
    """Bytes of memory available to a new allocation: MemAvailable of /proc/meminfo, else
    the free physical pages (os.sysconf), else None (unknown: nothing is refused)."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gib(count: float) -> str:
    return f"{count / _GIB:.1f} GiB" if count >= _GIB / 10 else f"{count / 2 ** 20:.1f} MiB"


def check_memory(source: str, stored: int, needed: int) -> None:
    """Refuse data whose loading needs more memory than is available, before reading it."""
    free = available_memory()
    if free is not None and needed > free:
        raise DataError(f"{source} is too large to hold in memory: its {_gib(stored)} of data "
                        f"need {_gib(needed)} once loaded (as float32 inputs), and this machine "
                        f"has {_gib(free)} available; use a smaller file (fewer or smaller "
                        "images) or a machine with more memory")


def _path(data) -> Path:
    path = Path(os.path.expanduser(str(data.path)))
    return path


def _stat_key(path: Path) -> tuple:
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)


def _default_val_size(count: int) -> int:
    """A tenth of the training split, at most 5000 (at least one when there are two)."""
    return min(5000, max(1 if count > 1 else 0, count // 10))


def _mean_std(x: np.ndarray, scale: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (axis 1) mean and standard deviation of ``x / scale``, in chunks of
    float64 (no float copy of the whole array); a constant channel gets std 1."""
    channels = x.shape[1]
    total = np.zeros(channels)
    squares = np.zeros(channels)
    step = max(1, (1 << 24) // max(1, math.prod(x.shape[1:])))
    for start in range(0, x.shape[0], step):
        chunk = x[start:start + step].astype(np.float64) / scale
        chunk = chunk.reshape(chunk.shape[0], channels, -1)
        total += chunk.sum(axis=(0, 2))
        squares += np.square(chunk).sum(axis=(0, 2))
    count = x.shape[0] * (math.prod(x.shape[2:]) if x.ndim > 2 else 1)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - np.square(mean), 0.0))
    return (tuple(float(round(m, 6)) for m in mean),
            tuple(float(round(s, 6)) if s > 1e-6 else 1.0 for s in std))


def _given_stats(data, channels: int) -> tuple[tuple | None, tuple | None]:
    """data.mean / data.std as one value per channel (a single value: for every channel)."""
    out = []
    for key in ("mean", "std"):
        values = getattr(data, key, None)
        if values is None:
            out.append(None)
            continue
        values = tuple(float(v) for v in values)
        if len(values) == 1:
            values = values * channels
        if len(values) != channels:
            raise ConfigError(f"config key 'data.{key}' has {len(values)} values but the data "
                              f"have {channels} channels: give one per channel (or one for all)")
        out.append(values)
    return out[0], out[1]


def _statistics(data, channels: int, x_train: np.ndarray, scale: float):
    mean, std = _given_stats(data, channels)
    if mean is None or std is None:
        computed = _mean_std(x_train, scale)
        mean, std = mean or computed[0], std or computed[1]
    return mean, std


def _labels(source: str, arrays: dict, num_classes: int | None) -> int:
    """The number of classes (given, or the largest training label + 1), after checking
    every split's labels against it; a class with no training example is refused when it
    was computed."""
    found = {key: arrays[key] for key in arrays}
    top, low = int(found["y_train"].max()), int(found["y_train"].min())
    classes = num_classes if num_classes is not None else top + 1
    for key, y in found.items():
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= classes):
            where = ("given by data.num_classes" if num_classes is not None
                     else "the largest training label + 1")
            raise DataError(f"{source}: {key} holds labels outside [0, {classes}) (found "
                            f"{int(y.min())}..{int(y.max())}; {classes} classes, {where}); "
                            "labels must be 0 .. num_classes - 1")
    if classes < 2:
        raise DataError(f"{source}: the labels name {classes} class(es) (found {low}..{top}); "
                        "a classifier needs at least 2")
    if num_classes is None:
        missing = sorted(set(range(classes)) - set(np.unique(found["y_train"]).tolist()))
        if missing:
            more = f", {len(missing)} classes in all" if len(missing) > 1 else ""
            raise DataError(f"{source}: class {missing[0]} has no training example (labels "
                            f"found: {low}..{top}{more}); labels must be 0 .. num_classes - 1, "
                            "or set data.num_classes")
    return classes


def _to_pair(x: np.ndarray, y: np.ndarray) -> TensorPair:
    """uint8 -> k/255 float32 (as adrnet's own data sets), floats -> float32; int64 labels."""
    if x.dtype == np.uint8:
        tensor = torch.from_numpy(x.astype(np.float32)).div_(255)
    else:
        tensor = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return TensorPair(tensor, torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)))


def _splits(data, pairs: dict[str, tuple[np.ndarray, np.ndarray]]) -> Splits:
    """Train / validation / test: the file's val split when it has one and data.val_size is
    unset; else ``val_size`` (default a tenth, at most 5000) held out of the training split
    (pooled with the file's val split) by a seeded permutation, as for adrnet's data sets."""
    from adrnet.data.splits import holdout
    val_size, seed = getattr(data, "val_size", None), getattr(data, "split_seed", 0)
    test = _to_pair(*pairs["test"])
    if "val" in pairs and val_size is None:
        return Splits(_to_pair(*pairs["train"]), _to_pair(*pairs["val"]), test)
    train = pairs["train"] if "val" not in pairs else tuple(
        np.concatenate([a, b]) for a, b in zip(pairs["train"], pairs["val"]))
    chosen = _default_val_size(len(train[1])) if val_size is None else val_size
    return Splits(*holdout(_to_pair(*train), chosen, seed), test)


# ----------------------------------------------------------------------------- npz
@dataclass(frozen=True)
class _Header:
    shape: tuple[int, ...]
    dtype: np.dtype


def _npz_headers(path: Path, source: str) -> dict[str, _Header]:
    """Each array's shape and dtype, read from the .npy headers inside the zip (no data)."""
    try:
        with zipfile.ZipFile(path) as archive:
            headers = {}
            for member in archive.namelist():
                if not member.endswith(".npy"):
                    continue
                with archive.open(member) as handle:
                    version = np.lib.format.read_magic(handle)
                    reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                              else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = reader(handle)
                headers[member[:-4]] = _Header(tuple(int(d) for d in shape), np.dtype(dtype))
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise DataError(f"{source} is not an .npz file (a zip of .npy arrays, as numpy.savez "
                        f"writes): {exc}") from None
    return headers


def _npz_layout(data, source: str, key: str, shape: tuple[int, ...]) -> str:
    """How an array of ``shape`` holds its values: "nchw", "nhwc", "nhw" or "nf"."""
    if len(shape) == 2:
        return "nf"
    if len(shape) == 3:
        return "nhw"
    if len(shape) != 4:
        raise DataError(f"{source}: {key} has shape {list(shape)}; give images [N, H, W, C] or "
                        "[N, C, H, W] (or [N, H, W] grey-scale, or [N, features])")
    layout = getattr(data, "layout", None)
    if layout is not None:
        return layout
    return "nhwc" if shape[-1] in (1, 3) and shape[1] not in (1, 3) else "nchw"


def _example_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    if layout == "nhwc":
        return (shape[3], shape[1], shape[2])
    if layout == "nhw":
        return (1, shape[1], shape[2])
    return tuple(shape[1:])


def _as_nchw(x: np.ndarray, layout: str) -> np.ndarray:
    if layout == "nhwc":
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    if layout == "nhw":
        return x[:, None]
    return x


@dataclass(frozen=True)
class _Read:
    info: DatasetInfo
    pairs: dict  # split -> (x uint8 or float32 NCHW, y int64)


def _npz_check_headers(data, source: str, headers: dict[str, _Header]):
    """The splits present and their layout and per-example shape, from the headers only."""
    required = ("x_train", "y_train", "x_test", "y_test")
    missing = [k for k in required if k not in headers]
    if missing:
        raise DataError(f"{source} lacks the array(s) {', '.join(missing)} (it holds "
                        f"{', '.join(sorted(headers)) or 'none'}); {NPZ_HOW}")
    if ("x_val" in headers) != ("y_val" in headers):
        raise DataError(f"{source} holds only one of x_val and y_val; give both or neither")
    splits = [s for s in _SPLITS if f"x_{s}" in headers]
    example, layouts = None, {}
    for split in splits:
        for key in (f"x_{split}", f"y_{split}"):
            if headers[key].dtype.hasobject:
                raise DataError(f"{source}: {key} holds Python objects (dtype object), which "
                                "adrnet does not unpickle; save arrays of numbers")
        x, y = headers[f"x_{split}"], headers[f"y_{split}"]
        if x.shape[0] == 0:
            raise DataError(f"{source}: the {split} split is empty (x_{split} has shape "
                            f"{list(x.shape)}); every split needs at least one example")
        if x.dtype != np.uint8 and x.dtype.kind != "f":
            raise DataError(f"{source}: x_{split} has dtype {x.dtype}; give uint8 pixels (0-255) "
                            "or floats in [0, 1]")
        if len(y.shape) != 1 or y.shape[0] != x.shape[0] or y.dtype.kind not in "iu":
            raise DataError(f"{source}: y_{split} must hold {x.shape[0]} integer labels (one "
                            f"per row of x_{split}), got shape {list(y.shape)} of {y.dtype}")
        layouts[split] = _npz_layout(data, source, f"x_{split}", x.shape)
        shape = _example_shape(x.shape, layouts[split])
        if example is not None and shape != example:
            raise DataError(f"{source}: x_{split} holds examples of shape {list(shape)} but "
                            f"x_train's are {list(example)}; every split must have the same shape")
        example = shape
    return splits, layouts, example


def _check_values(source: str, key: str, x: np.ndarray) -> None:
    if x.dtype == np.uint8:
        return
    finite = np.isfinite(x)
    if not finite.all():
        raise DataError(f"{source}: {key} holds {int((~finite).sum())} NaN or infinite "
                        "value(s); inputs must be finite floats in [0, 1] (or uint8 pixels)")
    low, high = float(x.min()), float(x.max())
    if low < 0 or high > 1:
        raise DataError(f"{source}: {key} holds values in [{low:g}, {high:g}], outside [0, 1]; "
                        "scale float pixels to [0, 1] (divide 0-255 values by 255) or save "
                        "them as uint8")


def _read_npz(data) -> _Read:
    path = _path(data)
    source = f"data.path {path}"
    if not path.is_file():
        raise DataError(f"{source}: no such file" + (" (it is a folder: use data.name = "
                        "\"folder\")" if path.is_dir() else f"; {NPZ_HOW}"))
    headers = _npz_headers(path, source)
    splits, layouts, example = _npz_check_headers(data, source, headers)
    stored = sum(math.prod(headers[f"{p}_{s}"].shape) * headers[f"{p}_{s}"].dtype.itemsize
                 for s in splits for p in "xy")
    floats = sum(math.prod(headers[f"x_{s}"].shape) * 4 + headers[f"y_{s}"].shape[0] * 8
                 for s in splits)
    copies = stored + sum(math.prod(headers[f"x_{s}"].shape) for s in splits if layouts[s] == "nhwc")
    check_memory(source, stored, copies + floats)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {f"{p}_{s}": archive[f"{p}_{s}"] for s in splits for p in "xy"}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{source} cannot be read ({type(exc).__name__}: {exc}); save it again "
                        "with numpy.savez") from None
    pairs = {}
    for split in splits:
        x = arrays[f"x_{split}"]
        _check_values(source, f"x_{split}", x)
        pairs[split] = (_as_nchw(x, layouts[split]), arrays[f"y_{split}"].astype(np.int64))
    classes = _labels(source, {f"y_{s}": pairs[s][1] for s in splits},
                      getattr(data, "num_classes", None))
    scale = 255.0 if pairs["train"][0].dtype == np.uint8 else 1.0
    mean, std = _statistics(data, example[0], pairs["train"][0], scale)
    info = DatasetInfo(data.name, example, classes, mean, std, False, NPZ_HOW,
                       sha256=_file_sha256(path))
    return _Read(info, pairs)


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


# ----------------------------------------------------------------------------- folder
def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise DataError("reading an image folder needs Pillow: pip install Pillow") from None
    return Image


_MODES = {"L": 1, "1": 1, "RGB": 3, "P": 3}  # P (palette) and 1 (bi-level) are converted


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _folder_files(root: Path, source: str) -> tuple[tuple[str, ...], dict[str, list]]:
    """The class names (train/'s folders, sorted) and each split's (file, label) list."""
    train = root / "train"
    if not root.is_dir():
        raise DataError(f"{source}: no such folder" + (" (it is a file: use data.name = \"npz\" "
                        "for an .npz file)" if root.is_file() else f"; {FOLDER_HOW}"))
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise DataError(f"{source} has no {split}/ folder; {FOLDER_HOW}")
    classes = []
    for entry in _visible(train):
        if not entry.is_dir():
            raise DataError(f"{source}: train/{entry.name} is a file; train/ holds one folder "
                            "per class (train/<class>/*.png)")
        classes.append(entry.name)
    if len(classes) < 2:
        raise DataError(f"{source}: train/ has {len(classes)} class folder(s) "
                        f"({', '.join(classes) or 'none'}); a classifier needs at least 2")
    files = {}
    for split in _SPLITS:
        folder = root / split
        if not folder.is_dir():
            continue
        found = []
        for entry in _visible(folder):
            if not entry.is_dir():
                raise DataError(f"{source}: {split}/{entry.name} is a file; {split}/ holds one "
                                "folder per class")
            if entry.name not in classes:
                raise DataError(f"{source}: {split}/{entry.name} is not a class of train/ "
                                f"(whose classes are {', '.join(classes[:20])})")
            images = _visible(entry)
            if not images:
                raise DataError(f"{source}: class {entry.name!r} has no images in "
                                f"{split}/{entry.name}/; put images there or remove the folder")
            for image in images:
                if image.is_dir():
                    raise DataError(f"{source}: {split}/{entry.name}/{image.name} is a folder; "
                                    "a class folder holds image files only")
                found.append((image, classes.index(entry.name)))
        if not found:
            raise DataError(f"{source}: the {split} split is empty ({split}/ has no class "
                            "folders with images)")
        files[split] = found
    return tuple(classes), files


def _open_image(Image, path: Path, rel: str):
    try:
        return Image.open(path, formats=IMAGE_FORMATS)
    except Exception as exc:  # UnidentifiedImageError, DecompressionBombError, OSError...
        raise DataError(f"{rel} is not an image adrnet reads ({type(exc).__name__}: {exc}); "
                        f"a class folder holds images only ({', '.join(IMAGE_FORMATS)})") from None


def _read_folder(data) -> _Read:
    Image = _pillow()
    root = _path(data)
    source = f"data.path {root}"
    classes, files = _folder_files(root, source)
    resize = getattr(data, "resize", None)
    first = None  # (relative path, size, channels)
    count = 0
    for split, items in files.items():  # pass 1: headers only (size, mode)
        for path, _ in items:
            rel = f"{source}: {path.relative_to(root)}"
            with _open_image(Image, path, rel) as image:
                size, mode = image.size, image.mode
            if mode not in _MODES:
                raise DataError(f"{rel} has mode {mode}; adrnet reads grey-scale (L) and RGB "
                                "images: convert it (e.g. PIL's image.convert('RGB'))")
            if first is None:
                first = (path.relative_to(root), size, _MODES[mode])
            elif _MODES[mode] != first[2]:
                raise DataError(f"{rel} is {'RGB' if _MODES[mode] == 3 else 'grey-scale'} but "
                                f"{first[0]} is {'RGB' if first[2] == 3 else 'grey-scale'}; "
                                "all images must have the same mode (convert them)")
            elif resize is None and size != first[1]:
                raise DataError(f"{rel} is {size[0]}x{size[1]} (width x height) but {first[0]} "
                                f"is {first[1][0]}x{first[1][1]}; all images must have one size, "
                                "or set data.resize = [H, W] to resize them")
            count += 1
    if getattr(data, "num_classes", None) not in (None, len(classes)):
        raise ConfigError(f"config key 'data.num_classes' is {data.num_classes} but {source} "
                          f"has {len(classes)} class folders; leave it unset for a folder")
    channels = first[2]
    height, width = resize if resize is not None else (first[1][1], first[1][0])
    per_image = channels * height * width
    stored = sum(path.stat().st_size for items in files.values() for path, _ in items)
    check_memory(source, stored, count * per_image * 5)
    pairs = {}
    digest = hashlib.sha256()
    for split, items in files.items():  # pass 2: decode
        x = np.empty((len(items), height, width, channels), dtype=np.uint8)
        for i, (path, _) in enumerate(items):
            rel = f"{source}: {path.relative_to(root)}"
            raw = path.read_bytes()
            digest.update(f"{path.relative_to(root).as_posix()}\0{len(raw)}\0".encode())
            digest.update(raw)
            try:
                with _open_image(Image, path, rel) as image:
                    image = image.convert("RGB" if channels == 3 else "L")
                    if image.size != (width, height):
                        image = image.resize((width, height), Image.Resampling.BILINEAR)
                    pixels = np.asarray(image, dtype=np.uint8)
            except DataError:
                raise
            except Exception as exc:  # a truncated or damaged file
                raise DataError(f"{rel} cannot be decoded ({type(exc).__name__}: {exc}); "
                                "replace or remove it") from None
            x[i] = pixels.reshape(height, width, channels)
        y = np.array([label for _, label in items], dtype=np.int64)
        pairs[split] = (np.ascontiguousarray(x.transpose(0, 3, 1, 2)), y)
    mean, std = _statistics(data, channels, pairs["train"][0], 255.0)
    info = DatasetInfo(data.name, (channels, height, width), len(classes), mean, std, False,
                       FOLDER_HOW, classes=classes, sha256=digest.hexdigest())
    return _Read(info, pairs)


# ----------------------------------------------------------------------------- the kinds
_CACHE: dict[tuple, DatasetInfo] = {}


def _cache_key(data) -> tuple:
    path = _path(data)
    try:
        if path.is_dir():
            stamps = tuple(_stat_key(p) for p in sorted(path.rglob("*")))
        else:
            stamps = _stat_key(path)
    except OSError:
        return ()
    return (data.name, stamps, getattr(data, "layout", None), getattr(data, "resize", None),
            getattr(data, "num_classes", None), getattr(data, "mean", None),
            getattr(data, "std", None))


def file_kind(reader):
    """``describe`` and ``read`` of a file kind whose ``reader(data) -> _Read`` reads it."""
    def describe(data) -> DatasetInfo:
        key = _cache_key(data)
        if key and key in _CACHE:
            return _CACHE[key]
        info = reader(data).info
        if key:
            _CACHE[key] = info
        return info

    def read(data) -> Splits:
        result = reader(data)
        key = _cache_key(data)
        if key:
            _CACHE[key] = result.info
        return _splits(data, result.pairs)

    return describe, read


def _needs_path(name):
    def load(root, val_size, seed):
        raise ConfigError(f"data set {name!r} reads the file data.path names: load it with "
                          "adrnet.data.load(cfg.data) (or describe(cfg.data)), not by name")
    return load


for _name, _reader, _how, _keys in (
        ("npz", _read_npz, NPZ_HOW, ("path", "layout", "num_classes")),
        ("folder", _read_folder, FOLDER_HOW, ("path", "resize", "num_classes"))):
    _describe, _read = file_kind(_reader)
    # The registry's entry only names the kind; its facts come from the file (describe).
    DATASETS.register(_name, DatasetInfo(_name, (), 0, (), (), False, _how), load=_needs_path(_name),
                      val_size=None, from_file=True, describe=_describe, read=_read, keys=_keys)
