"""The layering of docs/architecture.md, checked on the source: no import cycle, the training
engine names no task, and every module imports only from its own layer or those below.

The import graph is read with ``ast`` (no module is imported): every ``import jaxcv...`` and
``from jaxcv... import`` statement counts, at module level or inside a function.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

import jaxcv

ROOT = Path(jaxcv.__file__).parent

#: Layers from the bottom; a module may import its own layer and the ones below it.
LAYERS = (
    (
        "jaxcv",
        "jaxcv._xla_flags",
        "jaxcv.types",
        "jaxcv.errors",
        "jaxcv.console",
        "jaxcv.workdir_lock",
    ),
    ("jaxcv.ops",),
    ("jaxcv.models", "jaxcv.data", "jaxcv.eval", "jaxcv.viz", "jaxcv.proposals"),
    ("jaxcv.tasks", "jaxcv.predict"),
    ("jaxcv.recipes",),
    ("jaxcv.train",),
    ("jaxcv.studies", "jaxcv.experiments"),
    ("jaxcv.cli", "jaxcv.__main__"),
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str:
    """The module that ``name`` (a module or a name inside one) lives in."""
    while name not in modules:
        name = name.rpartition(".")[0]
    return name


@functools.cache
def import_graph() -> dict[str, frozenset[str]]:
    """``{module: {jaxcv modules it imports}}`` for every module of the package."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps |= {
                    _resolve(a.name, modules) for a in node.names if a.name.startswith("jaxcv")
                }
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                if base == "jaxcv" or base.startswith("jaxcv."):
                    for alias in node.names:
                        full = f"{base}.{alias.name}"
                        deps.add(_resolve(full if full in modules else base, modules))
        deps.discard(name)
        graph[name] = frozenset(deps)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _is_under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _layer(module: str) -> int:
    best = None
    for level, packages in enumerate(LAYERS):
        for package in packages:
            if _is_under(module, package) and (best is None or len(package) > len(best[1])):
                best = (level, package)
    assert best is not None, f"{module} is in no layer of LAYERS: add it"
    return best[0]


def _is_package_init(module: str, dep: str) -> bool:
    """A package's ``__init__`` gathering its own submodules is not a dependency upwards."""
    return _is_under(dep, module)


def test_the_graph_sees_known_imports():
    graph = import_graph()
    assert "jaxcv.recipes" in graph["jaxcv.train.runtime"]
    assert "jaxcv.tasks.faster_rcnn" in graph["jaxcv.recipes"]
    assert "jaxcv.ops.boxes" in graph["jaxcv.tasks.detection"]


def test_no_import_cycle():
    graph = import_graph()
    # A submodule importing its package's __init__ (which imports the submodule) is how Python
    # packages work, not a cycle between modules: drop those edges.
    graph = {m: {d for d in deps if not _is_under(m, d)} for m, deps in graph.items()}
    assert _cycles(graph) == []


def test_training_engine_imports_no_task():
    graph = import_graph()
    offending = sorted(
        (module, dep)
        for module, deps in graph.items()
        if _is_under(module, "jaxcv.train")
        for dep in deps
        if _is_under(dep, "jaxcv.tasks") and dep not in ("jaxcv.tasks", "jaxcv.tasks.base")
    )
    assert offending == [], "jaxcv.train must read tasks through jaxcv.recipes"


def test_only_the_recipes_name_every_task():
    # A task module is one with a task_from_config; helpers (detection, settings, ...) are not.
    modules = _modules()
    task_modules = {
        m
        for m, path in modules.items()
        if _is_under(m, "jaxcv.tasks") and "\ndef task_from_config(" in path.read_text()
    }
    assert len(task_modules) >= 9, sorted(task_modules)
    importers = {
        m for m, deps in import_graph().items() if len(deps & task_modules) > len(task_modules) // 2
    }
    assert importers <= {"jaxcv.recipes", "jaxcv.tasks"}, importers


@pytest.mark.parametrize("module", sorted(import_graph()))
def test_imports_go_down_the_layers(module):
    upward = sorted(
        dep
        for dep in import_graph()[module]
        if _layer(dep) > _layer(module) and not _is_package_init(module, dep)
    )
    assert upward == [], f"{module} (layer {_layer(module)}) imports upwards: {upward}"
