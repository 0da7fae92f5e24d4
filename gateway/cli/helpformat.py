"""Every ``--help`` of ``edge-gateway``: a description, and each option's default shown.

``finish_parser`` walks the finished parser once: a subcommand registered with only a ``help=``
gets it as its description too, and every parser formats with ``DefaultsHelpFormatter``, which
appends "(default: X)" as argparse's ``ArgumentDefaultsHelpFormatter`` does, but leaves out
defaults that say nothing (None, False, an empty list) and help that already names its default.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

_DEFAULTING_NARGS = (argparse.OPTIONAL, argparse.ZERO_OR_MORE)


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Help text with "(default: X)" after each option that has a meaningful default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help
        if text is None or not shows_default(action):
            return text
        return f"{text} (default: %(default)s)"


def shows_default(action: argparse.Action) -> bool:
    """Whether the help should show this action's default (the help does not already)."""
    default = action.default
    if default is None or default is False or default == [] or default is argparse.SUPPRESS:
        return False
    if action.help is None or "default" in action.help:
        return False
    return bool(action.option_strings) or action.nargs in _DEFAULTING_NARGS


def subparsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every subcommand's parser, depth first, with the help line it was registered with."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield helps.get(name, ""), sub
                yield from subparsers(sub)


def finish_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give every parser the defaults formatter and every subcommand a description."""
    parser.formatter_class = DefaultsHelpFormatter
    for help_line, sub in subparsers(parser):
        sub.formatter_class = DefaultsHelpFormatter
        if not sub.description and help_line:
            sub.description = help_line[0].upper() + help_line[1:] + "."
    return parser
