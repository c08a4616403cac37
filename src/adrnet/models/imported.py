"""Any ``nn.Module`` as an adrnet model: ``model.name = "package.module:factory"``.

Why an import path: a user's model (their own module, a torchvision or timm network)
should train with every objective and be evaluated by ``adrnet eval`` without being
registered first. The factory is called as ``factory(num_classes=, in_shape=,
**[model.options])`` and returns an ``nn.Module`` mapping inputs to logits [N, classes].
:class:`ImportedModel` puts adrnet's normalisation (the data set's mean/std) in front of it
and takes ADR's latent z from the submodule ``model.latent`` names, with a forward hook
during the model's one normal forward pass (so gradients and DDP's hooks are those of the
plain module); unset, z is the input of the last submodule with weights (the head's input).

Security: importing the code a config or an option the user gave names is what they asked
for (:func:`import_model_module`, called by ``load_config`` and ``adrnet eval --model``); a
checkpoint's record never causes an import: :func:`resolve_factory` only looks in the
modules already imported, and otherwise says to pass ``--import package.module``.
"""

from __future__ import annotations

import inspect
import math
import sys
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from adrnet.errors import ConfigError
from adrnet.models.classifier import Normalize
from adrnet.plugins import import_model_module, split_import_path

__all__ = ["ImportedModel", "build_imported", "factory_options", "import_model_module",
           "is_import_path", "resolve_factory", "split_import_path"]


def is_import_path(name) -> bool:
    return isinstance(name, str) and ":" in name


def resolve_factory(name: str):
    """The factory ``name`` points to, from the modules already imported (never imports)."""
    module_name, attribute = split_import_path(name)
    module = sys.modules.get(module_name)
    if module is None:
        raise ConfigError(f"model {name!r} comes from module {module_name!r}, which is not "
                          f"imported; pass --import {module_name} (a checkpoint never makes "
                          "adrnet import code), or import it in your Python first")
    target = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(f"model {name!r}: module {module_name!r} has no attribute "
                              f"{attribute!r}") from None
    if not callable(target):
        raise ConfigError(f"model {name!r}: {attribute!r} is a {type(target).__name__}, not a "
                          "callable factory(num_classes=, in_shape=, **options) -> nn.Module")
    return target


def factory_options(name: str) -> dict[str, object] | None:
    """The factory's keyword options with their defaults (None: it takes any, **kwargs)."""
    try:
        params = inspect.signature(resolve_factory(name)).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name: p.default for p in params if p.name not in ("num_classes", "in_shape")}


def _check_signature(name: str, factory) -> None:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    missing = [key for key in ("num_classes", "in_shape") if key not in params]
    if missing:
        raise ConfigError(f"model factory {name!r} must take the keyword arguments num_classes "
                          f"and in_shape (and the [model.options]); its signature is "
                          f"{inspect.signature(factory)}")


def _submodule_names(module: nn.Module, limit: int = 20) -> str:
    names = [n for n, _ in module.named_modules() if n]
    shown = ", ".join(names[:limit]) or "none"
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def _default_latent(module: nn.Module) -> str | None:
    """The last submodule (registration order) with weights of its own: its input is z."""
    found = None
    for name, sub in module.named_modules():
        if name and any(True for _ in sub.parameters(recurse=False)):
            found = name
    return found


class ImportedModel(nn.Module):
    """Normalize, then the user's module; ``forward(x, return_latent=True)`` gives (logits,
    z) with z the flattened output of submodule ``latent`` on its last call in the forward
    pass (``latent`` None: the input of the last submodule with weights)."""

    def __init__(self, module: nn.Module, *, in_shape: Sequence[int], mean: Sequence[float],
                 std: Sequence[float], latent: str | None, source: str = "the model"):
        super().__init__()
        self.in_shape = tuple(int(d) for d in in_shape)
        self.normalize = Normalize(mean, std, self.in_shape)
        self.net = module
        names = dict(module.named_modules())
        if latent is not None and (latent not in names or latent == ""):
            raise ConfigError(f"config key 'model.latent': {source} has no submodule {latent!r}; "
                              f"its submodules are {_submodule_names(module)}")
        self._latent_input = latent is None
        self._latent_name = _default_latent(module) if latent is None else latent
        if self._latent_name is None:
            raise ConfigError(f"{source} has no submodule with weights to take the latent z "
                              "from: set model.latent to the submodule whose output is z")
        self.latent = latent
        self.latent_dim = 0

    def forward(self, x: Tensor, return_latent: bool = False):
        x = self.normalize(x)
        if not return_latent:
            return self.net(x)
        captured = []
        target = self.net.get_submodule(self._latent_name)
        if self._latent_input:
            handle = target.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        else:
            handle = target.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            logits = self.net(x)
        finally:
            handle.remove()
        if not captured:
            raise ConfigError(f"the latent submodule {self._latent_name!r} did not run in the "
                              "model's forward pass; set model.latent to one that does")
        z = captured[-1]
        if not isinstance(z, Tensor):
            raise ConfigError(f"the latent submodule {self._latent_name!r} "
                              f"{'takes' if self._latent_input else 'returns'} a "
                              f"{type(z).__name__}, not a tensor; set model.latent to another")
        return logits, z.flatten(1)


def build_imported(name: str, *, num_classes: int, in_shape: Sequence[int],
                   mean: Sequence[float], std: Sequence[float], latent: str | None = None,
                   **options) -> ImportedModel:
    """The model of import path ``name``: the factory's module behind adrnet's
    normalisation, checked once on a batch of two zero inputs (eval mode, RNG untouched) to
    return logits [N, num_classes] and a latent z."""
    factory = resolve_factory(name)
    _check_signature(name, factory)
    allowed = factory_options(name)
    if allowed is not None:
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ConfigError(f"unknown option(s) {unknown} for model {name!r}; its factory takes "
                              f"{sorted(allowed) or 'none'}")
    try:
        module = factory(num_classes=num_classes, in_shape=tuple(in_shape), **options)
    except Exception as exc:  # the user's code: one line naming it and what it raised
        raise ConfigError(f"model factory {name!r} failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(module, nn.Module):
        raise ConfigError(f"model factory {name!r} returned a {type(module).__name__}, not a "
                          "torch.nn.Module")
    model = ImportedModel(module, in_shape=in_shape, mean=mean, std=std, latent=latent,
                          source=f"model {name!r}")
    x = torch.zeros((2,) + model.in_shape)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            out = model(x, return_latent=True)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"model {name!r} fails on inputs of shape {list(x.shape)}: "
                          f"{type(exc).__name__}: {exc}") from None
    finally:
        model.train(was_training)
    logits, z = out
    if not isinstance(logits, Tensor) or tuple(logits.shape) != (2, num_classes):
        got = list(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ConfigError(f"model {name!r} returns {got} for inputs of shape {list(x.shape)}; it "
                          f"must return logits of shape [N, {num_classes}] (N inputs, "
                          f"{num_classes} classes)")
    model.latent_dim = math.prod(z.shape[1:])
    return model
