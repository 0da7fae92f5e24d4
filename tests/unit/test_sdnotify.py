"""The sd_notify client against a real datagram socket bound by the test."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway.ops.sdnotify import Notifier, socket_address, status_line, watchdog_interval_s


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.settimeout(2)
    yield path, listener
    listener.close()


def test_ready_and_status_arrive_in_one_datagram(
    notify_socket: tuple[str, socket.socket],
) -> None:
    path, listener = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.ready("connected;\n4 devices")
    assert listener.recv(4096) == b"READY=1\nSTATUS=connected; 4 devices"


def test_watchdog_stopping_and_reloading_messages(notify_socket: tuple[str, socket.socket]) -> None:
    path, listener = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path})
    notifier.watchdog()
    notifier.stopping()
    notifier.reloading()
    assert listener.recv(4096) == b"WATCHDOG=1"
    assert listener.recv(4096) == b"STOPPING=1"
    reloading = listener.recv(4096).decode().split("\n")
    assert reloading[0] == "RELOADING=1"
    assert reloading[1].startswith("MONOTONIC_USEC=") and int(reloading[1].split("=")[1]) > 0


def test_abstract_socket_name_is_supported() -> None:
    name = f"edge-gateway-test-{id(object())}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(b"\0" + name.encode())
    listener.settimeout(2)
    try:
        assert Notifier({"NOTIFY_SOCKET": f"@{name}"}).watchdog()
        assert listener.recv(4096) == b"WATCHDOG=1"
    finally:
        listener.close()


def test_without_notify_socket_every_message_is_a_no_op() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert not notifier.ready("up")
    assert notifier.watchdog_interval_s is None


def test_a_vanished_socket_is_logged_not_raised(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    with capture_logs() as logs:
        assert not notifier.watchdog()
    assert [entry["event"] for entry in logs] == ["sd_notify_failed"]


def test_socket_address_forms() -> None:
    assert socket_address({"NOTIFY_SOCKET": "/run/systemd/notify"}) == "/run/systemd/notify"
    assert socket_address({"NOTIFY_SOCKET": "@abstract"}) == b"\0abstract"
    assert socket_address({"NOTIFY_SOCKET": "relative/path"}) is None
    assert socket_address({}) is None


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}, pid=42) == 15.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, pid=42) == 15.0


def test_watchdog_meant_for_another_process_or_invalid_is_ignored() -> None:
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, pid=42) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "soon"}, pid=42) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "0"}, pid=42) is None
    assert watchdog_interval_s({}, pid=42) is None


def test_status_line_is_a_single_line() -> None:
    assert status_line("  a\nb\t c ") == "a b c"
