"""The model a config describes must fit in this machine's memory.

Checked when a config is read (adrnet.config looks this module up by name), before any
weight is allocated: ``model.options = {hidden = [1e11]}`` would otherwise end in the
allocator with a traceback, also when the values come from a checkpoint's record.
"""

from __future__ import annotations

import math
import os

from adrnet.atomic import in_bytes
from adrnet.errors import ConfigError

#: Bytes of one parameter: fp32, the smallest precision a model is built in.
PARAMETER_BYTES = 4
_SIZES: dict = {}  # (builder, options, shape, classes, latent) -> [(name, shape)]


def physical_memory() -> int | None:
    """This machine's memory in bytes (None where the OS does not say). The total, not what
    is free now: a model refused here could not be built on this machine at any time."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_model_fits(cfg, memory: int | None = None) -> None:
    """Refuse ``model.options`` whose model could not be held in memory: a layer (or all
    of them together) whose parameter count x 4 bytes exceeds this machine's memory
    (``model.options = {hidden = [1e11]}`` otherwise fails in the allocator with a
    traceback, also when the values come from a checkpoint's record). The model is built
    on the meta device (shapes only: no memory, no random draws), for registry models on
    registry data sets; a factory of the user's (``package.module:factory``) and data read
    from a file (its shape is known when the run starts) are not checked here."""
    memory = physical_memory() if memory is None else memory
    sizes = _parameter_shapes(cfg)
    if not memory or sizes is None:
        return
    where = f"model '{cfg.model.name}' with model.options {dict(cfg.model.options)!r}"
    total = 0
    for name, shape in sizes:
        count = math.prod(shape)
        total += count
        if count * PARAMETER_BYTES > memory:
            raise ConfigError(
                f"{where} would hold a layer {name} of shape {' x '.join(map(str, shape))} = "
                f"{count} parameters ({in_bytes(count * PARAMETER_BYTES)} at {PARAMETER_BYTES} bytes "
                f"each), more than this machine's memory ({in_bytes(memory)}): choose smaller widths")
    if total * PARAMETER_BYTES > memory:
        raise ConfigError(
            f"{where} would hold {total} parameters ({in_bytes(total * PARAMETER_BYTES)} at "
            f"{PARAMETER_BYTES} bytes each), more than this machine's memory ({in_bytes(memory)}): "
            "choose smaller widths")


def _parameter_shapes(cfg):
    """[(name, shape)] of every parameter and buffer of the config's model, built on the
    meta device; None when it cannot be built that way (the real build then reports)."""
    from adrnet.data import DATASETS, describe
    from adrnet.models import MODELS
    name, data = cfg.model.name, cfg.data.name
    if ":" in name or name not in MODELS or data not in DATASETS \
            or DATASETS.metadata(data).get("from_file"):
        return None
    try:
        info = describe(cfg.data)
    except Exception:  # noqa: BLE001 (the data checks report it)
        return None
    key = (id(MODELS.get(name)), repr(sorted(cfg.model.options.items())), info.shape,
           info.num_classes, cfg.model.latent)
    if key not in _SIZES:
        _SIZES[key] = _meta_shapes(name, info, cfg.model.latent, cfg.model.options)
    return _SIZES[key]


def _meta_shapes(name, info, latent, options):
    import torch
    from torch.overrides import TorchFunctionMode

    from adrnet.models import build_model
    factories = {torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn,
                 torch.randint, torch.empty_strided}

    class OnMeta(TorchFunctionMode):
        """Tensors a builder makes without a device go to the meta device (its
        normalisation constants, made by torch.tensor, stay real and small)."""

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = dict(kwargs or {})
            if func in factories and kwargs.get("device") in (None, "cpu", torch.device("cpu")):
                kwargs["device"] = "meta"
            return func(*args, **kwargs)

    try:
        with torch.random.fork_rng(devices=[]), OnMeta():
            model = build_model(name, num_classes=info.num_classes, in_shape=info.shape,
                                mean=info.mean, std=info.std, latent=latent, **options)
    except (TypeError, RuntimeError, OverflowError) as exc:
        if "overflow" in str(exc).lower():  # a size beyond int64: torch cannot even describe it
            raise ConfigError(f"model '{name}' with model.options {dict(options)!r} asks for a "
                              "layer larger than any memory (a size beyond 2**62 elements): "
                              "choose smaller widths") from None
        return None
    except Exception:  # noqa: BLE001 (a mistake in the options: the real build reports it)
        return None
    tensors = [*model.named_parameters(), *model.named_buffers()]
    return [(n, tuple(t.shape)) for n, t in tensors]

