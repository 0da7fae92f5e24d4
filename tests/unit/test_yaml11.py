"""Config values YAML 1.1 would read as something other than what was written: names are read
as written, numbers that would silently change (octal, base 60) are errors at FILE:LINE:COL."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.config import load_config, load_provision_setup
from gateway.errors import ConfigError

HEAD = """\
mqtt: {host: h, ca: ca.pem, cert: cert.pem, key: key.pem}
"""


@pytest.fixture
def cfg_dir(tmp_path: Path) -> Path:
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("placeholder")
    return tmp_path


def write(directory: Path, text: str) -> Path:
    path = directory / "gateway.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.problems


@pytest.mark.parametrize("name", ["00000001", "0017", "1:20", "2024-01-01", "yes", "0x1F"])
def test_an_unquoted_thing_name_loads_as_written(cfg_dir: Path, name: str) -> None:
    config = load_config(write(cfg_dir, f"thing: {name}\n{HEAD}"))
    assert config.thing == name


def test_the_provisioning_view_reads_the_thing_name_as_written_too(cfg_dir: Path) -> None:
    setup = load_provision_setup(write(cfg_dir, f"thing: 00000001\n{HEAD}"))
    assert setup.thing == "00000001"


@pytest.mark.parametrize("value", ["1.5", ".inf", "null"])
def test_a_value_that_cannot_be_a_thing_name_is_a_clear_error(cfg_dir: Path, value: str) -> None:
    path = write(cfg_dir, f"{HEAD}thing: {value}\n")
    [line] = problems(path)
    assert line.startswith(f"{path}:2:1: thing: ")
    assert "is not a thing name: expected 1-128 characters of a-z A-Z 0-9 : _ -" in line


def test_a_leading_zero_pin_is_an_error_saying_to_write_the_decimal_number(cfg_dir: Path) -> None:
    path = write(cfg_dir, f"thing: t\n{HEAD}devices:\n  led: {{type: LED, pin: 017}}\n")
    [line] = problems(path)
    assert line.startswith(f"{path}:4:20: devices.led.pin: ")
    assert "017 is 15" in line and line.endswith("write 17")


def test_a_leading_zero_pin_yaml_keeps_as_text_gets_the_same_advice(cfg_dir: Path) -> None:
    path = write(cfg_dir, f"thing: t\n{HEAD}devices:\n  led: {{type: LED, pin: 09}}\n")
    [line] = problems(path)  # one line: the validation's own complaint adds nothing
    assert line.startswith(f"{path}:4:20: devices.led.pin: ") and line.endswith("write 9")


def test_an_rgb_pin_with_a_leading_zero_is_refused_too(cfg_dir: Path) -> None:
    path = write(
        cfg_dir,
        f"thing: t\n{HEAD}devices:\n  rgb: {{type: RGBLED, red: 5, green: 06, blue: 13}}\n",
    )
    [line] = problems(path)
    assert "devices.rgb.green: " in line and line.endswith("write 6")


@pytest.mark.parametrize("name", ["off", "yes", "on", "no", "true", "False"])
def test_device_names_yaml_reads_as_booleans_stay_names(cfg_dir: Path, name: str) -> None:
    text = f"thing: t\n{HEAD}devices:\n  {name}: {{type: LED, pin: 17}}\n"
    config = load_config(write(cfg_dir, text))
    assert list(config.devices) == [name]


def test_follow_and_interlock_name_devices_yaml_would_read_as_booleans(cfg_dir: Path) -> None:
    text = f"""\
thing: t
{HEAD}devices:
  on:   {{type: Button, pin: 4}}
  off:  {{type: OutputDevice, pin: 5, follow: on}}
  yes:  {{type: OutputDevice, pin: 6, follow: {{device: on, mode: invert}}}}
interlock: [off, yes]
"""
    config = load_config(write(cfg_dir, text))
    assert config.devices["off"].follow.device == "on"  # type: ignore[union-attr]
    assert config.devices["yes"].follow.device == "on"  # type: ignore[union-attr]
    assert config.interlock_groups == [["off", "yes"]]


def test_two_spellings_of_one_device_name_are_a_duplicate(cfg_dir: Path) -> None:
    path = write(cfg_dir, f"thing: t\n{HEAD}devices:\n  'on': {{}}\n  on: {{}}\n")
    assert problems(path) == [f"{path}:5:3: duplicate key 'on'"]


def test_an_octal_number_anywhere_is_an_error_with_what_to_write(cfg_dir: Path) -> None:
    path = write(
        cfg_dir,
        f"thing: t\n{HEAD}checkin:\n  url: https://h/c\n  product_id: gw\n"
        "  interval_s: 0100\n  extra: {serial: 0123}\n",
    )
    lines = problems(path)
    assert any(
        line.startswith(f"{path}:6:3: checkin.interval_s: 0100: ") and "this is 64" in line
        for line in lines
    )
    assert any(
        "checkin.extra.serial: 0123:" in line and "quote it ('0123') for text" in line
        for line in lines
    )


def test_a_base_60_number_is_an_error(cfg_dir: Path) -> None:
    path = write(
        cfg_dir, f"thing: t\n{HEAD}devices:\n  b: {{type: Button, pin: 4, bounce_ms: 1:30}}\n"
    )
    [line] = problems(path)
    assert "devices.b.bounce_ms: 1:30: YAML 1.1 reads numbers with ':' in base 60" in line
    assert "so this is 90" in line


@pytest.mark.parametrize("value", ["0", "17", "0x11", "1_7", "'017'"])
def test_numbers_that_mean_what_they_say_are_not_flagged(cfg_dir: Path, value: str) -> None:
    text = (
        f"thing: t\n{HEAD}devices:\n  c: {{type: CPUTemperature, interval_s: 5, digits: {value}}}\n"
    )
    try:
        load_config(write(cfg_dir, text))
    except ConfigError as exc:  # digits 17 or "017" may be refused by the model, not by YAML
        assert not any("YAML 1.1" in line for line in exc.problems)
