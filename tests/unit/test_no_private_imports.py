"""No module of ours imports a dependency's private module, and the OpenTelemetry SDK is not held back.

A private module (``opentelemetry.exporter.otlp.proto.http._common``) can change in any release; depending
on one is what pinned the SDK to a single minor version before.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
OURS = ("gateway", "engine")


def _private_imports(path: Path) -> Iterator[str]:
    """Dotted paths imported by ``path`` that name a private part of a package not ours."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            paths = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # A name imported from a module may itself be a module: ``from pkg import _impl``.
            paths = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue  # relative imports are our own
        for dotted in paths:
            parts = dotted.split(".")
            if parts[0] in (*OURS, "__future__"):
                continue
            if any(p.startswith("_") and not (p.startswith("__") and p.endswith("__")) for p in parts):
                yield dotted


def test_no_module_imports_a_private_module_of_a_dependency() -> None:
    modules = [path for package in OURS for path in sorted((ROOT / package).rglob("*.py"))]
    assert len(modules) > 50, "the walk found the packages"
    found = {f"{path.relative_to(ROOT)}: {dotted}" for path in modules for dotted in _private_imports(path)}
    assert not found, sorted(found)


def test_the_check_sees_private_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import opentelemetry.exporter.otlp.proto.http._common\n"
        "from opentelemetry.sdk.trace import _Span\n"
        "from gateway.telemetry import _private\n"
        "from . import _relative\n"
        "from gateway import __version__\n"
        "from __future__ import annotations\n",
        encoding="utf-8",
    )
    assert list(_private_imports(sample)) == [
        "opentelemetry.exporter.otlp.proto.http._common",
        "opentelemetry.sdk.trace._Span",
    ]


def test_the_opentelemetry_sdk_and_exporters_are_not_pinned_below_2() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = {req.name: req for req in map(Requirement, project["dependencies"])}
    for name in (
        "opentelemetry-sdk",
        "opentelemetry-exporter-otlp-proto-http",
        "opentelemetry-exporter-otlp-proto-grpc",
    ):
        specifier = requirements[name].specifier
        assert specifier.contains("1.99.0"), f"{name} {specifier} is held below 2"
