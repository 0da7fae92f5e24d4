"""Under systemd, log lines carry their syslog priority ("<3>", "<4>", "<6>") so that
``journalctl -p warning`` filters them, but only when ``$JOURNAL_STREAM`` names the file the log
stream really is (its ``device:inode``), as sd_journal_stream_fd's readers check."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
import structlog

from gateway.ops import logs


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    saved = structlog.get_config()
    configured, journal = logs._configured[:], logs._journal[:]
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**saved)
    logs._configured[:] = configured
    logs._journal[:] = journal


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[IO[str]]:
    with (tmp_path / "journal").open("w+") as stream:
        yield stream


def identity(stream: IO[str]) -> str:
    info = os.fstat(stream.fileno())
    return f"{info.st_dev}:{info.st_ino}"


def log_levels_and_read(stream: IO[str]) -> list[str]:
    structlog.get_logger("t").info("started", n=1)
    structlog.get_logger("t").warning("link_slow")
    structlog.get_logger("t").error("link_failed")
    logging.getLogger("mqtt").warning("from the standard library")
    stream.flush()
    stream.seek(0)
    return stream.read().splitlines()


def test_lines_carry_their_syslog_priority_when_the_stream_is_the_journal(
    log_file: IO[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", identity(log_file))
    logs.configure_logging("json", "info", stream=log_file)
    lines = log_levels_and_read(log_file)
    assert [line[:3] for line in lines] == ["<6>", "<4>", "<3>", "<4>"]
    assert '"event": "link_failed"' in lines[2]
    assert logs.logs_to_journal()


def test_no_prefix_when_journal_stream_names_another_file(
    log_file: IO[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (tmp_path / "other").open("w") as other:
        monkeypatch.setenv("JOURNAL_STREAM", identity(other))
    logs.configure_logging("json", "info", stream=log_file)
    lines = log_levels_and_read(log_file)
    assert all(line.startswith("{") for line in lines)
    assert not logs.logs_to_journal()


def test_no_prefix_without_journal_stream(
    log_file: IO[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    logs.configure_logging("json", "info", stream=log_file)
    assert all(line.startswith("{") for line in log_levels_and_read(log_file))


def test_every_line_of_a_multi_line_message_is_prefixed(
    log_file: IO[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", identity(log_file))
    logs.configure_logging("console", "info", stream=log_file)
    try:
        raise ValueError("boom")
    except ValueError:
        structlog.get_logger("t").exception("crashed")
    log_file.flush()
    log_file.seek(0)
    lines = log_file.read().splitlines()
    assert len(lines) > 2 and all(line.startswith("<3>") for line in lines)


@pytest.mark.parametrize("value", ["", "12", "a:b", "1:2:3"])
def test_a_malformed_journal_stream_is_ignored(
    value: str, log_file: IO[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not logs.is_journal_stream(log_file, {"JOURNAL_STREAM": value})


@pytest.mark.parametrize(
    ("level", "priority"),
    [
        (logging.CRITICAL, 2),
        (logging.ERROR, 3),
        (logging.WARNING, 4),
        (logging.INFO, 6),
        (logging.DEBUG, 7),
    ],
)
def test_levels_map_to_syslog_priorities(level: int, priority: int) -> None:
    assert logs.syslog_priority(level) == priority
