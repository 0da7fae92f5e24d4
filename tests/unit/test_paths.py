"""Default locations: systemd's directories under the unit, FHS for root, XDG for a user."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.paths import default_admin_socket, default_config_path, default_state_dir

USER = 1000
ROOT_UID = 0
UNIT = {
    "STATE_DIRECTORY": "/var/lib/edge-gateway",
    "RUNTIME_DIRECTORY": "/run/edge-gateway",
    "CONFIGURATION_DIRECTORY": "/etc/edge-gateway",
    "HOME": "/var/lib/edge-gateway",
}


def test_under_the_unit_systemd_directories_win_for_any_user() -> None:
    env = {**UNIT, "STATE_DIRECTORY": "/srv/state", "RUNTIME_DIRECTORY": "/run/gw"}
    assert default_state_dir(env, USER) == Path("/srv/state")
    assert default_admin_socket(env, USER) == Path("/run/gw/admin.sock")


def test_several_state_directories_use_the_first() -> None:
    env = {"STATE_DIRECTORY": "/var/lib/a:/var/lib/b"}
    assert default_state_dir(env, USER) == Path("/var/lib/a")


def test_root_without_a_unit_uses_the_fhs_folders() -> None:
    env = {"HOME": "/root", "XDG_RUNTIME_DIR": "/run/user/0"}
    assert default_state_dir(env, ROOT_UID) == Path("/var/lib/edge-gateway")
    assert default_admin_socket(env, ROOT_UID) == Path("/run/edge-gateway/admin.sock")


def test_a_user_without_a_unit_uses_xdg_state_and_runtime_dirs() -> None:
    env = {"HOME": "/home/pi", "XDG_STATE_HOME": "/home/pi/st", "XDG_RUNTIME_DIR": "/run/user/1000"}
    assert default_state_dir(env, USER) == Path("/home/pi/st/edge-gateway")
    assert default_admin_socket(env, USER) == Path("/run/user/1000/edge-gateway/admin.sock")


def test_a_user_without_xdg_variables_gets_the_spec_defaults() -> None:
    env = {"HOME": "/home/pi"}
    assert default_state_dir(env, USER) == Path("/home/pi/.local/state/edge-gateway")
    # No runtime dir in the session: the socket goes into the (private) state folder.
    assert default_admin_socket(env, USER) == Path("/home/pi/.local/state/edge-gateway/admin.sock")


def test_relative_xdg_values_are_ignored_as_the_spec_says() -> None:
    env = {"HOME": "/home/pi", "XDG_STATE_HOME": "rel/state", "XDG_RUNTIME_DIR": "rel/run"}
    assert default_state_dir(env, USER) == Path("/home/pi/.local/state/edge-gateway")
    assert default_admin_socket(env, USER).parent == Path("/home/pi/.local/state/edge-gateway")


def test_config_path_from_the_variable_then_the_unit_then_etc() -> None:
    assert default_config_path({"EDGE_GATEWAY_CONFIG": "/x/gw.yaml", **UNIT}) == Path("/x/gw.yaml")
    unit = {"CONFIGURATION_DIRECTORY": "/etc/gw-test"}
    assert default_config_path(unit) == Path("/etc/gw-test/gateway.yaml")
    assert default_config_path({}) == Path("/etc/edge-gateway/gateway.yaml")


def test_a_config_without_paths_takes_its_defaults_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("x")
    config_file = tmp_path / "gateway.yaml"
    config_file.write_text(
        "thing: pi\nmqtt: {host: h.example, ca: ca.pem, cert: cert.pem, key: key.pem}\n"
    )
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "run"))
    config = load_config(config_file, check_files=False)
    assert config.state_dir == tmp_path / "state"
    assert config.admin_socket == tmp_path / "run" / "admin.sock"
