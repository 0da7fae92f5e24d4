"""Validating a config part by part (gateway.config.lazyvalidate): the same config as the full
validation, and only the device validators the config names are built."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from gateway.config.lazyvalidate import validate_config
from gateway.config.schema import GatewayConfig

REPO = Path(__file__).resolve().parents[2]

EVERY_KIND = """\
thing: pi-1
mqtt: {host: broker.example, ca: ca.pem, cert: cert.pem, key: key.pem, keepalive_s: 30}
interlock: [relay, motor]
metrics: {listen: "127.0.0.1:9108"}
certs: {renew_before_days: 10}
devices:
  led:    {type: LED, pin: 17, on_disconnect: {after_s: 5, value: false}, map: {true: on}}
  relay:  {type: OutputDevice, pin: GPIO27, active_high: false, pulse_ms: 500}
  fan:    {type: PWMLED, pin: 18, frequency_hz: 100, digits: 2, follow: led}
  rgb:    {type: RGBLED, red: 5, green: 6, blue: 13, initial: [0, 0.5, 1]}
  servo:  {type: Servo, pin: 12, min_pulse_width_ms: 0.9}
  arm:    {type: AngularServo, pin: 19, min_angle: 0, max_angle: 180, initial: 90}
  motor:  {type: Motor, forward: 20, backward: 21, enable: 16}
  button: {type: Button, pin: 4, pull_up: true, bounce_ms: 20, events: true}
  pir:    {type: MotionSensor, pin: 23}
  cpu:    {type: CPUTemperature, interval_s: 30, digits: 1}
  disk:   {type: DiskUsage, filesystem: /var}
  adc:    {type: MCP3008, channel: 0, interval_s: 2}
"""


@pytest.mark.parametrize(
    "text",
    [
        EVERY_KIND,
        (REPO / "config" / "gateway.example.yaml").read_text(),
        (REPO / "config" / "demo.yaml").read_text(),
    ],
    ids=["every-kind", "example", "demo"],
)
def test_part_by_part_gives_the_same_config_as_the_full_validation(
    text: str, tmp_path: Path
) -> None:
    data = yaml.safe_load(text)
    context = {"base_dir": tmp_path}
    quick = validate_config(data, context)
    full = GatewayConfig.model_validate(data, context=context)
    assert quick == full
    assert quick.model_fields_set == full.model_fields_set
    assert quick.model_dump() == full.model_dump()
    for name, device in quick.devices.items():
        assert type(device) is type(full.devices[name])
        assert device.model_fields_set == full.devices[name].model_fields_set


def test_an_invalid_device_raises_the_full_validations_error(tmp_path: Path) -> None:
    data = yaml.safe_load(EVERY_KIND)
    data["devices"]["led"]["pin"] = 99
    data["devices"]["cpu"]["type"] = "Thermometer"
    with pytest.raises(ValidationError) as quick:
        validate_config(data, {"base_dir": tmp_path})
    with pytest.raises(ValidationError) as full:
        GatewayConfig.model_validate(data, context={"base_dir": tmp_path})
    assert len(quick.value.errors()) == 2
    assert quick.value.errors(include_context=False) == full.value.errors(include_context=False)


def test_loading_the_example_builds_only_the_device_types_it_names(tmp_path: Path) -> None:
    """In a fresh interpreter (other tests here build every model)."""
    config = tmp_path / "gateway.yaml"
    config.write_text((REPO / "config" / "gateway.example.yaml").read_text())
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from gateway.config import load_config, schema\n"
        "load_config(Path(sys.argv[1]), check_files=False)\n"
        "for name in ('BinaryOutputConfig', 'PwmOutputConfig', 'ServoConfig',\n"
        "             'DigitalInputConfig', 'SystemSensorConfig', 'RgbLedConfig',\n"
        "             'AngularServoConfig', 'MotorConfig', 'Mcp3008Config', 'GatewayConfig'):\n"
        "    print(name, getattr(schema, name).__pydantic_complete__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(config)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    built = dict(line.split() for line in result.stdout.splitlines())
    assert built == {
        "BinaryOutputConfig": "True",
        "PwmOutputConfig": "True",
        "ServoConfig": "True",
        "DigitalInputConfig": "True",
        "SystemSensorConfig": "True",
        "RgbLedConfig": "False",
        "AngularServoConfig": "False",
        "MotorConfig": "False",
        "Mcp3008Config": "False",
        "GatewayConfig": "False",  # the union of every device type is never built
    }
