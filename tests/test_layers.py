"""The three layers' import directions, read from the source: tools -> app -> plugin, and nothing imports the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "optimlight"
LAYERS = ("plugin", "app", "tools")
#: What each layer may import of optimlight, and which third-party packages it must not import.
ALLOWED = {"plugin": {"plugin"}, "app": {"plugin", "app"}, "tools": {"plugin", "app", "tools"}}
FORBIDDEN_PACKAGES = {"plugin": {"hydra", "lightning", "torchvision", "wandb", "pandas"}, "app": set(), "tools": set()}
CLI = "optimlight.app.cli"


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at any depth of the file (function-level imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def layer_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE).parts
    return relative[0] if len(relative) > 1 else "root"


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_sits_in_a_layer():
    assert {layer_of(p) for p in SOURCES} == {"root", *LAYERS}
    assert [p.name for p in SOURCES if layer_of(p) == "root"] == ["__init__.py"]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_only(path):
    layer = layer_of(path)
    allowed = {"plugin"} if layer == "root" else ALLOWED[layer]
    imports = imported_modules(path)
    upward = sorted(m for m in imports if m.startswith("optimlight.") and m.split(".")[1] not in allowed)
    assert not upward, f"{layer} module imports {upward}"
    banned = sorted(m for m in imports if m.split(".")[0] in FORBIDDEN_PACKAGES.get(layer, set()))
    assert not banned, f"{layer} module imports {banned}"


def test_nothing_imports_the_cli_module():
    importers = [
        str(p)
        for p in [*SOURCES, *PACKAGE.parent.joinpath("bench").glob("*.py")]
        if any(m == CLI or m.startswith(CLI + ".") for m in imported_modules(p))
    ]
    assert importers == []


def test_the_checker_sees_an_upward_import(tmp_path):
    """The rule can fail: a plugin file importing the app is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from optimlight.app.data import MEAN\n    import hydra\n")
    assert {"optimlight.app.data", "optimlight.app.data.MEAN", "hydra"} <= imported_modules(bad)
