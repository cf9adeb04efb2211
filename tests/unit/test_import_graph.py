"""The import graph of ``gateway`` and ``engine`` has no cycles, and the layering rules hold.

Every ``import`` and ``from ... import`` in every module counts, at any depth, except those under
``if TYPE_CHECKING:`` (they never run). ``from pkg import name`` depends on ``pkg.name`` when that is a module,
else on ``pkg``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("gateway", "engine")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {
    _module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                yield from _imports(child)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from _imports(node)


def _resolve(name: str) -> str | None:
    """The module of ours that ``name`` names (the longest existing prefix), if any."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return None


def _edges(module: str) -> set[str]:
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in _imports(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            resolved = _resolve(target)
            if resolved is not None and resolved != module:
                out.add(resolved)
                break  # `from pkg import a, b`: the first resolution names the deepest module
    return out


GRAPH = {module: _edges(module) for module in MODULES}


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in GRAPH[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in GRAPH:
        if module not in index:
            visit(module)
    return found


def test_the_modules_were_found() -> None:
    assert {"gateway.app", "gateway.relay.service", "engine.client"} <= GRAPH.keys()
    assert "gateway.relay.admission" in GRAPH["gateway.relay.service"]


def test_no_import_cycles() -> None:
    assert _cycles() == []


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("engine", ("gateway",)),  # the engine never imports the gateway
        ("gateway.protocol", ("gateway.",)),  # wire types import nothing else of ours
        ("gateway.policy", ("gateway.guardrails", "gateway.relay", "gateway.telemetry")),
        ("gateway.telemetry", ("gateway.relay", "gateway.routes", "gateway.state", "gateway.app")),
        ("gateway.guardrails", ("gateway.relay", "gateway.telemetry", "gateway.routes")),
    ],
)
def test_layers(layer: str, forbidden: tuple[str, ...]) -> None:
    for module, targets in GRAPH.items():
        if module != layer and not module.startswith(layer + "."):
            continue
        if module == "gateway.policy.commands":
            continue  # the CLI's `policy check/test` compile the guardrails they check
        for target in targets:
            inside = target == layer or target.startswith(layer + ".")
            assert inside or not target.startswith(forbidden), f"{module} imports {target}"
