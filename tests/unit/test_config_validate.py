"""The plain validation (gateway.config.validate) agrees with pydantic's (gateway.config.strict):
whatever it accepts, pydantic accepts as the same config, and the configs users write go through
it without loading pydantic at all."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config.rules import ConfigInvalid
from gateway.config.schema import GatewayConfig, ProvisionSetup
from gateway.config.strict import validate_strictly
from gateway.config.validate import Unsure, parse, validate

REPO = Path(__file__).resolve().parents[2]

EVERY_KIND = """\
thing: pi-1
mqtt: {host: broker.example, ca: ca.pem, cert: cert.pem, key: key.pem, keepalive_s: 30,
       reconnect: {min_s: 2, max_s: 60}, will_topic: pi/status}
shadow: {name: garden, clear_desired: section, send_timestamp: true}
interlock: [[relay, motor], [led, fan]]
metrics: {listen: "127.0.0.1:9108"}
certs: {renew_before_days: 10}
outbox: {max_events: 1000, sync: normal}
logging: {format: json, level: debug}
checkin: {url: "https://cloud.example/provision/checkin", product_id: gw, interval_s: 600,
          extra: {site: north, floor: 2, lab: true}, retry: {min_s: 5, max_s: 50}}
ota: {mode: wheel, root: slots, pip_args: [--no-index], window: "02:00-04:00"}
devices:
  led:    {type: LED, pin: 17, on_disconnect: {after_s: 5, value: false}, map: {true: on}}
  relay:  {type: OutputDevice, pin: GPIO27, active_high: false, pulse_ms: 500, on_shutdown: false}
  fan:    {type: PWMLED, pin: BOARD12, frequency_hz: 100, digits: 2, follow: led, scale: 100}
  rgb:    {type: RGBLED, red: 5, green: 6, blue: 13, initial: [0, 0.5, 1]}
  servo:  {type: Servo, pin: 12, min_pulse_width_ms: 0.9, on_disconnect: {after_s: 1, value: 0}}
  arm:    {type: AngularServo, pin: 19, min_angle: 0, max_angle: 180, initial: 90}
  motor:  {type: Motor, forward: 20, backward: 21, enable: 16, follow: {device: led, mode: toggle}}
  button: {type: Button, pin: 4, pull_up: true, bounce_ms: 20, events: true, datapoint: Pressed}
  pir:    {type: MotionSensor, pin: 23, active_state: true}
  cpu:    {type: CPUTemperature, interval_s: 30, digits: 1, offset: -2.5}
  disk:   {type: DiskUsage, filesystem: /var}
  adc:    {type: MCP3008, channel: 0, interval_s: 2, differential: true}
"""

OTHER_CLOUDS = """\
state_dir: state
admin_socket: run/admin.sock
thinx:
  url: https://thinx.example:7443/
  owner: "0a1b2c"
  api_key_file: thinx.key
  alias: kitchen
  status: "door {door}"
  on_configuration: [/usr/bin/true]
  mqtt: {host: thinx.example, ca: ca.pem, retain_status: true}
mindconnect: {tenant: acme, ca: ca.pem, chain: chain.pem, publish_interval_ms: 0}
credentials: {source: getcreds, url: "https://cloud.example/provision/getCreds",
              http: {listen: "127.0.0.1:8790"}, retry: {min_s: 1, max_s: 10}}
logging: {cloudwatch: {group: /edge/pi, flush_s: 2}}
devices:
  door: {type: Button, pin: 4}
"""

ROLE_ALIAS = """\
thing: pi-2
mqtt: {host: broker.example, ca: ca.pem, username: pi, password_file: pw}
credentials: {source: role_alias, endpoint: "abc.credentials.iot.eu-west-1.amazonaws.com",
              role_alias: gw-role, region: eu-west-1}
provision: {getcerts: {url: "https://cloud.example", claim_id: c-1}}
devices: {}
"""

SAMPLES = {
    "every-kind": EVERY_KIND,
    "other-clouds": OTHER_CLOUDS,
    "example": (REPO / "config" / "gateway.example.yaml").read_text(),
    "demo": (REPO / "config" / "demo.yaml").read_text(),
}
SAMPLES["role-alias"] = ROLE_ALIAS.replace(
    'provision: {getcerts: {url: "https://cloud.example", claim_id: c-1}}\n', ""
)
CONTEXT = {"base_dir": Path("/etc/edge-gateway")}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_the_plain_validation_takes_each_sample_as_pydantic_does(name: str) -> None:
    data = yaml.safe_load(SAMPLES[name])
    plain = validate(GatewayConfig, data, CONTEXT)  # Unsure here would fail the test
    assert plain == validate_strictly(GatewayConfig, data, CONTEXT)
    assert repr(plain) == repr(validate_strictly(GatewayConfig, data, CONTEXT))


def test_the_provisioning_view_is_read_the_same_way() -> None:
    data = yaml.safe_load(ROLE_ALIAS)
    data["mqtt"] |= {"cert": "c.pem", "key": "k.pem", "unknown": 1}  # extra keys are ignored
    plain = validate(ProvisionSetup, data, CONTEXT)
    assert plain == validate_strictly(ProvisionSetup, data, CONTEXT)
    assert plain.mqtt.cert == Path("/etc/edge-gateway/c.pem")


def test_a_value_pydantic_would_coerce_is_left_to_pydantic() -> None:
    data = yaml.safe_load(SAMPLES["example"])
    data["mqtt"]["port"] = "8883"  # pydantic's lax mode reads a numeric string as an int
    with pytest.raises(Unsure):
        validate(GatewayConfig, data, CONTEXT)
    config = parse(GatewayConfig, data, CONTEXT)
    assert config.mqtt is not None and config.mqtt.port == 8883


def test_an_integer_past_a_floats_range_is_an_error_not_a_crash() -> None:
    data = yaml.safe_load(SAMPLES["example"])
    data["devices"]["cpu"]["interval_s"] = 10**400
    with pytest.raises(ConfigInvalid) as caught:
        parse(GatewayConfig, data, CONTEXT)
    assert [error["loc"][-1] for error in caught.value.errors] == ["interval_s"]


def test_a_problem_is_worded_by_pydantic() -> None:
    data = yaml.safe_load(SAMPLES["example"])
    data["devices"]["led"]["pin"] = 99
    data["mqtt"]["keepalive"] = 30
    with pytest.raises(ConfigInvalid) as caught:
        parse(GatewayConfig, data, CONTEXT)
    kinds = {(error["type"], error["loc"][-1]) for error in caught.value.errors}
    assert kinds == {("value_error", "pin"), ("unexpected_keyword_argument", "keepalive")}


# -- agreement on arbitrary edits of valid configs ------------------------------------------

LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.sampled_from([10**400, -(10**400), 2**1023, 2**53 + 1]),  # past a float's range and grain
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "x", "17", "GPIO4", "BOARD7", "LED", "Button", "section", "a\n", "-1",
                     "/abs/path", "rel/path", "127.0.0.1:9108", "02:00-04:00", "https://h.example"]),
    st.lists(st.integers(min_value=-2, max_value=300), max_size=4),
    st.dictionaries(st.sampled_from(["type", "pin", "device"]), st.integers(0, 30), max_size=2),
)  # fmt: skip


def _paths(value: Any, where: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [where]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*where, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*where, index))
    return found


def _edited(data: Any, path: tuple[Any, ...], action: str, leaf: Any) -> Any:
    data = copy.deepcopy(data)
    if not path:
        return leaf if action == "set" else data
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if action == "set":
        parent[last] = leaf
    elif action == "drop" and isinstance(parent, dict):
        del parent[last]
    elif action == "add" and isinstance(parent, dict):
        parent[f"{last}_x"] = leaf
    return data


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sample=st.sampled_from(sorted(SAMPLES)),
    choice=st.integers(min_value=0),
    action=st.sampled_from(["set", "drop", "add"]),
    leaf=LEAVES,
)
def test_whatever_the_plain_validation_accepts_pydantic_accepts_as_the_same_config(
    sample: str, choice: int, action: str, leaf: Any
) -> None:
    original = yaml.safe_load(SAMPLES[sample])
    paths = _paths(original)
    data = _edited(original, paths[choice % len(paths)], action, leaf)
    try:
        plain = validate(GatewayConfig, data, CONTEXT)
    except Unsure:
        return  # pydantic decides: nothing to compare
    assert plain == validate_strictly(GatewayConfig, data, CONTEXT)


def test_loading_the_example_does_not_import_pydantic(tmp_path: Path) -> None:
    """In a fresh interpreter (this one has loaded pydantic for the tests above)."""
    config = tmp_path / "gateway.yaml"
    config.write_text((REPO / "config" / "gateway.example.yaml").read_text())
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from gateway.config import load_config\n"
        "config = load_config(Path(sys.argv[1]), check_files=False)\n"
        "print(len(config.devices), any(m.split('.')[0] == 'pydantic' for m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(config)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    devices = len(yaml.safe_load(config.read_text())["devices"])
    assert result.stdout.split() == [str(devices), "False"]
