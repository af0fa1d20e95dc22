"""The package's layers, read from the source: what may import what (DESIGN.md, Layout)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "swiftseg_ros"


def imports_of(path: Path) -> set[str]:
    """The swiftseg_ros modules a file imports, at any depth (lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] == "swiftseg_ros"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_below(folder: str) -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted((PACKAGE / folder).rglob("*.py"))}


@pytest.mark.parametrize("folder, forbidden", [
    ("replay", ("swiftseg_ros.trainer",)),
    ("synthetic", ("swiftseg_ros.trainer", "swiftseg_ros.replay")),
    ("engine", ("swiftseg_ros.trainer", "swiftseg_ros.replay", "swiftseg_ros.synthetic")),
])
def test_a_lower_layer_imports_nothing_from_the_layers_that_use_it(folder, forbidden):
    wrong = {module: sorted(i for i in imported if i.startswith(forbidden))
             for module, imported in imports_below(folder).items()}
    assert {m: i for m, i in wrong.items() if i} == {}


def test_no_two_modules_import_each_other():
    """A package's __init__ gathering its own modules' names is not a cycle."""
    graph = {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}
    pairs = sorted((a, b) for a, imported in graph.items() for b in imported
                   if a < b and a in graph.get(b, ()) and not b.startswith(a + "."))
    assert pairs == []
