"""DESIGN.md's layers: imports point down only, and wire/broker stay free of I/O frameworks."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "proxygate"
LAYERS = ["cli", "server", "features", "broker", "providers", "auth", "pool", "store", "prices", "wire"]


def imports() -> list[tuple[str, str]]:
    found = []
    for path in PACKAGE.rglob("*.py"):
        layer = path.relative_to(PACKAGE).parts[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.append((layer, node.module))
            elif isinstance(node, ast.Import):
                found.extend((layer, alias.name) for alias in node.names)
    return found


def test_imports_point_down() -> None:
    upward = [
        (layer, module)
        for layer, module in imports()
        if layer in LAYERS
        and module.startswith("proxygate.")
        and module.split(".")[1] in LAYERS
        and LAYERS.index(module.split(".")[1]) < LAYERS.index(layer)
    ]
    assert upward == []


def test_pure_layers_import_no_io_framework() -> None:
    impure = [
        (layer, m)
        for layer, m in imports()
        if layer in ("wire", "broker") and m.split(".")[0] in ("aiohttp", "time", "os")
    ]
    assert impure == []


def test_prices_import_only_config_and_wire() -> None:
    """proxygate/prices is pure data + arithmetic, importable by features/ and broker/."""
    found = {
        module
        for layer, module in imports()
        if layer == "prices" and module.startswith("proxygate.") and not module.startswith("proxygate.prices")
    }
    assert found <= {"proxygate.config", "proxygate.errors", "proxygate.wire.ir"}
