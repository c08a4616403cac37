"""``load_weights``: any model's weights from a file, for ``adrnet eval --model ... --weights``.

Why: a model trained outside adrnet (a plain ``torch.save(model.state_dict())``, or a
safetensors file) is evaluated by the same attacks as a run. Nothing here runs code from
the file: ``.safetensors`` holds tensors only, and a ``.pt``/``.pth`` state dict is read
with ``torch.load(weights_only=True)``, which refuses any pickle that would build other
objects. The tensors are compared with the model's by name and shape before loading
(:func:`adrnet.runs.load.check_architecture`), so a mismatch is one clear line, and
refused when they hold NaN or inf, as a checkpoint's are. Only a regular file is read (a
FIFO would hang the reader, /dev/zero fill its memory).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from pathlib import Path

import torch
from safetensors.torch import load as safetensors_load

from adrnet.atomic import NotRegularFile, open_regular_file
from adrnet.errors import CheckpointError
from adrnet.runs.checkpoint import CheckpointFiles
from adrnet.runs.load import LoadedCheckpoint, check_architecture

WEIGHTS_SUFFIXES = (".safetensors", ".pt", ".pth")


def read_weights_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict, SHA-256 of the file's bytes) of a .safetensors or .pt/.pth file."""
    path = Path(path)
    if path.suffix not in WEIGHTS_SUFFIXES:
        raise CheckpointError(f"--weights {path}: give a .safetensors file or a .pt/.pth state "
                              "dict (torch.save(model.state_dict(), 'model.pt'))")
    try:
        with open_regular_file(path) as handle:  # a FIFO or a device is refused unread
            data = handle.read()
    except FileNotFoundError:
        raise CheckpointError(f"--weights {path} does not exist") from None
    except NotRegularFile as exc:
        raise CheckpointError(f"--weights {path} is {exc.kind}, not a weights file; give the "
                              "path of a .safetensors or .pt/.pth file") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read --weights {path}: {exc.strerror or exc}") from None
    sha = hashlib.sha256(data).hexdigest()
    if path.suffix == ".safetensors":
        try:
            return safetensors_load(data), sha
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"--weights {path} is not a safetensors file "
                                  f"({type(exc).__name__}: {exc})") from None
    try:
        loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError,
            AttributeError) as exc:
        raise CheckpointError(f"--weights {path} is not a state dict torch.load(weights_only="
                              f"True) accepts ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                              "save model.state_dict() with torch.save, or use safetensors") from None
    return _state_dict(loaded, path), sha


def _state_dict(loaded, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a loaded file: a state dict, or one under "state_dict" / "model"."""
    if isinstance(loaded, dict) and not _all_tensors(loaded):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(loaded.get(key), dict) and _all_tensors(loaded[key]):
                return dict(loaded[key])
    if not isinstance(loaded, dict) or not _all_tensors(loaded) or not loaded:
        raise CheckpointError(f"--weights {path} holds a {type(loaded).__name__}, not a state dict "
                              "(names -> tensors); save model.state_dict()")
    return dict(loaded)


def _all_tensors(table: dict) -> bool:
    return all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in table.items())


def _strip_ddp(weights: dict) -> dict:
    """A DDP-wrapped model's state dict ("module." before every name) as the plain one."""
    if weights and all(k.startswith("module.") for k in weights):
        return {k[len("module."):]: v for k, v in weights.items()}
    return weights


def load_weights(cfg, path: str | os.PathLike, map_location="cpu") -> LoadedCheckpoint:
    """The model ``cfg`` describes (its data set's shape and normalisation) with the weights
    of ``path``: either the whole model's (as adrnet saves them) or, for a model given as
    ``package.module:factory``, those of the user's module alone (a plain state dict of a
    model trained outside adrnet; adrnet's normalisation stays in front of it)."""
    from adrnet.models import model_from_config
    path = Path(path)
    weights, sha = read_weights_file(path)
    weights = _strip_ddp(weights)
    with torch.random.fork_rng(devices=[]):
        model = model_from_config(cfg)
    inner = getattr(model, "net", None)
    target = model
    if inner is not None and set(weights) != set(model.state_dict()):
        target = inner  # the user's module's own names (no "net." prefix, no normalize.*)
    check_architecture(target, weights, f"--weights {path}")  # and finite
    target.load_state_dict(weights)
    return LoadedCheckpoint(model.to(map_location).eval(), cfg, CheckpointFiles(path.resolve()),
                            sha, {})
