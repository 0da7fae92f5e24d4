"""structlog set-up, done once per process: console on a terminal, JSON lines otherwise.

Every entry point (``edge-gateway run``/``provision``/``demo``/``devcloud``, the benchmark's
cloud) calls ``configure_logging``; it is idempotent, so a second call with the same settings
changes nothing and one with other settings replaces the set-up (one handler, never two).
Standard-library loggers (aiomqtt/paho log to "mqtt", gpiozero warns) go through the same
processors, so every line has one shape. PEM private keys are scrubbed from every event.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, Literal

import structlog
from structlog.typing import EventDict, Processor

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


# The settings in force (format, level, stream); empty until the first set-up.
_configured: list[tuple[str, str, Any]] = []


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
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)
    # paho is chatty at debug; keep it one level quieter than ours.
    logging.getLogger("mqtt").setLevel(max(numeric_level, logging.INFO))
    _configured[:] = [settings]
    return True
