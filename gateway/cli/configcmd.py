"""``edge-gateway config schema``: the config file's JSON Schema, written by pydantic from the
config models.

Editors with the YAML language server check and complete a config that names it in a
modeline (``# yaml-language-server: $schema=schema.json``); ``config/schema.json`` in the
repository is this output (a test keeps it up to date).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from gateway.exitcodes import EXIT_OK

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
MODELINE_PREFIX = "# yaml-language-server: $schema="


def config_schema() -> dict[str, Any]:
    """The JSON Schema of a config file (what a user writes: pins as numbers or names)."""
    from gateway.config import GatewayConfig
    from gateway.config.strict import json_schema

    schema = json_schema(GatewayConfig)
    schema["title"] = "edge-gateway configuration"
    return {"$schema": SCHEMA_DIALECT, **schema}


def schema_text() -> str:
    return json.dumps(config_schema(), indent=2, sort_keys=True) + "\n"


def cmd_config_schema(args: argparse.Namespace) -> int:
    print(schema_text(), end="")
    return EXIT_OK


def add_config_parser(commands: Any) -> None:
    config = commands.add_parser("config", help="about the config file: its JSON Schema")
    actions = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    schema = actions.add_parser(
        "schema",
        help="print the config's JSON Schema (for editors: "
        "'# yaml-language-server: $schema=schema.json')",
    )
    schema.set_defaults(handler=cmd_config_schema)
