"""``mqtt.username`` and ``mqtt.password_file`` for the main MQTT link: a broker that logs in
with a password (the dev THiNX server's mosquitto: TLS, no client certificates)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway.app import build_gateway
from gateway.config import load_config
from gateway.devcloud import DevCA
from gateway.devcloud.thinx import ThinxBroker, mosquitto_password_hash
from gateway.devices.gpio import make_pin_factory

pytestmark = pytest.mark.integration


@pytest.fixture
async def password_broker(tmp_path: Path, dev_ca: DevCA) -> AsyncIterator[ThinxBroker]:
    broker = ThinxBroker(tmp_path / "pw-broker", dev_ca)
    broker.set_login("pw-user", mosquitto_password_hash("s3cret"), "owner")
    await asyncio.to_thread(broker.start)
    yield broker
    await asyncio.to_thread(broker.stop)


def config_for(tmp_path: Path, broker: ThinxBroker, password: str) -> Path:
    secret = tmp_path / "mqtt.password"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    path = tmp_path / "gateway.yaml"
    path.write_text(
        f"""\
thing: pw-thing
mqtt:
  host: {broker.host}
  port: {broker.port}
  ca: {broker.ca_path}
  username: pw-user
  password_file: {secret}
  reconnect: {{min_s: 0.05, max_s: 0.2}}
gpio: {{pin_factory: mock}}
state_dir: {tmp_path / "state"}
admin_socket: {tmp_path / "admin.sock"}
devices:
  led: {{type: LED, pin: 17}}
"""
    )
    return path


async def run_until(path: Path, event: str, logs: list[dict[str, object]]) -> None:
    factory = make_pin_factory("mock")
    gateway = build_gateway(load_config(path), pin_factory=factory, mock_dir=path.parent / "mock")
    task = asyncio.ensure_future(gateway.run())
    try:
        async with asyncio.timeout(10):
            while not any(e["event"] == event for e in logs):
                await asyncio.sleep(0.02)
    finally:
        gateway.stop()
        await asyncio.wait_for(task, timeout=10)
        factory.close()


async def test_the_main_link_logs_in_with_a_user_name_and_password_over_tls(
    password_broker: ThinxBroker, tmp_path: Path
) -> None:
    with capture_logs() as logs:
        await run_until(config_for(tmp_path, password_broker, "s3cret"), "mqtt_connected", logs)
    assert "s3cret" not in repr(logs)


async def test_a_refused_password_on_the_main_link_is_an_auth_failure(
    password_broker: ThinxBroker, tmp_path: Path
) -> None:
    with capture_logs() as logs:
        await run_until(config_for(tmp_path, password_broker, "wrong"), "mqtt_auth_failed", logs)
    assert not any(e["event"] == "mqtt_connected" for e in logs)
    assert "wrong" not in repr([e for e in logs if e["event"] == "mqtt_auth_failed"])
