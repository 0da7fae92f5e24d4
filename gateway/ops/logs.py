"""structlog set-up, done once per process: console on a terminal, JSON lines otherwise.

Every entry point (``edge-gateway run``/``provision``/``demo``/``devcloud``, the benchmark's
cloud) calls ``configure_logging``; it is idempotent, so a second call with the same settings
changes nothing and one with other settings replaces the set-up (one handler, never two).
Standard-library loggers (aiomqtt/paho log to "mqtt", gpiozero warns) go through the same
processors, so every line has one shape. PEM private keys are scrubbed from every event.

Under systemd, when ``$JOURNAL_STREAM`` names the very file the log stream is (its
``device:inode``), every line starts with its syslog priority (``<3>`` error, ``<4>`` warning,
``<6>`` info, ...), which journald strips and stores, so ``journalctl -p warning`` works.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Any, Literal


def _import_structlog_without_rich() -> None:
    """Import structlog with ``rich`` hidden, when it is installed but not yet loaded.

    structlog imports rich at its own import, when some other package brought it in (a dev
    tool does), only to pretty-print tracebacks these logs never show: that is 60 to 100 ms
    of every daemon start. ``None`` in ``sys.modules`` makes that one import fail as if rich
    were absent (structlog then formats tracebacks plainly); the entry is removed right after,
    so anything else in the process can still import rich."""
    if "structlog" in sys.modules or "rich" in sys.modules:
        return
    sys.modules["rich"] = None  # type: ignore[assignment]
    try:
        import structlog  # noqa: F401
    finally:
        if sys.modules.get("rich", False) is None:
            del sys.modules["rich"]


_import_structlog_without_rich()

import structlog  # noqa: E402
from structlog.typing import EventDict, Processor  # noqa: E402

_PRIVATE_KEY = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.DOTALL
)
REDACTED = "[private key redacted]"


def redact_private_keys(_: Any, __: str, event_dict: EventDict) -> EventDict:
    """Replace any PEM private key in any string field: key material is never logged."""
    for key, value in event_dict.items():
        if isinstance(value, str) and "PRIVATE KEY" in value:
            event_dict[key] = _PRIVATE_KEY.sub(REDACTED, value)
    return event_dict


def shared_processors() -> list[Processor]:
    """What every line goes through before it is rendered (also the log shipper's chain for
    standard-library records)."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_private_keys,
    ]


# syslog(3) priorities of the standard-library levels (journald reads them from "<N>").
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
_DEBUG_PRIORITY = 7


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a logging level: 2 crit, 3 err, 4 warning, 6 info, 7 debug."""
    return next((prio for level, prio in _PRIORITIES if levelno >= level), _DEBUG_PRIORITY)


def is_journal_stream(stream: Any, environ: Any = None) -> bool:
    """True when ``$JOURNAL_STREAM`` (``device:inode``, set by systemd) is this stream's file:
    only then does journald read the ``<N>`` prefixes (a redirect elsewhere keeps plain lines)."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    device, sep, inode = value.partition(":")
    if not sep or not device.isdigit() or not inode.isdigit():
        return False
    try:
        info = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):  # no file behind it (a StringIO, closed)
        return False
    return (info.st_dev, info.st_ino) == (int(device), int(inode))


class _JournalFormatter(structlog.stdlib.ProcessorFormatter):
    """The same lines, each prefixed with its syslog priority (every line of a multi-line
    message, since journald takes each line as an entry of its own)."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


# The settings in force (format, level, stream); empty until the first set-up.
_configured: list[tuple[str, str, Any]] = []
_journal = [False]  # whether that stream is the journal


def logs_to_journal() -> bool:
    """Whether the configured log stream is the journal: a failure already logged there needs
    no second line on stderr (under systemd both reach the journal)."""
    return bool(_configured) and _journal[0]


def configure_logging(
    fmt: Literal["auto", "console", "json"] = "auto", level: str = "info", *, stream: Any = None
) -> bool:
    """Set up structlog and the root logger for this process; False if they already were,
    with these very settings (nothing is done then)."""
    stream = stream if stream is not None else sys.stdout
    settings = (fmt, level.lower(), stream)
    if _configured and _configured[0][:2] == settings[:2] and _configured[0][2] is stream:
        return False
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    shared = shared_processors()
    renderer: Processor
    if use_console:
        renderer = structlog.dev.ConsoleRenderer()
    else:
        shared.append(structlog.processors.dict_tracebacks)
        renderer = structlog.processors.JSONRenderer()
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
    journal = is_journal_stream(stream)
    formatter = _JournalFormatter if journal else structlog.stdlib.ProcessorFormatter
    handler.setFormatter(
        formatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    # No line shows where a call came from, nor its thread or process: skip collecting them
    # for every record (the switches of the logging HOWTO's "Optimization" section).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)
    # paho is chatty at debug; keep it one level quieter than ours.
    logging.getLogger("mqtt").setLevel(max(numeric_level, logging.INFO))
    _configured[:] = [settings]
    _journal[0] = journal
    return True
