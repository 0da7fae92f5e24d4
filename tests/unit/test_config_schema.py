"""The config's JSON Schema for editors: ``edge-gateway config schema`` prints it, the copy in
config/schema.json is current, and the example configs name it and follow it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.cli.configcmd import MODELINE_PREFIX, schema_text

REPO = Path(__file__).resolve().parents[2]
SCHEMA_FILE = REPO / "config" / "schema.json"
EXAMPLES = sorted((REPO / "config").glob("*.yaml"))


def test_the_shipped_schema_is_up_to_date() -> None:
    assert SCHEMA_FILE.read_text() == schema_text(), (
        "config/schema.json is stale: edge-gateway config schema > config/schema.json"
    )


def test_config_schema_prints_the_schema() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "config", "schema"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert {"thing", "mqtt", "devices"} <= set(schema["properties"])


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_configs_name_the_schema_in_a_modeline(example: Path) -> None:
    first = example.read_text().splitlines()[0]
    assert first.startswith(MODELINE_PREFIX)
    assert (example.parent / first.removeprefix(MODELINE_PREFIX)).resolve() == SCHEMA_FILE


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def unknown_keys(data: Any, schema: dict[str, Any], root: dict[str, Any], where: str) -> list[str]:
    """Keys of ``data`` the schema does not allow (a light walk: objects, maps, discriminated
    unions, optional values)."""
    schema = _resolve(schema, root)
    if not isinstance(data, dict):
        return []
    for option in schema.get("anyOf", []):
        if _resolve(option, root).get("type") == "object" or "$ref" in option:
            return unknown_keys(data, option, root, where)
    if "discriminator" in schema:
        target = schema["discriminator"]["mapping"][data["type"]]
        return unknown_keys(data, {"$ref": target}, root, where)
    found: list[str] = []
    properties = schema.get("properties")
    patterns = schema.get("patternProperties") or {}
    for key, value in data.items():
        if properties is not None:
            if key not in properties:
                found.append(f"{where}{key}")
                continue
            found += unknown_keys(value, properties[key], root, f"{where}{key}.")
        elif patterns:
            found += unknown_keys(value, next(iter(patterns.values())), root, f"{where}{key}.")
    return found


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_configs_use_only_keys_the_schema_knows(example: Path) -> None:
    root = json.loads(SCHEMA_FILE.read_text())
    data = yaml.safe_load(example.read_text())
    assert unknown_keys(data, root, root, "") == []
    assert len(data["devices"]) > 0


def test_the_walk_finds_a_misspelt_device_option() -> None:
    root = json.loads(SCHEMA_FILE.read_text())
    data = {"devices": {"fan": {"type": "PWMLED", "pin": 18, "frequency": 100}}}
    assert unknown_keys(data, root, root, "") == ["devices.fan.frequency"]
