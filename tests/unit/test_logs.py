"""Logging is set up once per process: configure_logging is idempotent."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

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


def test_structlog_is_loaded_without_rich_which_stays_importable(tmp_path: Path) -> None:
    # A stand-in rich that records being imported: structlog would import it at its own
    # import (for tracebacks the daemon never shows), which costs every start 60-100 ms.
    fake = tmp_path / "rich"
    fake.mkdir()
    marker = tmp_path / "imported"
    (fake / "__init__.py").write_text(f"open({str(marker)!r}, 'a').write('x')\n")
    code = (
        "import sys\n"
        "import gateway.ops.logs\n"
        "assert 'structlog' in sys.modules\n"
        "print('rich' in sys.modules)\n"
        "import rich\n"  # hidden only while structlog was imported
        "print(rich.__file__)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    result = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    loaded_with_logs, rich_file = result.stdout.split()
    assert loaded_with_logs == "False"
    assert Path(rich_file) == fake / "__init__.py"
    assert marker.read_text() == "x"  # imported once: by the explicit import, not by structlog
