"""``edge-gateway ota guard`` without the config models (gateway.updates.ota_guard): the settings
it reads from the YAML are the ones the full config load gives, anything unclear goes through
the full load, and the guard itself counts starts and rolls back as before."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.config import load_config
from gateway.updates.ota_guard import GuardSettings, guard_settings, guard_slots
from gateway.updates.ota_slots import read_slot, switch_slot
from gateway.updates.otastate import MAX_STARTS, OtaState, begin

BASE = """\
thing: pi-1
mqtt: {host: broker.example, ca: ca.pem, cert: cert.pem, key: key.pem}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conf" / "gateway.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "extra",
    [
        "",
        "state_dir: state\n",
        "state_dir: ~/gw-state\nota: {mode: command, command: [echo, '{artifact}']}\n",
        "ota: {mode: wheel}\n",
        "state_dir: /srv/gw\nota: {mode: wheel, root: slots-root, health_timeout_s: 90}\n",
        "ota: {mode: wheel, root: /opt/gw, health_timeout_s: 12.5}\n",
    ],
    ids=["defaults", "relative-state", "command-mode", "wheel-defaults", "relative-root", "abs"],
)
def test_the_settings_read_are_the_full_loads(tmp_path: Path, extra: str) -> None:
    path = write(tmp_path, BASE + extra)
    config = load_config(path, check_files=False)
    wheel = config.ota is not None and config.ota.mode == "wheel"
    expected = GuardSettings(
        config.state_dir,
        config.ota.root if config.ota is not None and wheel else None,
        config.ota.health_timeout_s if config.ota is not None else 300.0,
    )
    assert guard_settings(path) == expected


@pytest.mark.parametrize(
    "environment",
    [{"STATE_DIRECTORY": "/var/lib/edge-gateway"}, {"XDG_STATE_HOME": "/home/pi/.state"}],
    ids=["under-the-unit", "a-user-by-hand"],
)
def test_without_state_dir_the_guard_uses_the_daemons_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, environment: dict[str, str]
) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    path = write(tmp_path, BASE + "ota: {mode: wheel}\n")
    settings = guard_settings(path)
    assert settings is not None
    assert settings.state_dir == load_config(path, check_files=False).state_dir
    assert settings.state_dir == Path(
        environment.get("STATE_DIRECTORY", "/home/pi/.state/edge-gateway")
    )


@pytest.mark.parametrize(
    "text",
    [
        "thing: [unclosed\n",
        "- a list\n",
        BASE + "state_dir: 5\n",
        BASE + "ota: {mode: weel}\n",
        BASE + "ota: {mode: wheel, health_timeout_s: true}\n",
        BASE + "ota: {mode: wheel, health_timeout_s: 0}\n",
        BASE + "ota: {mode: wheel, health_timeout_s: '90'}\n",
        BASE + "ota: {mode: wheel, root: 7}\n",
        BASE + "ota: wheel\n",
    ],
)
def test_anything_unclear_is_left_to_the_full_load(tmp_path: Path, text: str) -> None:
    assert guard_settings(write(tmp_path, text)) is None


def test_the_cli_reports_a_config_problem_with_its_position(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, BASE + "ota: {mode: wheel, health_timeout_s: 0}\n")
    assert main(["ota", "guard", "-c", str(path)]) == 2
    assert "gateway.yaml:3:" in capsys.readouterr().err


def test_the_guard_counts_starts_then_rolls_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "opt"
    (root / "slots" / "a").mkdir(parents=True)
    (root / "slots" / "b").mkdir()
    switch_slot(root, "b", previous="a")
    path = write(
        tmp_path,
        BASE + f"state_dir: {tmp_path / 'state'}\nota: {{mode: wheel, root: {root}}}\n",
    )
    state = begin(
        OtaState(), slot="b", previous="a", version="2", checksum="0" * 64, now=time.time()
    )
    (tmp_path / "state" / "ota").mkdir(parents=True)
    (tmp_path / "state" / "ota" / "state.json").write_bytes(state.dumps())
    for _ in range(MAX_STARTS):
        assert main(["ota", "guard", "-c", str(path)]) == 0
    assert capsys.readouterr().out.splitlines() == ["ota guard: count"] * MAX_STARTS
    assert main(["ota", "guard", "-c", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "ota guard: roll_back"
    assert read_slot(root) == "a" and os.readlink(root / "current") == "slots/a"
    saved = json.loads((tmp_path / "state" / "ota" / "state.json").read_text())
    assert saved["pending"] is None and saved["last"]["state"] == "rolled_back"


def test_without_wheel_mode_the_guard_touches_nothing(tmp_path: Path) -> None:
    settings = GuardSettings(tmp_path / "state", None)
    assert guard_slots(settings) == "none"
    assert not (tmp_path / "state").exists()


def test_in_wheel_mode_without_a_recorded_update_the_guard_touches_nothing(
    tmp_path: Path,
) -> None:
    root = tmp_path / "opt"
    (root / "slots" / "b").mkdir(parents=True)
    switch_slot(root, "b")
    assert guard_slots(GuardSettings(tmp_path / "state", root)) == "none"
    assert not (tmp_path / "state").exists()
    assert read_slot(root) == "b"


def test_a_state_file_that_cannot_be_read_is_still_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "opt"
    (root / "slots" / "b").mkdir(parents=True)
    switch_slot(root, "b")
    (tmp_path / "state" / "ota" / "state.json").mkdir(parents=True)  # a folder: unreadable
    assert guard_slots(GuardSettings(tmp_path / "state", root)) == "none"
    assert "ota_state_unreadable" in capsys.readouterr().out
