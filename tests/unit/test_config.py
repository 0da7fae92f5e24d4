"""Config loading: each bad input names file:line:col, the dotted key and what was expected."""

from __future__ import annotations

import shutil
import textwrap
import tracemalloc
from pathlib import Path

import pytest

from gateway.config import BOARD_TO_BCM, GatewayConfig, load_config, parse_pin
from gateway.errors import ConfigError
from gateway.paths import default_state_dir

REPO = Path(__file__).resolve().parents[2]

GOOD = """\
thing: kitchen-pi
mqtt:
  host: broker.example
  ca: ca.pem
  cert: cert.pem
  key: key.pem
devices:
  led: {type: LED, pin: 17}
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
    """The problems found, without the notes on checks that could not run (tested apart)."""
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return [line for line in caught.value.problems if ": note: " not in line]


def test_valid_config_loads_with_paths_resolved_against_its_folder(cfg_dir: Path) -> None:
    config = load_config(write(cfg_dir, GOOD))
    assert config.mqtt.ca == cfg_dir / "ca.pem"
    assert config.state_dir == default_state_dir()  # systemd, FHS (root) or XDG


def test_unknown_key_is_reported_with_line_and_dotted_key(cfg_dir: Path) -> None:
    path = write(cfg_dir, GOOD.replace("  key: key.pem\n", "  key: key.pem\n  colour: blue\n"))
    [line] = problems(path)
    assert line.startswith(f"{path}:7:3: mqtt.colour: unknown key")


def test_wrong_type_names_the_expected_type(cfg_dir: Path) -> None:
    path = write(cfg_dir, GOOD.replace("  ca: ca.pem", "  ca: ca.pem\n  keepalive_s: soon"))
    [line] = problems(path)
    assert line.startswith(f"{path}:5:3: mqtt.keepalive_s:")
    assert "integer" in line


def test_out_of_range_keepalive_says_the_limit(cfg_dir: Path) -> None:
    path = write(cfg_dir, GOOD.replace("  ca: ca.pem", "  ca: ca.pem\n  keepalive_s: 2"))
    [line] = problems(path)
    assert "mqtt.keepalive_s" in line and "greater than or equal to 5" in line


def test_missing_required_key_points_at_its_parent(cfg_dir: Path) -> None:
    path = write(cfg_dir, GOOD.replace("  host: broker.example\n", ""))
    [line] = problems(path)
    assert line.startswith(f"{path}:2:1: mqtt.host: required key is missing")


def test_missing_cert_file_is_an_error_naming_the_file(cfg_dir: Path) -> None:
    (cfg_dir / "cert.pem").unlink()
    path = write(cfg_dir, GOOD)
    [line] = problems(path)
    assert line.startswith(f"{path}:5:3: mqtt.cert: file {cfg_dir / 'cert.pem'} does not exist")


def test_a_home_of_no_user_stays_as_written_and_is_reported_missing(cfg_dir: Path) -> None:
    path = write(cfg_dir, GOOD.replace("  ca: ca.pem", "  ca: ~no-such-user-here/ca.pem"))
    [line] = problems(path)
    assert line == (
        f"{path}:4:3: mqtt.ca: file {cfg_dir / '~no-such-user-here' / 'ca.pem'} does not exist"
    )


def test_two_devices_on_one_pin_is_an_error(cfg_dir: Path) -> None:
    path = write(cfg_dir, GOOD + "  relay: {type: OutputDevice, pin: GPIO17}\n")
    [line] = problems(path)
    assert line.startswith(
        f"{path}:9:31: devices.relay.pin: GPIO17 is already used by device 'led'"
    )


def test_board_numbering_clash_is_found_after_translation(cfg_dir: Path) -> None:
    path = write(cfg_dir, GOOD + "  relay: {type: OutputDevice, pin: BOARD11}\n")
    [line] = problems(path)
    assert "GPIO17 is already used" in line


def test_unknown_device_type_lists_the_known_ones(cfg_dir: Path) -> None:
    path = write(cfg_dir, GOOD + "  x: {type: Frob, pin: 3}\n")
    [line] = problems(path)
    assert line.startswith(f"{path}:9:7: devices.x.type: unknown device type 'Frob'")
    assert "'Button'" in line


def test_device_option_of_another_type_is_an_unknown_key(cfg_dir: Path) -> None:
    path = write(cfg_dir, GOOD + "  b: {type: Button, pin: 4, frequency_hz: 10}\n")
    [line] = problems(path)
    assert "devices.b.frequency_hz: unknown key" in line


def test_out_of_range_pwm_initial_is_reported(cfg_dir: Path) -> None:
    path = write(cfg_dir, GOOD + "  fan: {type: PWMLED, pin: 18, initial: 2}\n")
    [line] = problems(path)
    assert "devices.fan.initial" in line and "less than or equal to 1" in line


def test_every_problem_is_listed_not_just_the_first(cfg_dir: Path) -> None:
    path = write(cfg_dir, GOOD + "  a: {type: LED}\n  b: {type: LED, pin: 99}\n")
    lines = problems(path)
    assert len(lines) == 2
    assert "devices.a.pin: required key is missing" in lines[0]
    assert "devices.b.pin: GPIO99 does not exist" in lines[1]


def test_invalid_yaml_reports_the_position(cfg_dir: Path) -> None:
    path = write(cfg_dir, "thing: [unclosed\n")
    [line] = problems(path)
    assert line.startswith(f"{path}:2:1: invalid YAML")


def test_duplicate_yaml_key_is_an_error(cfg_dir: Path) -> None:
    path = write(cfg_dir, GOOD + "  led: {type: LED, pin: 18}\n")
    [line] = problems(path)
    assert line.startswith(f"{path}:9:3: duplicate key 'led'")


def test_gateway_is_a_reserved_device_name(cfg_dir: Path) -> None:
    path = write(cfg_dir, GOOD + "  gateway: {type: LED, pin: 18}\n")
    [line] = problems(path)
    assert "reserved" in line


def test_config_that_would_exceed_the_shadow_size_limit_is_rejected(cfg_dir: Path) -> None:
    many = "".join(
        f"  sensor_with_a_long_descriptive_name_{i}: {{type: LoadAverage}}\n" for i in range(200)
    )
    path = write(cfg_dir, GOOD + many)
    [line] = problems(path)
    assert "devices:" in line and "8192" in line


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    [line] = problems(tmp_path / "absent.yaml")
    assert "cannot read config file" in line


@pytest.mark.parametrize(
    ("text", "bcm"), [(17, 17), ("GPIO17", 17), ("BCM4", 4), ("BOARD11", 17), ("board40", 21)]
)
def test_pin_forms_are_translated_to_bcm(text: object, bcm: int) -> None:
    assert parse_pin(text) == bcm


@pytest.mark.parametrize("bad", [True, "P1-11", 28, -1, "BOARD1", 3.5])
def test_bad_pins_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match=r"pin|GPIO|BOARD"):
        parse_pin(bad)


def test_board_table_maps_to_distinct_bcm_pins() -> None:
    assert len(set(BOARD_TO_BCM.values())) == len(BOARD_TO_BCM) == 28


def test_shipped_example_config_is_valid(tmp_path: Path) -> None:
    example = tmp_path / "gateway.yaml"
    shutil.copy(REPO / "config" / "gateway.example.yaml", example)
    (tmp_path / "certs").mkdir()
    for name in ("AmazonRootCA1.pem", "cert.pem", "privkey.pem"):
        (tmp_path / "certs" / name).write_text("placeholder")
    config = load_config(example)
    assert isinstance(config, GatewayConfig)
    assert set(config.devices) == {"led", "relay", "fan", "servo", "button", "motion", "cpu"}


def test_shipped_demo_config_is_valid_on_mock_gpio(tmp_path: Path) -> None:
    files = {}
    for name in ("ca", "cert", "key"):
        files[name] = str(tmp_path / f"{name}.pem")
        (tmp_path / f"{name}.pem").write_text("placeholder")
    config = load_config(REPO / "config" / "demo.yaml", overrides={"mqtt": files})
    assert config.mock_gpio
    assert "button" in config.devices


@pytest.mark.parametrize("kind", ["Servo", "AngularServo"])
def test_servo_pulse_widths_must_be_ordered(kind: str) -> None:
    from gateway.config import AngularServoConfig, ServoConfig

    model = ServoConfig if kind == "Servo" else AngularServoConfig
    with pytest.raises(ValueError, match="min_pulse_width_ms must be below max_pulse_width_ms"):
        model(type=kind, pin=12, min_pulse_width_ms=2.0, max_pulse_width_ms=1.5)


# --- YAML loading is bounded (issue 19) -----------------------------------------------------


def alias_bomb(levels: int) -> str:
    """ "Billion laughs": each level is nine aliases of the one before (9**levels strings)."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for n in range(1, levels):
        lines.append(f"l{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_yaml_alias_bomb_is_refused_at_its_line_before_it_is_expanded(tmp_path: Path) -> None:
    path = write(tmp_path, alias_bomb(6))  # 531,441 strings: too many for any config
    tracemalloc.start()
    try:
        [line] = problems(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Refused at the first level that stands for more than MAX_NODES values, nothing built.
    assert line.startswith(f"{path}:6:5: invalid YAML: its aliases expand to more than 100000")
    assert peak < 5 * 1024 * 1024


def test_yaml_merge_key_bomb_is_refused_too(tmp_path: Path) -> None:
    lines = ["m0: &m0 {x: 1, y: 2}"]
    for n in range(1, 10):
        lines.append(f"m{n}: &m{n} {{<<: [" + ", ".join([f"*m{n - 1}"] * 9) + "]}")
    [line] = problems(write(tmp_path, "\n".join(lines) + "\n"))
    assert "its aliases expand to more than" in line


def test_a_few_aliases_and_merge_keys_still_load(tmp_path: Path) -> None:
    from gateway.config.yamlsource import load_yaml

    text = "base: &b {type: LED}\nled: {<<: *b, pin: 17}\nl: &l [1, 2]\nboth: [*l, *l]\n"
    document = load_yaml(write(tmp_path, text))
    assert document.data["led"] == {"type": "LED", "pin": 17}
    assert document.data["both"] == [[1, 2], [1, 2]]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: &a [1, *a]\n", "1:11: invalid YAML: alias *a refers to the node that contains it"),
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", "1:67: invalid YAML: nested deeper than 64"),
        ("a: " + "9" * 5000 + "\n", "1:4: cannot read this value: Exceeds the limit"),
        ("a: 2024-13-45\n", "1:4: cannot read this value: month must be in 1..12"),
    ],
    ids=["alias_cycle", "nested_5000_deep", "int_5000_digits", "impossible_date"],
)
def test_yaml_that_used_to_escape_as_a_traceback_is_a_config_error(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    [line] = problems(path)
    assert line.startswith(f"{path}:{expected}")


def test_config_file_over_the_size_cap_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    with path.open("wb") as sparse:
        sparse.truncate(2 * 1024 * 1024)  # nothing written: reading it would be the bug
    [line] = problems(path)
    assert line == f"{path}: file is 2097152 bytes, more than the 1048576 allowed"


def test_config_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_bytes(b"thing: caf\xe9\n")
    [line] = problems(path)
    assert line == f"{path}: not UTF-8 text (byte 10): expected a YAML config"


@pytest.mark.parametrize("count", [1, 20, 35, 45, 50, 60, 120])
def test_every_device_refused_at_once_still_fits_the_shadow_limit(
    cfg_dir: Path, count: int
) -> None:
    """The worst error report (every device refused, reasons as long as allowed) fits the
    shadow's 8 KB for any config the size check accepts."""
    import json

    from gateway.config import SHADOW_DOCUMENT_LIMIT_BYTES, error_reason_chars

    devices = "".join(
        f"  sensor_{index:03d}_{'x' * 40}: {{type: LoadAverage}}\n" for index in range(count)
    )
    text = GOOD.replace("devices:\n  led: {type: LED, pin: 17}\n", "devices:\n" + devices)
    path = write(cfg_dir, text)
    try:
        config = load_config(path)
    except ConfigError as exc:
        assert any("would be about" in line for line in exc.problems)  # too big: refused
        return
    chars = error_reason_chars(config)
    reported = {name: -123456.123456 for name in config.devices}
    reported["gateway"] = {  # type: ignore[assignment]
        "version": "0.1.0",
        "errors": {name: "x" * chars for name in config.devices},
    }
    size = len(json.dumps({"state": {"reported": reported}}, separators=(",", ":")))
    assert size <= SHADOW_DOCUMENT_LIMIT_BYTES
