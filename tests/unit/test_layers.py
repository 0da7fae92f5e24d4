"""The import graph of gateway/, read from the source (ast): no cycles, and the config a floor.

Every import counts, also one inside a function (a lazy import hides a cycle from Python, not
from the design). Importing ``gateway.a.b`` also runs ``gateway/a/__init__.py``, so it counts as
importing ``gateway.a`` too, except from inside ``gateway.a`` itself.
"""

from __future__ import annotations

import ast
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import gateway
from gateway.config import GatewayConfig, ProvisionSetup
from gateway.config.validate import parse

ROOT = Path(gateway.__file__).parent


def _modules() -> dict[str, Path]:
    modules = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _imported(node: ast.AST, module: str, is_package: bool, known: set[str]) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
        if node.level:  # relative: resolve against this module's package
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            source = ".".join([*base, node.module] if node.module else base)
        else:
            source = node.module or ""
        yield source
        # ``from gateway.config import names`` imports the submodule gateway.config.names.
        yield from (f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in known)


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            for target in _imported(node, name, path.name == "__init__.py", known):
                parts = target.split(".")
                for depth in range(2, len(parts) + 1):
                    candidate = ".".join(parts[:depth])
                    own_package = name == candidate or name.startswith(candidate + ".")
                    if candidate in known and not own_package:
                        graph[name].add(candidate)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), and self-imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_in_gateway() -> None:
    assert _cycles(import_graph()) == []


def test_the_cycle_finder_sees_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_gateway_config_imports_nothing_of_gateway_but_errors() -> None:
    """The config is the floor: besides its own modules only ``gateway.errors`` and
    ``gateway.paths`` (the default locations), which import nothing of the gateway (the value
    codecs reach the checks as data)."""
    graph = import_graph()
    package = {name for name in graph if name.startswith("gateway.config.")} | {"gateway.config"}
    assert set().union(*(graph[name] for name in package)) - package == {
        "gateway.errors",
        "gateway.paths",
    }
    assert graph["gateway.errors"] == set()
    assert graph["gateway.paths"] == set()


def test_the_value_codecs_do_not_import_the_config() -> None:
    """``gateway.core.values`` matches device kinds by their ``type``: config and values form no
    cycle however the modules are regrouped."""
    assert import_graph()["gateway.core.values"] == {"gateway.errors"}


def test_config_validation_never_touches_the_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Validators only check values (files are checked by the load step): a full config with
    every file key validates with the file system out of reach."""

    def no_disk(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a validator touched the disk: {args!r}")

    data = {
        "thing": "pi-1",
        "mqtt": {"host": "broker", "ca": "ca.pem", "cert": "c.pem", "key": "k.pem"},
        "provision": {"fleet": {"template": "t", "claim_cert": "c", "claim_key": "k"}},
        "checkin": {"url": "https://x.example/", "product_id": "p", "token_file": "t", "ca": "a"},
        "ota": {"mode": "wheel", "public_key": "pub.pem", "python": "py"},
        "devices": {"led": {"type": "LED", "pin": 17}},
    }
    base = {"base_dir": Path("/nowhere")}
    with monkeypatch.context() as patch:  # undone before pytest itself needs the disk again
        for name in ("stat", "lstat", "open", "access", "scandir", "listdir"):
            patch.setattr(os, name, no_disk)
        patch.setattr(io, "open", no_disk)
        config = parse(GatewayConfig, data, base)
        setup = parse(ProvisionSetup, data, base)
    assert config.mqtt.cert == Path("/nowhere/c.pem")
    assert setup.mqtt.key == Path("/nowhere/k.pem")
