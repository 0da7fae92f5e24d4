"""Which clouds a config sets up: at least one; the shadow link needs its thing and broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.errors import ConfigError

DEVICES = "devices:\n  led: {type: LED, pin: 17}\n"
MQTT = "mqtt:\n  host: broker.example\n  ca: ca.pem\n  cert: cert.pem\n  key: key.pem\n"


def problems(tmp_path: Path, text: str) -> str:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, check_files=False)
    return "\n".join(caught.value.problems)


def test_a_config_without_any_cloud_says_which_block_is_expected(tmp_path: Path) -> None:
    text = problems(tmp_path, DEVICES)
    assert "gateway.yaml:1:1: mqtt: required key is missing: expected 'mqtt'" in text


def test_a_broker_without_its_thing_is_reported_beside_field_errors(tmp_path: Path) -> None:
    text = problems(tmp_path, MQTT.replace("host: broker.example", "port: 0") + DEVICES)
    assert "thing: required key is missing" in text
    assert "mqtt.host: required key is missing" in text


def test_a_thing_alone_is_no_cloud(tmp_path: Path) -> None:
    text = problems(tmp_path, "thing: kitchen-pi\n" + DEVICES)
    assert "mqtt: required key is missing: expected 'mqtt'" in text


def test_checkin_needs_the_shadow_link(tmp_path: Path) -> None:
    text = problems(
        tmp_path, "checkin: {url: 'https://cloud.example/checkin', product_id: p1}\n" + DEVICES
    )
    assert "checkin: needs the shadow link: expected 'thing' and 'mqtt'" in text


def test_thing_and_broker_together_load(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("thing: kitchen-pi\n" + MQTT + DEVICES)
    config = load_config(path, check_files=False)
    assert config.has_shadow
    assert config.shadow_thing == "kitchen-pi"
