"""Logging is set up once per process: configure_logging is idempotent."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from gateway.ops import logs


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    saved = structlog.get_config()
    configured = logs._configured[:]
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**saved)
    logs._configured[:] = configured


def test_a_second_call_with_the_same_settings_changes_nothing() -> None:
    stream = io.StringIO()
    assert logs.configure_logging("json", "info", stream=stream)
    handler = logging.getLogger().handlers[0]
    assert not logs.configure_logging("json", "INFO", stream=stream)
    assert logging.getLogger().handlers == [handler]
    structlog.get_logger("t").info("once_only", n=1)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["event"] == "once_only"


def test_other_settings_replace_the_set_up_with_one_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    logs.configure_logging("json", "info", stream=first)
    assert logs.configure_logging("json", "warning", stream=second)
    assert len(logging.getLogger().handlers) == 1
    assert logging.getLogger().level == logging.WARNING
    logging.getLogger("x").warning("to the second")
    assert first.getvalue() == "" and "to the second" in second.getvalue()


def test_private_keys_are_redacted() -> None:
    stream = io.StringIO()
    logs.configure_logging("json", "info", stream=stream)
    pem = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"
    structlog.get_logger("t").info("leak", body=pem)
    assert "AAAA" not in stream.getvalue() and logs.REDACTED in stream.getvalue()
