"""``main`` parses ``edge-gateway COMMAND ...`` with a parser holding only COMMAND
(``build_parser(COMMAND)``): for any arguments after it, that parser must answer exactly as the
whole command line does: the same parsed arguments, or the same help, usage error and exit code.
A brief command turns the cycle collector off only in its own process, never in a caller's."""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.cli.helpformat import subparsers
from gateway.cli.main import COMMANDS, build_parser, main

FULL = build_parser()
# Words that are neither options nor subcommand names, some shaped like values and paths.
WORDS = ["x", "button", "true", "0.5", "-5", "-1.5", "a=b", "", "/tmp/a b", "--", "-"]
OTHER_OPTIONS = ["-h", "--help", "--he", "--bogus", "--js", "--sock", "--version", "-x", "-cX"]


@pytest.fixture(autouse=True)
def fixed_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")  # the same wrapping for both parsers' help and usage


def outcome(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[Any, ...]:
    """What parsing ``argv`` gives: the arguments, or the exit code with what was printed."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            return ("parsed", vars(parser.parse_args(argv)))
        except SystemExit as exc:
            return ("exit", exc.code, out.getvalue(), err.getvalue())


def tokens(command: str) -> list[str]:
    """Every option string and subcommand name under ``command``, with and without values."""
    (sub,) = (p for _, p in subparsers(FULL) if p.prog == f"edge-gateway {command}")
    found: set[str] = set()
    for parser in [sub, *(p for _, p in subparsers(sub))]:
        for action in parser._actions:
            found.update(action.option_strings)
            found.update(f"{o}=v" for o in action.option_strings if o.startswith("--"))
            if isinstance(action, argparse._SubParsersAction):
                found.update(action.choices)
    return sorted(found)


def arguments(command: str) -> st.SearchStrategy[list[str]]:
    words = st.sampled_from(sorted({*tokens(command), *WORDS, *OTHER_OPTIONS}))
    return st.lists(words, max_size=7).map(lambda rest: [command, *rest])


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "--socket", "/run/a.sock", "--json"],
        ["status", "-c", "/etc/edge-gateway/gateway.yaml"],
        ["status", "--help"],
        ["status", "--bogus"],
        ["mock", "set", "button", "true", "--socket", "s"],
        ["mock", "set", "temp", "-5"],
        ["mock", "set", "button"],
        ["mock", "-h"],
        ["ota", "guard", "-c", "gateway.yaml"],
        ["ota", "guard", "--help"],
        ["ota"],
        ["run", "--mock-gpio"],
        ["completion", "bash"],
    ],
    ids=" ".join,
)
def test_a_command_alone_parses_as_the_whole_command_line(argv: list[str]) -> None:
    assert outcome(build_parser(argv[0]), argv) == outcome(FULL, argv)


@pytest.mark.parametrize("command", ["status", "mock", "ota"])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_any_arguments_of_a_light_command_parse_alike(command: str, data: st.DataObject) -> None:
    argv = data.draw(arguments(command))
    assert outcome(build_parser(command), argv) == outcome(FULL, argv)


def test_the_whole_command_line_has_every_command_once() -> None:
    (action,) = (a for a in FULL._actions if isinstance(a, argparse._SubParsersAction))
    assert list(action.choices) == list(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_command_alone_has_only_that_command(command: str) -> None:
    parser = build_parser(command)
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert list(action.choices) == [command]


def test_a_brief_command_called_in_process_leaves_the_cycle_collector_on(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\n")
    assert main(["ota", "guard", "-c", str(config)]) == 0
    assert gc.isenabled()
