"""Importing a user's own modules, whose registrations extend adrnet.

Why: a model, data set, loss term or attack is added by a module that calls
``adrnet.register_*`` when it is imported. The command line imports such modules when
told to (``--import MODULE``, or ``modules = [...]`` under ``[plugins]`` in a config file
the user gives), before the config's names are checked. A checkpoint's record is never a
reason to import anything: loading a run trained with a plugin needs the same ``--import``
(or the import in the user's Python), so a file never chooses code to run. The same holds
for a model named by its import path (``model.name = "package.module:factory"``): its
module is imported when a config the user gives names it, never for a checkpoint.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Iterable

from adrnet.errors import ConfigError


def import_plugins(modules: Iterable[str]) -> None:
    """Import each module (dotted name, e.g. ``mylab.adrnet_plugins``) once. The current
    directory is searched first, as ``python -m`` does, so ``--import my_plugin`` finds
    ./my_plugin.py. A name that is not a module name, a module that is not found or one
    whose import fails gets one clear error."""
    for name in modules:
        if not isinstance(name, str) or not all(p.isidentifier() for p in name.split(".")):
            raise ConfigError(f"plugin module {name!r} is not a module name (like mylab.plugins)")
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not name.startswith(exc.name):
                raise _failed(name, exc) from exc
            raise ConfigError(f"plugin module {name!r} not found (looked in the current "
                              "directory and on sys.path); give its dotted name, e.g. "
                              "--import my_plugin for ./my_plugin.py") from None
        except ConfigError as exc:
            raise ConfigError(f"plugin module {name!r}: {exc}") from None
        except Exception as exc:  # the user's code: say which module failed, and how
            raise _failed(name, exc) from exc


_IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def split_import_path(name: str) -> tuple[str, str]:
    """("package.module", "factory") of a model's import path ``"package.module:factory"``
    (config key model.name), or a ConfigError showing the form. Imports nothing."""
    if not isinstance(name, str) or not _IMPORT_PATH.match(name):
        raise ConfigError(f"config key 'model.name' = {name!r} is neither a registered model nor "
                          "an import path of the form package.module:factory")
    module, _, attribute = name.partition(":")
    return module, attribute


def import_model_module(name: str) -> None:
    """Import the module of import path ``name``, which the user named (in a config file they
    gave, or with ``adrnet eval --model``); one clear error when it is missing or fails."""
    module, _ = split_import_path(name)
    try:
        import_plugins([module])
    except ConfigError as exc:
        raise ConfigError(f"model {name!r}: {exc}") from None


def _failed(name: str, exc: BaseException) -> ConfigError:
    return ConfigError(f"importing plugin module {name!r} failed: {type(exc).__name__}: {exc}")
