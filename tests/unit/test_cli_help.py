"""Every ``--help`` of the command line has a description and shows each option's default; the
completion script is static shell that parses; shipped files are found in the package."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from gateway.cli.completion import completion_script
from gateway.cli.helpformat import shows_default, subparsers
from gateway.cli.main import build_parser
from gateway.resources import NAMES, resource_path


def every_parser() -> list[tuple[str, argparse.ArgumentParser]]:
    parser = build_parser()
    return [(parser.prog, parser)] + [(sub.prog, sub) for _, sub in subparsers(parser)]


PARSERS = every_parser()


@pytest.fixture(autouse=True)
def wide_help(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # one line per option: no wrapping inside a path


def test_the_walk_reaches_nested_subcommands() -> None:
    progs = {prog for prog, _ in PARSERS}
    assert {"edge-gateway run", "edge-gateway certs ca create", "edge-gateway ota sign"} <= progs


@pytest.mark.parametrize(("prog", "parser"), PARSERS, ids=[prog for prog, _ in PARSERS])
def test_every_help_has_a_description(prog: str, parser: argparse.ArgumentParser) -> None:
    assert parser.description, f"{prog}: no description"
    assert parser.description in " ".join(parser.format_help().split())


@pytest.mark.parametrize(("prog", "parser"), PARSERS, ids=[prog for prog, _ in PARSERS])
def test_every_option_has_help_and_shows_its_default(
    prog: str, parser: argparse.ArgumentParser
) -> None:
    text = " ".join(parser.format_help().split())
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        assert action.help, f"{prog} {action.dest}: no help"
        if shows_default(action):
            assert f"(default: {action.default})" in text, f"{prog} {action.dest}"


def test_run_shows_where_its_config_comes_from() -> None:
    (run,) = (parser for prog, parser in PARSERS if prog == "edge-gateway run")
    assert "(default: /etc/edge-gateway/gateway.yaml)" in " ".join(run.format_help().split())


def test_the_bash_completion_script_is_static_and_parses() -> None:
    script = completion_script(build_parser(), "bash")
    assert "python" not in script
    for command in ("check-config", "demo", "desired", "completion", "--mock-gpio"):
        assert command in script
    result = subprocess.run(
        ["bash", "-n"], check=False, input=script, text=True, capture_output=True
    )
    assert result.returncode == 0, result.stderr


def test_the_zsh_completion_script_names_the_command() -> None:
    assert completion_script(build_parser(), "zsh").startswith("#compdef edge-gateway")


@pytest.mark.parametrize("name", NAMES)
def test_every_shipped_file_is_in_the_package(name: str) -> None:
    assert resource_path(name).is_file()


def test_resources_module_prints_a_path_and_refuses_unknown_names() -> None:
    module = [sys.executable, "-m", "gateway.resources"]
    found = subprocess.run([*module, "demo.yaml"], capture_output=True, text=True, check=True)
    assert found.stdout.strip().endswith("demo.yaml")
    missing = subprocess.run([*module, "../README.md"], capture_output=True, text=True, check=False)
    assert missing.returncode == 1 and "no shipped file" in missing.stderr
