"""Every problem of a config in one pass: duplicates, field errors and cross-device checks
together, a note where a check could not run, and the closest key for a misspelt one."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.config.suggest import closest_key
from gateway.errors import ConfigError

HEAD = """\
thing: kitchen-pi
mqtt:
  host: broker.example
  ca: ca.pem
  cert: cert.pem
  key: key.pem
"""


@pytest.fixture
def cfg_dir(tmp_path: Path) -> Path:
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("placeholder")
    return tmp_path


def all_problems(directory: Path, text: str) -> list[str]:
    path = directory / "gateway.yaml"
    path.write_text(HEAD + textwrap.dedent(text))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.problems


def test_duplicates_field_errors_and_shared_pins_are_reported_together(cfg_dir: Path) -> None:
    lines = all_problems(
        cfg_dir,
        """\
        thing: other
        devices:
          led: {type: LED, pin: 17}
          fan: {type: PWMLED, pin: 17}
          servo: {type: Servo, pin: 99}
        """,
    )
    text = "\n".join(lines)
    assert "duplicate key 'thing' (first at line 1" in text
    assert "devices.servo.pin:" in text
    assert "devices.fan.pin: GPIO17 is already used by device 'led'" in text


def test_a_note_names_the_devices_the_cross_checks_left_out(cfg_dir: Path) -> None:
    lines = all_problems(
        cfg_dir,
        """\
        devices:
          led: {type: LED, pin: 17}
          bad: {type: LED, pin: 17, colour: red}
        """,
    )
    [note] = [line for line in lines if ": note: " in line]
    assert "could not include 'bad'" in note


def test_a_follow_of_a_device_with_errors_is_not_called_unknown(cfg_dir: Path) -> None:
    lines = all_problems(
        cfg_dir,
        """\
        devices:
          lamp: {type: LED, pin: 17, follow: switch}
          switch: {type: Button}
        """,
    )
    assert not any("unknown device 'switch'" in line for line in lines)
    assert any("devices.switch.pin: required key is missing" in line for line in lines)


def test_a_misspelt_device_option_suggests_the_closest_key(cfg_dir: Path) -> None:
    lines = all_problems(
        cfg_dir,
        """\
        devices:
          fan: {type: PWMLED, pin: 18, frequency: 100}
        """,
    )
    assert any(
        line.endswith("devices.fan.frequency: unknown key; did you mean `frequency_hz`?")
        for line in lines
    ), lines


def test_a_misspelt_nested_key_suggests_the_closest_key() -> None:
    assert closest_key(("mqtt", "keepalive")) == "keepalive_s"
    assert closest_key(("mqtt", "reconnect", "mins")) == "min_s"


def test_a_key_close_to_nothing_gets_no_suggestion() -> None:
    assert closest_key(("devices", "led", "LED", "zzzzzz")) is None
    assert closest_key(("devices", "led", "LED", "bounce")) is None  # LED has no bounce_ms


def test_a_misspelt_device_type_suggests_the_closest_type(cfg_dir: Path) -> None:
    lines = all_problems(cfg_dir, "devices:\n  led: {type: Led, pin: 17}\n")
    assert any(line.endswith("unknown device type 'Led'; did you mean `LED`?") for line in lines)


def test_a_device_type_close_to_none_lists_the_types(cfg_dir: Path) -> None:
    lines = all_problems(cfg_dir, "devices:\n  x: {type: Frob, pin: 17}\n")
    assert any("unknown device type 'Frob'; expected one of 'LED'" in line for line in lines)
