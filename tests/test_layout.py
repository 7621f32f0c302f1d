"""The layout drawn from the imports: no circles, no arrow pointing up, click in the commands only.

Every .py file of retrieval/, indexer/ and benchmark/ is parsed (nothing is imported) and each
`import` or `from ... import` of a project module is an arrow, including those inside functions
and under TYPE_CHECKING. Layers, bottom up: retrieval, indexer, benchmark, and on top
benchmark/commands, the command-line package that nothing in the library imports.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("retrieval", "indexer", "benchmark")
LAYER = {"retrieval": 0, "indexer": 1, "benchmark": 2}
COMMANDS = "benchmark.commands"
# The entry point's old home: it re-exports `main` so that a console script written by an
# earlier install still starts.
OLD_ENTRY_POINT = "benchmark.cli"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}


def _owner(name: str) -> str | None:
    """The project module that `name` (a module, or a name inside one) refers to."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> Iterator[tuple[str, str, int]]:
    """(imported module, imported name or "", line) for every import of a project module."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _owner(alias.name):
                    yield _owner(alias.name), "", node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1 packages
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                target = f"{base}.{alias.name}"
                if target in MODULES:  # a submodule
                    yield target, "", node.lineno
                elif _owner(base):
                    yield _owner(base), alias.name, node.lineno


ARROWS = {module: {target for target, _, _ in _imports(module)} - {module} for module in MODULES}


def _node(module: str) -> str:
    """Modules of a sub-package count as one: `retrieval.sim.render` -> `retrieval.sim`; modules
    at the top of a package are their own node (`retrieval.manifest`)."""
    return ".".join(module.split(".")[:2]) if MODULES[module].parent.parent != ROOT else module


def _circles(arrows: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one node (Tarjan), each a circle of imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(arrows.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(arrows):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read():
    assert len(MODULES) > 100
    assert "retrieval.sim" in ARROWS["retrieval.synth"] or "retrieval.sim.render" in ARROWS["retrieval.synth"]


def test_no_circle_between_modules():
    assert _circles(ARROWS) == []


def test_no_circle_between_packages():
    """A sub-package and a module beside it must not import each other (the simulator writing
    data sets through the manifest that imports the simulator was such a circle)."""
    grouped: dict[str, set[str]] = {}
    for module, targets in ARROWS.items():
        grouped.setdefault(_node(module), set()).update(
            _node(target) for target in targets if _node(target) != _node(module))
    assert _circles(grouped) == []


def test_no_arrow_points_up():
    upward = [f"{module} -> {target}" for module, targets in ARROWS.items() for target in targets
              if LAYER[target.split(".")[0]] > LAYER[module.split(".")[0]]]
    assert upward == []


def test_the_library_never_imports_the_commands():
    reaching = [f"{module} -> {target}" for module, targets in ARROWS.items()
                if not module.startswith(COMMANDS) and module != OLD_ENTRY_POINT
                for target in targets if target.startswith(COMMANDS)]
    assert reaching == []


def test_click_is_imported_by_the_commands_only():
    clicking = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(name.split(".")[0] == "click" for name in names):
                clicking.append(module)
    assert clicking and all(module.startswith(COMMANDS) for module in clicking), sorted(set(clicking))


def test_no_private_name_is_imported_across_modules():
    private = [f"{module}:{line} imports {name} from {target}"
               for module in MODULES for target, name, line in _imports(module)
               if name.startswith("_") and not name.startswith("__")]
    assert private == []


def test_no_test_imports_another_test():
    tests = ROOT / "tests"
    names = {path.stem for path in tests.glob("test_*.py")}
    reaching = []
    for path in tests.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            imported = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                        else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            reaching += [f"{path.name} imports {name}" for name in imported
                         if name.split(".")[0] in names or name.startswith("tests")]
    assert reaching == []
