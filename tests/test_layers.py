"""The package layering of docs/architecture.md, checked on the source itself.

Every ``import adrnet.X`` / ``from adrnet.X import`` in a module of package P (at any
depth, lazy imports included) must name a package that P may depend on. The rule that
matters most: evaluation and run-directory loading never import the trainer.
"""

import ast
from pathlib import Path

import adrnet

SRC = Path(adrnet.__file__).parent
BASE = {"errors", "atomic", "locking", "device", "seeds"}
#: package -> the adrnet packages/modules it may import (besides itself and BASE)
ALLOWED = {
    "errors": set(), "atomic": set(), "locking": set(), "device": set(), "seeds": set(),
    "config_values": set(),
    "config": {"config_values"},  # the registries it checks names against: looked up by string
    "data": set(),
    "attacks": set(),
    "objectives": set(),
    "models": {"data"},
    "runs": {"config", "models"},
    "eval": {"runs", "attacks", "data"},
    "train": {"runs", "objectives", "attacks", "models", "data", "config"},
    "study": {"train", "eval", "runs", "objectives", "data", "config"},
    "cli": {"__init__", "study", "train", "eval", "runs", "attacks", "data", "config"},
    "__init__": {"runs"}, "__main__": {"cli"},
}


def adrnet_imports(path: Path) -> set[str]:
    """The top-level adrnet names that the module at ``path`` imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] == "adrnet":
                found.add(parts[1] if len(parts) > 1 else "__init__")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "adrnet" and len(parts) > 1:
                    found.add(parts[1])
    return found


def package_of(path: Path) -> str:
    relative = path.relative_to(SRC)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def test_every_package_imports_only_what_the_layering_allows():
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        package = package_of(path)
        assert package in ALLOWED, f"{path} belongs to no documented package: add it"
        allowed = ALLOWED[package] | BASE | {package}
        wrong += [f"{path.relative_to(SRC)} imports adrnet.{name}"
                  for name in sorted(adrnet_imports(path) - allowed)]
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_lazy_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from adrnet.train.loop import train\n    import adrnet.eval\n")
    assert adrnet_imports(module) == {"train", "eval"}
