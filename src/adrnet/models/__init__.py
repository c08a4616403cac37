"""Model registry for adrnet: every model is a :class:`Classifier` built by name.

The models are those of the ADR paper's experiments (Bui et al., ECCV 2020): SmallCNN
for MNIST / Fashion-MNIST (L∞, ε = 0.3), ResNet-18, PreAct ResNet-18 and WRN-34-10 for
CIFAR-10 (L∞, ε = 8/255), plus a small MLP for 2-D toy data. A registry (not a class
hierarchy) keeps the config a plain name and lets tests parametrize over every model.

    model = build_model("smallcnn", num_classes=10, in_shape=(1, 28, 28),
                        mean=(0.0,), std=(1.0,))
    logits, z = model(x, return_latent=True)      # z: [B, model.latent_dim]
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence

from adrnet.errors import ConfigError
from adrnet.models.classifier import Classifier, Normalize
from adrnet.models.imported import build_imported, factory_options, is_import_path
from adrnet.models.mlp import build_mlp
from adrnet.models.resnet import build_preact_resnet18, build_resnet18
from adrnet.models.smallcnn import build_smallcnn
from adrnet.models.wideresnet import build_wrn, build_wrn34_10
from adrnet.registry import Registry

#: Model builders by name: ``builder(*, num_classes, in_shape, mean, std, latent,
#: **options) -> Classifier``; its extra keyword arguments (with defaults) are the
#: model's ``[model.options]``.
MODELS: Registry[Callable[..., Classifier]] = Registry("model")


def register_model(name: str, builder: Callable[..., Classifier] | None = None, *,
                   replace: bool = False):
    """Add a model (also usable as a decorator, ``@register_model("mine")``).

    ``builder(*, num_classes, in_shape, mean, std, latent, **options)`` returns a
    :class:`Classifier`; any ``nn.Module`` fits into one by its stages, e.g.
    ``Classifier({"features": backbone, "logits": head}, in_shape=in_shape, mean=mean,
    std=std, latent="features")`` (the latent stage's flattened output is ADR's z).
    A config then names it as ``model.name``; a checkpoint stores only its name, so
    loading one needs the same registration (nothing is unpickled)."""
    return MODELS.register(name, builder, replace=replace)


for _name, _builder_fn in (("smallcnn", build_smallcnn), ("resnet18", build_resnet18),
                           ("preact_resnet18", build_preact_resnet18), ("wrn", build_wrn),
                           ("wrn34_10", build_wrn34_10), ("mlp", build_mlp)):
    register_model(_name, _builder_fn)

_COMMON = ("num_classes", "in_shape", "mean", "std", "latent")


def model_options(name: str) -> dict[str, object]:
    """The extra keyword options of model ``name`` with their defaults (an import path's
    factory that takes ``**kwargs``: none listed)."""
    if is_import_path(name):
        return factory_options(name) or {}
    builder = _builder(name)
    params = inspect.signature(builder).parameters.values()
    return {p.name: p.default for p in params if p.name not in _COMMON}


def build_model(name: str, *, num_classes: int, in_shape: Sequence[int],
                mean: Sequence[float], std: Sequence[float], latent: str | None = None,
                **options) -> Classifier:
    """Build registry model ``name``; unknown names or options raise ConfigError.

    ``latent`` names the stage whose flattened output is ADR's z (None: the model's
    default, see docs/method.md). ``name`` may be an import path
    ``"package.module:factory"`` (adrnet.models.imported; its module must be imported
    already). The returned model records how it was built in ``model.spec`` (a JSON-able
    dict), so checkpoints can name and rebuild it.
    """
    if is_import_path(name):
        model = build_imported(name, num_classes=num_classes, in_shape=_check_in_shape(in_shape),
                               mean=mean, std=std, latent=latent, **options)
        model.spec = {"name": name, "num_classes": num_classes, "in_shape": list(in_shape),
                      "mean": _floats(mean), "std": _floats(std), "latent": latent,
                      "options": _plain(dict(options))}
        return model
    allowed = model_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {unknown} for model {name!r}; allowed: {sorted(allowed)}"
        )
    in_shape = _check_in_shape(in_shape)
    model = _builder(name)(num_classes=num_classes, in_shape=in_shape, mean=mean, std=std,
                           latent=latent, **options)
    model.spec = {
        "name": name, "num_classes": num_classes, "in_shape": list(in_shape),
        "mean": _floats(mean), "std": _floats(std),
        "latent": model.latent, "options": _plain({**allowed, **options}),
    }
    return model


def model_from_config(cfg, info=None) -> Classifier:
    """The model a run config describes, for its data set (``info``, a DatasetInfo; default:
    :func:`adrnet.data.describe` of ``cfg.data``), freshly initialised from the current torch
    RNG: what training builds and what a checkpoint is loaded into."""
    from adrnet.data import describe
    info = describe(cfg.data) if info is None else info
    return build_model(cfg.model.name, num_classes=info.num_classes, in_shape=info.shape,
                       mean=info.mean, std=info.std, latent=cfg.model.latent,
                       **cfg.model.options)


def info_from_spec(name: str, spec):
    """The DatasetInfo (shape, classes, normalisation) a model's recorded ``spec`` was built
    for, or None when the record lacks them."""
    from adrnet.data import DatasetInfo
    try:
        return DatasetInfo(name, tuple(int(d) for d in spec["in_shape"]), int(spec["num_classes"]),
                           tuple(map(float, spec["mean"])), tuple(map(float, spec["std"])), False)
    except (KeyError, TypeError, ValueError):
        return None


def _plain(options: dict) -> dict:
    """Tuples as lists, so the spec writes to JSON / TOML and compares equal after."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}


def _floats(values) -> list[float]:
    """Per-channel values exactly as given (already validated by Normalize)."""
    return [float(v) for v in values] if isinstance(values, Iterable) else [float(values)]


def _builder(name: str) -> Callable[..., Classifier]:
    return MODELS.get(name)


def _check_in_shape(in_shape: Sequence[int]) -> tuple[int, ...]:
    try:
        shape = tuple(in_shape)
        valid = bool(shape) and all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape
        )
    except TypeError:
        valid = False
    if not valid:
        raise ConfigError(
            f"in_shape must be a non-empty list of positive integers, e.g. [1, 28, 28] "
            f"or [2], got {in_shape!r}"
        )
    return shape


__all__ = ["MODELS", "Classifier", "Normalize", "build_model", "model_from_config", "model_options",
           "register_model"]
