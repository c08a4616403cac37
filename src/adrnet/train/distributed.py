"""Multi-process data-parallel helpers (torch.distributed, launched by torchrun).

Why this module exists: ADR's global terms (Bui et al., ECCV 2020; docs/method.md,
"Under data-parallel training") pair every adversarial example with every clean
example of the *whole* batch. Under DistributedDataParallel each rank holds only
its shard of b = B / world_size examples, so a naive objective silently pairs
only within shards. Because the clean side of those terms is stop-gradient, the
exact batch-global objective is cheap: :func:`gather_detached` all-gathers sg(z),
sg(p) and y (no differentiable gather), the objective pairs the local
adversarial rows with all B clean columns and averages over the local b x B
matrix, and DDP's gradient averaging over ranks then yields exactly the
single-process mean over B x B pairs.

The other pitfall is BatchNorm: ADR runs the clean and the adversarial batch
through the network in two forward passes before one backward, which DDP's
default per-forward buffer broadcast breaks (see :func:`wrap_ddp`).

Everything here is a thin shell over torch.distributed: the only state is the process
group torch.distributed itself keeps. Without a process group (plain ``python``, or
torchrun with one process) every helper is a cheap no-op, so the training loop calls
them unconditionally. The attack must run on the unwrapped model (``model.module``): a
gradient with respect to the input through the DDP wrapper would involve DDP's forward
hooks for no benefit.
"""

from __future__ import annotations

import datetime
import inspect
import os
import sys
import time
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from adrnet.device import resolve_device
from adrnet.errors import ConfigError, DataError

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank, the number of processes, its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    is_main: bool

    @property
    def distributed(self) -> bool:
        """True when more than one process trains together."""
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(
            f"environment variable {name}={raw!r} is not an integer; launch with "
            "`torchrun --standalone --nproc_per_node=N -m adrnet.cli train ...` "
            "or unset it for a single process"
        ) from None


def setup_distributed(device_pref: str = "auto",
                      timeout: datetime.timedelta | None = None) -> DistInfo:
    """Join the process group torchrun describes, or describe the single process.

    Reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
    MASTER_PORT). With WORLD_SIZE unset or 1 nothing is initialised. Otherwise
    the backend is NCCL on CUDA (device ``cuda:LOCAL_RANK``) and gloo on CPU.
    Calling it again in a process that already joined returns the same answer.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"RANK={rank} / WORLD_SIZE={world_size} are inconsistent; "
                          "let torchrun set them")
    device = resolve_device(device_pref, local_rank if world_size > 1 else None)
    if world_size > 1:
        _init_process_group(device, world_size, timeout)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank,
                    device=device, is_main=rank == 0)


def _init_process_group(device: torch.device, world_size: int,
                        timeout: datetime.timedelta | None) -> None:
    missing = [name for name in _TORCHRUN_VARS if name not in os.environ]
    if missing:
        raise ConfigError(f"WORLD_SIZE={world_size} but {', '.join(missing)} not set; "
                          "launch with `torchrun --standalone --nproc_per_node=N ...`")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs = {} if timeout is None else {"timeout": timeout}
    dist.init_process_group(backend=backend, init_method="env://", **kwargs)


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _collective_device() -> torch.device:
    """The device a tensor must live on for the default group's backend."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def wrap_ddp(model: nn.Module, info: DistInfo) -> nn.Module:
    """Wrap ``model`` (moved to ``info.device``) in DDP when several processes train.

    Buffers are NOT re-broadcast from rank 0 at every forward
    (``broadcast_buffers=False``; ``forward_sync_buffers=False`` on torch >= 2.13,
    which still syncs them once at construction). ADR and TRADES run two forward
    passes (clean, then adversarial) before one backward. BatchNorm's backward
    saves its running statistics; DDP's default broadcast before the second
    forward overwrites those buffers in place, and on many torch releases before
    2.13 the backward then fails with "one of the variables needed for gradient
    computation has been modified by an inplace operation" (pytorch issues 22095,
    65907, 175024; 2.13 hides the version bump). Not broadcasting also saves one
    collective per forward. The cost: each rank's running statistics follow its
    own shard (call :func:`average_buffers` before evaluating or saving).
    SyncBatchNorm would be the other fix, at one all-reduce per BatchNorm layer
    and forward.

    Returns ``model`` itself (on its device) for a single process. The attack must
    be given the unwrapped network: ``getattr(wrapped, "module", wrapped)``.
    """
    model = model.to(info.device)
    if not info.distributed:
        return model
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters:
        no_forward_broadcast = {"forward_sync_buffers": False}
    else:
        no_forward_broadcast = {"broadcast_buffers": False}
    return DistributedDataParallel(model, device_ids=device_ids, **no_forward_broadcast)


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DDP wrapper (or the network itself)."""
    return getattr(model, "module", model)


def gather_detached(tensor: torch.Tensor) -> torch.Tensor:
    """All ranks' ``tensor.detach()`` concatenated along dim 0 in rank order.

    No gradient flows through the result: it is the stop-gradient clean side of
    ADR's global terms. Ranks may hold different numbers of rows (the trailing
    dimensions must agree); every rank receives the same result. Without a
    process group it returns ``tensor.detach()``.
    """
    local = tensor.detach()
    if _world_size() == 1:
        return local
    device = _collective_device()
    sizes = _gather_shapes(local, device)
    longest = max(shape[0] for shape in sizes)
    padded = local.to(device).contiguous()
    if padded.shape[0] < longest:
        filler = padded.new_zeros((longest - padded.shape[0], *padded.shape[1:]))
        padded = torch.cat([padded, filler])
    pieces = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(pieces, padded)
    rows = [piece[: shape[0]] for piece, shape in zip(pieces, sizes)]
    return torch.cat(rows).to(local.device)


def _gather_shapes(local: torch.Tensor, device: torch.device) -> list[tuple[int, ...]]:
    """Every rank's shape; raises the same error on every rank when they disagree."""
    if local.dim() == 0 or local.dim() > 8:
        raise ValueError(f"gather_detached needs a tensor of 1 to 8 dimensions, "
                         f"got shape {tuple(local.shape)}")
    mine = torch.tensor([local.dim(), *local.shape, *[-1] * (8 - local.dim())],
                        dtype=torch.int64, device=device)
    everyone = [torch.empty_like(mine) for _ in range(_world_size())]
    dist.all_gather(everyone, mine)
    shapes = [tuple(int(v) for v in row[1: 1 + int(row[0])]) for row in everyone]
    if len({shape[1:] for shape in shapes}) != 1 or len({len(s) for s in shapes}) != 1:
        raise ValueError(f"gather_detached: ranks hold incompatible shapes {shapes}; "
                         "only dimension 0 may differ")
    return shapes


class RanksDisagree(DataError):
    """Raised by every rank at the same point, right after the collective that showed the
    ranks disagree: :func:`cleanup` may then still meet every rank before leaving, so that
    each rank prints its error line before torchrun stops the ranks that are slower."""


def check_ranks_agree(counts: dict[str, int], sha256: str) -> None:
    """Refuse, on every rank, to train when the ranks loaded different data.

    Why: each rank reads the data itself (``data.root`` on its own node). When one of them
    reads other files, its shards no longer come from the data set the others train on:
    with another size the ranks run different collectives and gloo aborts with "collective
    mismatch" (NCCL hangs), naming no cause; with the same size training silently mixes
    two data sets. One all-gather of each rank's example ``counts`` (split name -> number
    of examples) and the ``sha256`` of its splits (:func:`adrnet.data.kinds.splits_sha256`),
    before any other collective of the run, turns either into the same error on every
    rank, naming the ranks whose data differ from rank 0's. A no-op for a single process.
    """
    if _world_size() == 1:
        return
    digest = bytes.fromhex(sha256)
    words = [int.from_bytes(digest[i:i + 8], "little", signed=True) for i in range(0, 32, 8)]
    splits = list(counts)
    mine = torch.tensor([*counts.values(), *words], dtype=torch.int64,
                        device=_collective_device())
    everyone = [torch.empty_like(mine) for _ in range(_world_size())]
    dist.all_gather(everyone, mine)
    seen = [row.tolist() for row in everyone]
    differing = [rank for rank, row in enumerate(seen) if row != seen[0]]
    if not differing:
        return

    def described(rank: int) -> str:
        sizes = ", ".join(f"{count} {name}" for count, name in zip(seen[rank], splits))
        fingerprint = b"".join(w.to_bytes(8, "little", signed=True)
                               for w in seen[rank][len(splits):]).hex()[:12]
        return f"rank {rank}: {sizes} examples, SHA-256 {fingerprint}…"

    ranks = ("rank " if len(differing) == 1 else "ranks ") + ", ".join(map(str, differing))
    raise RanksDisagree(
        f"{ranks} read other data than rank 0 ({'; '.join(map(described, [0, *differing]))}); "
        "every process must read the same data: make data.root hold the same files on every "
        "node (or give every process the same data settings), then launch again")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over ranks, as a new tensor on ``tensor``'s device."""
    if _world_size() == 1:
        return tensor.detach().clone()
    total = tensor.detach().to(_collective_device(), copy=True)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.to(tensor.device)


def all_reduce_mean(value: torch.Tensor | float) -> torch.Tensor | float:
    """Mean over ranks of a metric: a float for a number, a tensor for a tensor."""
    if isinstance(value, torch.Tensor):
        dtype = value.dtype if value.is_floating_point() else torch.float64
        return all_reduce_sum(value.to(dtype)) / _world_size()
    total = all_reduce_sum(torch.tensor(float(value), dtype=torch.float64))
    return float(total) / _world_size()


def average_buffers(model: nn.Module) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over ranks.

    With per-forward broadcasting off (see :func:`wrap_ddp`) each rank's running
    statistics follow its shard; call this on every rank before validating or
    saving so the model reflects all the data. Integer buffers are left alone.
    """
    if _world_size() == 1:
        return
    for buffer in unwrap(model).buffers():
        if buffer.is_floating_point():
            buffer.copy_(all_reduce_mean(buffer))


def barrier() -> None:
    """Wait for every rank (no-op for a single process)."""
    if _world_size() == 1:
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def cleanup() -> None:
    """Leave the process group, if this process joined one; call it in a ``finally``.

    On the normal path every rank first meets the others in :func:`_drain`. While an
    exception is propagating it neither waits nor, on NCCL, destroys: peers may be stuck
    in another collective, and a collective could hang the job or be matched against
    their operation; exiting lets torchrun stop them. :class:`RanksDisagree` is the
    exception: every rank raises it at the same point, so they still meet.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    if sys.exc_info()[0] is None or isinstance(sys.exc_info()[1], RanksDisagree):
        _drain()
    elif dist.get_backend() == "nccl":
        return
    dist.destroy_process_group()


def _drain(patience_s: float = 5.0, grace_s: float = 0.02) -> None:
    """Meet every rank in a last collective, then wait, without the GIL, until the
    backend's threads have let go of that collective's tensor.

    Why not a plain barrier: gloo's worker thread releases a finished collective a
    moment after ``wait()`` returns, and releasing a tensor that Python created needs the
    GIL. DistributedDataParallel keeps references to the default group (torch 2.13), so
    ``destroy_process_group`` does not join those threads. If the interpreter is already
    finalizing when a worker asks for the GIL, the worker is unwound inside a C++
    destructor and the process aborts after the run is done ("terminate called without
    an active exception", SIGABRT; the core dump showed gloo's worker destroying a
    barrier's prior all-reduce). A gloo barrier holds every collective still in flight;
    an all-reduce holds only its own tensor, whose use count (``Tensor._use_count``)
    falls back to 1 once the worker dropped it. ``.item()`` first waits for the result,
    which on NCCL (asynchronous to the host) means for every rank.

    gloo runs two worker threads, so the other one may still hold an earlier collective;
    ``grace_s`` more of sleep gives it the GIL. That makes the abort rare, not impossible
    (benchmarks/ddp_exit.py counts it). ``patience_s`` bounds the wait; running out of it
    is warned about, since the protection then did not apply.
    """
    token = torch.zeros(1, device=_collective_device())
    dist.all_reduce(token)
    token.item()
    started = time.monotonic()
    while token._use_count() > 1 and time.monotonic() - started < patience_s:
        time.sleep(0.001)
    if token._use_count() > 1:
        warnings.warn(f"the process group's last collective is still held after {patience_s} s; "
                      "the process may abort at exit", RuntimeWarning, stacklevel=3)
    time.sleep(grace_s)
