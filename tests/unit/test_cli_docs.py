"""docs/cli.md documents the command line the parser builds: every command and subcommand has
its own section (``### edge-gateway <path>``), which names every option of that command."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from gateway.cli.main import build_parser

PAGE = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> dict[str, argparse.ArgumentParser]:
    """Every runnable command's path ("mock set", "certs ca create") and its parser."""
    found: dict[str, argparse.ArgumentParser] = {}
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for action in subparsers:
        for name, sub in action.choices.items():
            found.update(commands(sub, (*path, name)))
    if path and not subparsers:
        found[" ".join(path)] = parser
    return found


def sections() -> dict[str, str]:
    """The page's ``### edge-gateway <path>`` sections, by path."""
    parts = re.split(r"^### edge-gateway (.+)$", PAGE.read_text(), flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


COMMANDS = commands(build_parser())


def test_the_parser_has_the_commands_this_test_walks() -> None:
    assert {"run", "mock set", "certs ca create", "mindconnect agent-cert"} <= set(COMMANDS)


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_every_command_has_its_section_in_the_cli_page(path: str) -> None:
    assert path in sections(), f"docs/cli.md has no '### edge-gateway {path}' section"


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_every_option_of_a_command_is_named_in_its_section(path: str) -> None:
    text = sections().get(path, "")
    missing = [
        "/".join(action.option_strings)
        for action in COMMANDS[path]._actions
        if action.option_strings
        and not isinstance(action, argparse._HelpAction)
        # -c or --config: either spelling names the option
        and not any(re.search(rf"{o}(?![\w-])", text) for o in action.option_strings)
    ]
    assert not missing, f"docs/cli.md, 'edge-gateway {path}': not named: {missing}"


def test_every_section_names_a_command_the_parser_has() -> None:
    assert not set(sections()) - set(COMMANDS)
