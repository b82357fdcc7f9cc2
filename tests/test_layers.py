"""The layers' import directions, read from the source: cli -> hydra_plugins -> tools -> app -> plugin, and no
cycle between modules. Every import counts, function-level ones included: an import hidden in a function still
ties the two modules together."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("optimlight", "hydra_plugins")
#: Bottom to top: a module may import its own layer and those below it. `root` is optimlight/__init__.py (the
#: plugin's calls, re-exported); `cli` is the command line and the one place that registers the Hydra plugins.
LAYERS = ("plugin", "root", "app", "tools", "hydra_plugins", "cli")
#: Third-party packages a layer must not import: the plugin is what any LightningModule imports.
FORBIDDEN_PACKAGES = {"plugin": {"hydra", "lightning", "torchvision", "wandb", "pandas"}}
CLI = "optimlight.cli"


def module_name(path: Path, root: Path = REPO) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources(root: Path = REPO) -> dict[str, Path]:
    """Every module of optimlight and of the repository's Hydra plugins, by dotted name."""
    return {module_name(p, root): p for package in PACKAGES for p in sorted((root / package).rglob("*.py"))}


def imported_names(path: Path) -> set[str]:
    """Every name `path` imports, at any depth of the file: `import a.b` gives a.b, `from a import b` gives a and a.b."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def imported_modules(path: Path, known: Iterable[str]) -> set[str]:
    """The modules of `known` that `path` imports, at any depth of the file: `from a import b` is module a.b when
    there is one, else a (`from optimlight.plugin import ConfigError` -> optimlight.plugin); `import a.b.c` is the
    longest known module it names."""
    known = set(known)
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.update(
                f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module for alias in node.names
            )
    found = set()
    for name in names:
        parts = name.split(".")
        module = next((p for p in (".".join(parts[:n]) for n in range(len(parts), 0, -1)) if p in known), None)
        if module is not None:
            found.add(module)
    return found


def layer_of(module: str) -> str:
    if module == "optimlight":
        return "root"
    if module == CLI:
        return "cli"
    if module.startswith("hydra_plugins"):
        return "hydra_plugins"
    return module.split(".")[1]


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The graph's strongly connected components of more than one node (and nodes importing themselves): Tarjan."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


SOURCES = sources()
GRAPH = {name: imported_modules(path, SOURCES) - {name} for name, path in SOURCES.items()}


def test_every_module_sits_in_a_layer():
    assert {layer_of(m) for m in SOURCES} == set(LAYERS)
    assert CLI in SOURCES and any(m.startswith("hydra_plugins.") for m in SOURCES)


@pytest.mark.parametrize("module", sorted(SOURCES))
def test_imports_point_down_only(module):
    rank = LAYERS.index(layer_of(module))
    upward = sorted(m for m in GRAPH[module] if LAYERS.index(layer_of(m)) > rank)
    assert not upward, f"{module} ({layer_of(module)}) imports {upward}"
    banned = sorted(m for m in imported_names(SOURCES[module]) if m.split(".")[0] in FORBIDDEN_PACKAGES.get(layer_of(module), ()))
    assert not banned, f"{module} imports {banned}"


def test_no_import_cycle():
    assert cycles(GRAPH) == []


def test_only_the_cli_imports_the_hydra_plugins():
    importers = sorted(m for m, imports in GRAPH.items() if any(i.startswith("hydra_plugins") for i in imports))
    assert [m for m in importers if not m.startswith("hydra_plugins")] == [CLI]


def test_no_module_of_the_package_imports_the_cli():
    """The CLI is an entry point, as train.py, the bench scripts and the tests are: nothing below it imports it."""
    assert [name for name, imports in GRAPH.items() if CLI in imports] == []


def test_the_checker_sees_upward_imports_and_cycles(tmp_path):
    """The rules can fail: a function-level import is resolved to its module, and a two-module cycle is found."""
    for folder in ("optimlight/plugin", "optimlight/app", "hydra_plugins/x"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "optimlight/plugin/a.py").write_text("def f():\n    from optimlight.app.b import g\n    import hydra\n")
    (tmp_path / "optimlight/app/b.py").write_text("from optimlight.plugin import a\nimport hydra_plugins.x.c\n")
    (tmp_path / "hydra_plugins/x/c.py").write_text("")
    found = sources(tmp_path)
    graph = {name: imported_modules(path, found) for name, path in found.items()}
    assert graph["optimlight.plugin.a"] == {"optimlight.app.b"}
    assert "hydra" in imported_names(found["optimlight.plugin.a"])
    assert graph["optimlight.app.b"] == {"optimlight.plugin.a", "hydra_plugins.x.c"}
    assert cycles(graph) == [["optimlight.app.b", "optimlight.plugin.a"]]
