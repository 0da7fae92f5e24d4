"""Every way a command can fail, as one line on stderr and an exit code (never a traceback).

``run_handler`` calls a command's handler: a ``ConfigError`` prints its problems (exit 2), a
``GatewayError`` or an ``OSError`` (a file, folder or socket the command needed) one line
(exit 1), and anything else, which is a bug, one line naming it and how to see the traceback
(``EDGE_GATEWAY_DEBUG=1``). A missing library an extra provides names that extra. Groups
from a ``TaskGroup`` are unwrapped into their errors.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from gateway.errors import ConfigError, GatewayError
from gateway.exitcodes import EXIT_OK, EXIT_RUNTIME, EXIT_USAGE

DEBUG_ENV = "EDGE_GATEWAY_DEBUG"


def os_error_text(exc: OSError) -> str:
    """``[Errno 13] Permission denied: '/x'`` as ``/x: permission denied`` (what and where)."""
    reason = (exc.strerror or str(exc)).rstrip(".")
    reason = reason[:1].lower() + reason[1:]
    where = exc.filename if exc.filename is not None else None
    return f"{where}: {reason}" if where is not None else reason


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return found


def describe(exc: BaseException) -> tuple[list[str], int]:
    """The lines to print for ``exc`` and the exit code."""
    if isinstance(exc, ConfigError):
        return list(exc.problems), EXIT_USAGE
    if isinstance(exc, GatewayError):
        return [f"edge-gateway: {exc}"], EXIT_RUNTIME
    if isinstance(exc, OSError):
        return [f"edge-gateway: {os_error_text(exc)}"], EXIT_RUNTIME
    if isinstance(exc, ModuleNotFoundError):  # an optional library (the dev cloud's aiohttp)
        from gateway.cli.extras import missing_extra

        if (line := missing_extra(exc)) is not None:
            return [line], EXIT_RUNTIME
    if isinstance(exc, BaseExceptionGroup):
        lines: list[str] = []
        code = EXIT_OK
        for leaf in _leaves(exc):
            more, leaf_code = describe(leaf)
            lines += more
            code = max(code, leaf_code)
        return lines, code
    detail = str(exc).splitlines()[0][:200] if str(exc) else ""
    return [
        f"edge-gateway: unexpected {type(exc).__name__}"
        + (f": {detail}" if detail else "")
        + f" (a bug: please report it; {DEBUG_ENV}=1 shows the traceback)"
    ], EXIT_RUNTIME


def run_handler(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    try:
        code = handler(args)
        sys.stdout.flush()  # here, so a closed pipe is seen here and not at exit
        return code
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        # The reader stopped reading (``| head``): not a failure. Point stdout at /dev/null so
        # the interpreter's last flush at exit has nowhere to fail either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # the one place every failure becomes a line
        if os.environ.get(DEBUG_ENV) and not isinstance(exc, GatewayError):
            raise
        lines, code = describe(exc)
        print("\n".join(lines), file=sys.stderr)
        return code
