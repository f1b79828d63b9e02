"""The layer rule of docs/architecture.md, checked on every module's imports (also those inside functions):
no module imports a module of a higher layer, and no two modules or packages import each other, however
indirectly."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("workbench", "probes", "apps")
# low to high; a module belongs to the longest prefix that names it
LAYERS: tuple[tuple[str, ...], ...] = (
    (
        "workbench._version",
        "workbench.errors",
        "workbench.files",
        "workbench.numerics",
        "workbench.tables",
        "workbench.script_sample",
        "workbench.tokenizer_facts",
        "workbench.zoo",
    ),
    ("workbench.arch",),
    ("workbench.hooks",),
    ("workbench.models",),
    ("workbench.capture", "workbench.intervene"),
    ("probes",),
    (
        "workbench",
        "workbench.summary",
        "workbench.battery",
        "workbench.families",
        "workbench.zoo_build",
        "workbench.cli",
        "apps",
    ),
)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _imports(name: str) -> set[str]:
    """The project modules ``name`` imports (a name imported from a package counts as its module when it
    is one, else as the package)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def layer_of(name: str) -> int:
    matches = [
        (len(p), i) for i, layer in enumerate(LAYERS) for p in layer if name == p or name.startswith(p + ".")
    ]
    if not matches:
        raise AssertionError(f"{name} is in no layer: add it to LAYERS and to docs/architecture.md")
    return max(matches)[1]


GRAPH = {name: _imports(name) for name in MODULES}


def test_every_module_is_in_a_layer_and_imports() -> None:
    for name in MODULES:
        layer_of(name)
    importlib.import_module("workbench.cli")  # the top imports cleanly, so the graph is the real one


def test_no_module_imports_a_higher_layer() -> None:
    upward = [
        f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
        for a, targets in GRAPH.items()
        for b in targets
        if layer_of(b) > layer_of(a)
    ]
    assert upward == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _package(name: str) -> str:
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "workbench" and len(parts) > 1 else parts[0]


def test_no_import_cycles_between_modules_or_packages() -> None:
    assert _cycles(GRAPH) == []
    packages: dict[str, set[str]] = {}
    for a, targets in GRAPH.items():
        packages.setdefault(_package(a), set()).update(
            _package(b) for b in targets if _package(b) != _package(a)
        )
    # the package root re-exports the library API, so it is above everything it names
    packages.pop("workbench", None)
    assert _cycles(packages) == []


@pytest.mark.parametrize(
    ("graph", "expected"),
    [({"a": {"b"}, "b": {"c"}, "c": {"a"}}, [["a", "b", "c"]]), ({"a": {"b"}, "b": set()}, [])],
)
def test_the_cycle_finder_finds_planted_cycles(graph: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert _cycles(graph) == expected
