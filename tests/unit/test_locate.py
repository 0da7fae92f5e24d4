"""A config without ``state_dir``/``admin_socket`` leaves them to the daemon's environment (the
systemd unit's directories); the commands another user runs with ``-c`` (``status``,
``credentials``) look in their own default, then in the service's."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pytest

from gateway.cli import locate
from gateway.cli.credentials import cmd_credentials
from gateway.config import load_config
from gateway.credentials import store
from gateway.credentials.model import AwsCredentials

MINDCONNECT = "mindconnect: {tenant: acme, ca: ca.pem}\ndevices:\n  led: {type: LED, pin: 17}\n"


@pytest.fixture
def as_a_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This process as a user without a unit (XDG folders in tmp); the service's in tmp."""
    for name in ("STATE_DIRECTORY", "RUNTIME_DIRECTORY", "EDGE_GATEWAY_SOCKET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg-run"))
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    monkeypatch.setattr(locate, "SERVICE_STATE_DIR", tmp_path / "service")
    monkeypatch.setattr(locate, "SERVICE_SOCKET", tmp_path / "service-run" / "admin.sock")
    (tmp_path / "ca.pem").write_text("placeholder")
    return tmp_path


def config_file(folder: Path, extra: str = "") -> Path:
    path = folder / "gateway.yaml"
    path.write_text(MINDCONNECT + extra)
    return path


def test_without_state_dir_the_users_default_then_the_services_are_tried(as_a_user: Path) -> None:
    config = load_config(config_file(as_a_user), check_files=False)
    assert locate.state_dirs(config) == [
        as_a_user / "xdg-state" / "edge-gateway",
        as_a_user / "service",
    ]
    assert locate.admin_sockets(config) == [
        as_a_user / "xdg-run" / "edge-gateway" / "admin.sock",
        as_a_user / "service-run" / "admin.sock",
    ]


def test_a_state_dir_the_config_names_is_the_only_one_tried(as_a_user: Path) -> None:
    path = config_file(as_a_user, "state_dir: mine\nadmin_socket: mine/admin.sock\n")
    config = load_config(path, check_files=False)
    assert locate.state_dirs(config) == [as_a_user / "mine"]
    assert locate.admin_sockets(config) == [as_a_user / "mine" / "admin.sock"]


def test_credentials_with_the_system_config_finds_the_services_stored_copy(
    as_a_user: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expires = time.time() + 3600
    creds = AwsCredentials("ASIAIOSFODNN7EXAMPLE", "secret", "token", expires, "eu-west-1")
    store.save(store.credentials_path(as_a_user / "service"), creds)
    args = argparse.Namespace(config=str(config_file(as_a_user)), state_dir=None, socket=None)
    assert cmd_credentials(args) == 0
    assert json.loads(capsys.readouterr().out)["AccessKeyId"] == "ASIAIOSFODNN7EXAMPLE"


def test_status_with_the_system_config_finds_the_services_socket(as_a_user: Path) -> None:
    from gateway.cli.main import _socket_path

    service_socket = as_a_user / "service-run" / "admin.sock"
    service_socket.parent.mkdir()
    service_socket.touch()  # stands for the service's socket: only its existence is looked at
    args = argparse.Namespace(config=str(config_file(as_a_user)), socket=None)
    assert _socket_path(args) == service_socket
