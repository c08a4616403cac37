"""The package layering of docs/architecture.md, checked on the source itself.

Every ``import adrnet.X`` / ``from adrnet.X import`` in a module of package P (at any
depth, lazy imports included) must name a package that P may depend on. The rules that
matter most: evaluation and run-directory loading never import the trainer; evaluation
computes and never draws (no matplotlib, no ``adrnet.report``); no two modules import
each other, however far round the circle.
"""

import ast
from pathlib import Path

import adrnet

SRC = Path(adrnet.__file__).parent
BASE = {"errors", "atomic", "locking", "device", "seeds", "registry", "plugins"}
#: package -> the adrnet packages/modules it may import (besides itself and BASE)
ALLOWED = {
    "errors": set(), "atomic": set(), "locking": set(), "device": set(), "seeds": set(),
    "registry": set(), "plugins": set(),
    "config_values": set(),
    "config": {"config_values"},  # the registries it checks names against: looked up by string
    "data": set(),
    # config_values: the bounds of attack budgets and seeds (it imports only base modules)
    "attacks": {"config_values"},
    "objectives": set(),
    "models": {"data"},
    "runs": {"config", "models"},
    # eval computes and writes eval.json: never train, and never report (showing is above it)
    "eval": {"runs", "attacks", "data", "config_values"},
    # report only shows records: it reads run files through runs.records (config.toml,
    # metrics.jsonl, eval.json, the checkpoint's record); of attacks only autoattack_flags,
    # AutoAttack's reliability rule on a record's numbers (so an eval.json written before
    # the rule existed is flagged when shown); it runs no model and no attack: never eval or train
    "report": {"runs", "attacks"},
    # __init__: resume.py stores adrnet.__version__ in each checkpoint's record
    "train": {"__init__", "runs", "objectives", "attacks", "models", "data", "config"},
    "study": {"train", "eval", "report", "runs", "objectives", "attacks", "data", "config"},
    "cli": {"__init__", "study", "train", "eval", "report", "runs", "attacks", "data", "config"},
    # __init__: load_model and the register_* functions, each importing its package lazily
    "__init__": {"runs", "attacks", "data", "models", "objectives"}, "__main__": {"cli"},
}


def adrnet_imports(path: Path) -> set[str]:
    """The top-level adrnet names that the module at ``path`` imports: X for
    ``adrnet.X...`` and for ``from adrnet import X`` when X is a module or package of
    adrnet; "__init__" for a bare ``import adrnet`` and for ``from adrnet import name``
    of anything else (a name adrnet/__init__.py defines)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] == "adrnet" and len(parts) > 1:
                found.add(parts[1])
            elif parts[0] == "adrnet":
                found |= {alias.name if _is_module(SRC, alias.name) else "__init__"
                          for alias in node.names}
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "adrnet":
                    found.add(parts[1] if len(parts) > 1 else "__init__")
    return found


def _is_module(folder: Path, name: str) -> bool:
    return (folder / f"{name}.py").is_file() or (folder / name / "__init__.py").is_file()


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


def test_the_checker_counts_import_adrnet_as_its_init(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import adrnet\nfrom adrnet import load_model\nfrom adrnet import errors\n")
    assert adrnet_imports(module) == {"__init__", "errors"}


# ----------------------------------------------------------------------
# The module-level import graph: every adrnet import of every module, lazy ones included
# ----------------------------------------------------------------------

def module_name(root: Path, path: Path) -> str:
    """``adrnet.x.y`` for ``root/x/y.py``; a package is its __init__: ``adrnet.x``."""
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path, package: str) -> set[tuple[str, str | None]]:
    """(module, name) for every import statement of the module at ``path`` (any depth:
    lazy ones and those under ``if TYPE_CHECKING:`` included): ``import a.b`` gives
    ("a.b", None), ``from a.b import c`` ("a.b", "c"); relative imports are resolved against ``package`` (the module's own
    package); ``importlib.import_module("a")`` and ``__import__("a")`` with a literal
    name count as ``import a``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {(alias.name, None) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            found |= {(base, alias.name) for alias in node.names}
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and (isinstance(node.func, ast.Name) and node.func.id == "__import__"
                   or isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")):
            found.add((node.args[0].value, None))
    return found


def import_graph(root: Path = SRC) -> tuple[dict[str, set[str]], set[str]]:
    """(module -> the adrnet modules it imports, the set of packages) of the library at
    ``root``. ``from adrnet.x import y`` is an edge to module ``adrnet.x.y`` when that is
    a module, else to ``adrnet.x`` (y is a name its __init__ defines)."""
    files = {module_name(root, path): path for path in sorted(root.rglob("*.py"))}
    packages = {name for name, path in files.items() if path.name == "__init__.py"}
    graph = {}
    for name, path in files.items():
        package = name if name in packages else name.rpartition(".")[0]
        targets = set()
        for module, imported in imported_names(path, package):
            if f"{module}.{imported}" in files:
                targets.add(f"{module}.{imported}")
            elif module in files:
                targets.add(module)
        graph[name] = targets
    return graph, packages


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (each a list of modules)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while not group or group[-1] != node:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def import_circles(graph: dict[str, set[str]], packages: set[str]) -> list[list[str]]:
    """Every group of adrnet modules that import one another in a circle, but one kind.

    A circle is a set of modules each reachable from every other through imports. The
    exception is a package's front door: the __init__ of a package P below adrnet may
    import P's own modules (to re-export their names or, like adrnet.cli, to dispatch
    to one module a subcommand) while those modules import helpers from that __init__
    (``from adrnet.cli import add_config_options``). Such a circle stays inside P and
    its order is fixed by P's __init__ alone (a wrong order fails on the first import of
    P, which every test makes). So a group whose modules all lie in one package P, P's
    __init__ among them, is accepted when it falls apart once the edges leaving P's
    __init__ are removed (checked again, the same way, on what is left). Every other
    group is reported: one that reaches outside P (two packages that import each other,
    even through their __init__ files) or that circles between P's modules without P's
    __init__ (a cycle between two modules, as tables.py and report.py once had through
    the report's ``Section``). adrnet's own __init__ gets no exception: every module lies
    inside adrnet, so a circle through it is always two layers importing each other.
    """
    circles = []
    for group in strongly_connected(graph):
        members = set(group)
        if len(group) == 1 and group[0] not in graph[group[0]]:
            continue  # a single module that does not import itself
        common = [parts[0] for parts in zip(*(m.split(".") for m in members)) if len(set(parts)) == 1]
        package = ".".join(common)
        if package not in members or package not in packages or package == "adrnet":
            circles.append(sorted(members))
            continue
        rest = {m: (set() if m == package else graph[m] & members) for m in members}
        circles += import_circles(rest, packages)
    return circles


def test_no_import_circle_between_adrnet_modules():
    graph, packages = import_graph()
    assert "adrnet.report" in graph["adrnet.cli.report"]  # a lazy import, inside cmd_report
    circles = import_circles(graph, packages)
    assert not circles, "modules that import each other:\n" + "\n".join(" <-> ".join(c) for c in circles)


def test_the_circle_finder_tells_a_front_door_from_a_circle(tmp_path):
    root = tmp_path / "adrnet"
    files = {
        "__init__.py": "",
        # a front door: the package's __init__ dispatches to its module, which imports
        # a helper from the __init__ -> accepted
        "door/__init__.py": "def helper(): pass\ndef main():\n    from adrnet.door import sub\n",
        "door/sub.py": "from adrnet.door import helper\n",
        # two modules importing each other, one lazily -> a circle
        "pair/__init__.py": "",
        "pair/a.py": "from adrnet.pair.b import Thing\n",
        "pair/b.py": "class Thing: pass\ndef f():\n    from adrnet.pair import a\n",
        # two packages importing each other through their __init__ files -> a circle
        "up/__init__.py": "from adrnet.up.mod import g\n",
        "up/mod.py": "from adrnet.down import h\ndef g(): pass\n",
        "down/__init__.py": "from adrnet.down.mod import h\n",
        "down/mod.py": "def h():\n    import adrnet.up\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    circles = import_circles(*import_graph(root))
    assert sorted(circles) == [["adrnet.down", "adrnet.down.mod", "adrnet.up", "adrnet.up.mod"],
                               ["adrnet.pair.a", "adrnet.pair.b"]]


def matplotlib_imports(path: Path) -> list[str]:
    """The matplotlib modules that the module at ``path`` imports (lazily or not)."""
    return sorted({module for module, _ in imported_names(path, "") if module.split(".")[0] == "matplotlib"})


def test_eval_never_imports_matplotlib():
    """Evaluation computes; drawing is adrnet.report's (the ``plots`` extra). Checked on
    every import of every module under eval/, lazy ones included, and on every adrnet
    module eval reaches through its imports. (eval may import scikit-learn, lazily, for
    t-SNE.)"""
    graph, _ = import_graph()
    reached = {name for name in graph if name == "adrnet.eval" or name.startswith("adrnet.eval.")}
    todo = list(reached)
    while todo:
        for target in graph[todo.pop()] - reached:
            reached.add(target)
            todo.append(target)
    paths = [path for path in sorted(SRC.rglob("*.py")) if module_name(SRC, path) in reached]
    assert SRC / "eval" / "evaluate.py" in paths
    wrong = [f"{path.relative_to(SRC)} imports {module}" for path in paths for module in matplotlib_imports(path)]
    assert not wrong, "adrnet.eval reaches matplotlib:\n" + "\n".join(wrong)


def test_the_matplotlib_check_sees_every_kind_of_import(tmp_path):
    lines = {"import matplotlib": "matplotlib",
             "def f():\n    from matplotlib.figure import Figure": "matplotlib.figure",
             "import numpy as np, matplotlib.pyplot as plt": "matplotlib.pyplot",
             "def f():\n    return importlib.import_module('matplotlib.colors')": "matplotlib.colors",
             "from sklearn.manifold import TSNE": None}
    for i, (line, expected) in enumerate(lines.items()):
        path = tmp_path / f"m{i}.py"
        path.write_text(line + "\n")
        assert matplotlib_imports(path) == ([expected] if expected else []), line
