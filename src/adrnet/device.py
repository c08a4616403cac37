"""Where tensors are computed and in which precision: one home for these facts.

Why one module: training, validation, AWP, the attacks and the evaluation must agree
on what ``device = "auto"`` means, on how a batch is placed (``channels_last`` for
images), on how half precision is entered (autocast) and on where it is left: every
loss is computed in fp32 from bf16/fp16 logits (:func:`as_float32`), so a term never
loses precision to the forward pass's dtype.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch

from adrnet.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")
PRECISION_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def parameter_dtype(precision: str) -> torch.dtype:
    """The dtype of the weights and inputs: float64 for ``fp64``, else float32 (bf16 and
    fp16 are autocast, their weights stay fp32)."""
    return torch.float64 if precision == "fp64" else torch.float32


@contextmanager
def default_dtype(dtype: torch.dtype):
    """Tensors created inside (a model's initial weights) default to ``dtype``. An fp64
    model must be initialised in fp64, not cast from fp32: fp32 initialisers round the
    last bit differently on each CPU, and an fp64 run would inherit that difference."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """The device a user means by ``name``: ``auto`` (CUDA when present, else CPU),
    ``cpu``, ``cuda`` or ``cuda:N``. ``local_rank`` (a torchrun process) picks that
    rank's GPU; a rank without one is refused."""
    if name not in DEVICES and not name.startswith("cuda:"):
        raise ConfigError(f"device {name!r} is unknown; use one of {', '.join(DEVICES)} "
                          "(or cuda:N)")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for but CUDA is not available; "
                          "use device 'cpu' or 'auto'")
    if local_rank is None:
        return torch.device(name) if name.startswith("cuda:") else torch.device(
            "cuda", torch.cuda.current_device())
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise ConfigError(
            f"LOCAL_RANK {local_rank} has no GPU: this machine has {count}; "
            f"use --nproc_per_node={count} or fewer, or device 'cpu' (gloo)")
    return torch.device("cuda", local_rank)


def to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """``x`` on ``device``; image batches in channels_last memory format when asked."""
    x = x.to(device, non_blocking=True)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def autocast_context(device: torch.device, precision: str):
    """Autocast in bf16/fp16 on ``device``, or nothing for fp32 and fp64."""
    if precision not in PRECISION_DTYPES:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=PRECISION_DTYPES[precision])


def as_float32(t: torch.Tensor) -> torch.Tensor:
    """fp32 for half-precision tensors (losses are never computed in bf16/fp16); fp64 stays."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()
