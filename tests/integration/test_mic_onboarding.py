"""Managed IoT Cloud onboarding as the Thing API guide describes it, and Ioto's check-in
identity, end to end: real mosquitto with mutual TLS, the dev cloud's shadow service and
Provision API over HTTPS, the gateway on mock GPIO.

- A Thing Batch zip (one folder per thing, cert.pem + privkey.pem, certificates from the dev CA
  as App Board's are from AWS IoT's) goes through ``edge-gateway import-batch``; a config
  without ``thing``, ``mqtt.cert``, ``mqtt.key`` (and ``mqtt.ca``) then syncs as that thing.
- ``shadow.clear_desired: section`` clears the whole desired section (``desired: null``);
  ``true`` clears only the keys it applied.
- With ``send_timestamp`` a value seen during an outage reaches the shadow, after the link is
  back, stamped with the time it was seen.
- A gateway provisioned through getCerts checks in with the answer's ``id`` and shows it and
  the ``accountId`` in its status.
"""

from __future__ import annotations

import asyncio
import json
import random
import stat
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from gateway.cli.main import main
from gateway.config import load_config, load_provision_setup
from gateway.devcloud import DevCA, MosquittoBroker, ShadowClient, ShadowService
from gateway.devcloud.faultproxy import FaultProxy
from gateway.devcloud.provision import ACCOUNT_ID
from gateway.provisioning.provision import provision_at_start
from tests.integration.harness import (
    admin_client,
    gateway_via,
    reported,
    running_config,
    until,
)
from tests.integration.test_devcloud_web import running_devcloud

pytestmark = pytest.mark.integration

DEVICES = """\
devices:
  led:    {type: LED, pin: 17}
  button: {type: Button, pin: 4, pull_up: true}
"""


def batch_names() -> list[str]:
    """Thing names as MIC numbers them (the guide's example is 00000001), unique per test."""
    base = random.randrange(10_000, 99_000)
    return [f"000{base + offset:05d}" for offset in range(3)]


def thing_batch_zip(dev_ca: DevCA, directory: Path, names: list[str]) -> Path:
    """A zip laid out as App Board's Thing Batch: a folder per thing, cert.pem and privkey.pem
    (the CA is not in it: the guide has it downloaded separately)."""
    path = directory / "batch.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in names:
            creds = dev_ca.issue(name, directory / "issued" / name)
            archive.writestr(f"{name}/cert.pem", creds.cert.read_bytes())
            archive.writestr(f"{name}/privkey.pem", creds.key.read_bytes())
    return path


def bare_config(directory: Path, broker: MosquittoBroker, extra: str = "") -> Path:
    """What the guide leaves to configure by hand: the broker's host name; no thing, no
    certificate, no key, no CA."""
    path = directory / "gateway.yaml"
    path.write_text(
        f"""\
mqtt:
  host: {broker.host}
  port: {broker.port}
  keepalive_s: 30
gpio: {{pin_factory: mock}}
state_dir: state
admin_socket: {directory / "admin.sock"}
{extra}{DEVICES}"""
    )
    return path


async def test_imported_thing_batch_thing_syncs_with_a_config_without_thing_cert_or_key(
    broker: MosquittoBroker,
    dev_ca: DevCA,
    shadow_service: ShadowService,
    shadow_client: ShadowClient,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    names = batch_names()
    batch = thing_batch_zip(dev_ca, tmp_path, names)
    chosen = names[1]
    path = bare_config(tmp_path, broker)
    command = ["import-batch", str(batch), "--thing", chosen, "--ca", str(dev_ca.cert_path)]
    assert main([*command, "-c", str(path)]) == 0
    assert f"imported thing '{chosen}'" in capsys.readouterr().out
    key = tmp_path / "state" / "certs" / "privkey.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    config = load_config(path)
    assert config.thing == chosen  # a name of digits stays the string it is
    async with running_config(config, tmp_path / "mock") as running:
        await shadow_client.update(chosen, {"desired": {"led": True}})
        await shadow_client.wait_for(chosen, reported("led", True), timeout=5)
        assert running.pin(17).state == 1


async def test_several_things_and_no_choice_lists_them_and_writes_nothing(
    dev_ca: DevCA, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = batch_names()
    batch = thing_batch_zip(dev_ca, tmp_path, names)
    state = tmp_path / "state"
    command = ["import-batch", str(batch), "--ca", str(dev_ca.cert_path), "--state-dir", str(state)]
    assert main(command) == 1
    error = capsys.readouterr().err
    assert "pick one with --thing NAME" in error and all(name in error for name in names)
    assert not state.exists()


async def test_clear_desired_section_removes_the_whole_desired_section(
    shadow_service: ShadowService, shadow_client: ShadowClient, start_gateway: Any, thing: str
) -> None:
    async with start_gateway(thing, extra="shadow: {clear_desired: section}\n") as running:
        await shadow_client.update(thing, {"desired": {"led": True, "not_a_device": 1}})
        doc = await shadow_client.wait_for(
            thing, lambda doc: "desired" not in doc["state"], timeout=5
        )
        assert doc["state"]["reported"]["led"] is True
        assert running.pin(17).state == 1


async def test_clear_desired_true_clears_only_the_keys_it_applied(
    shadow_service: ShadowService, shadow_client: ShadowClient, start_gateway: Any, thing: str
) -> None:
    async with start_gateway(thing) as running:
        await shadow_client.update(thing, {"desired": {"led": True, "not_a_device": 1}})
        doc = await shadow_client.wait_for(
            thing, lambda doc: "led" not in doc["state"].get("desired", {"led": 0}), timeout=5
        )
        assert doc["state"]["desired"] == {"not_a_device": 1}
        assert running.pin(17).state == 1


async def test_checkin_sends_the_getcerts_id_and_status_shows_it_with_the_account(
    tmp_path: Path,
) -> None:
    async with running_devcloud(tmp_path / "cloud", claims={"claim-77": "pi-ioto"}) as cloud:
        path = tmp_path / "gateway.yaml"
        path.write_text(
            f"""\
provision:
  getcerts: {{url: {cloud.provision_url}, claim_id: claim-77, ca: {cloud.ca.cert_path}}}
mqtt: {{ca: {cloud.ca.cert_path}, keepalive_s: 30}}
checkin:
  url: {cloud.provision_url}provision/checkin
  product_id: gw
  ca: {cloud.ca.cert_path}
  interval_s: 60
  retry: {{min_s: 0.2, max_s: 1}}
gpio: {{pin_factory: mock}}
state_dir: state
admin_socket: {tmp_path / "admin.sock"}
{DEVICES}"""
        )
        await provision_at_start(load_provision_setup(path))
        config = load_config(path)
        assert config.thing == "pi-ioto"
        async with running_config(config, tmp_path / "mock") as running:
            async with asyncio.timeout(10):
                while "claim-77" not in cloud.provision.checkins:
                    await asyncio.sleep(0.05)
            status = running.gateway.updater.snapshot()
        assert "pi-ioto" not in cloud.provision.checkins  # the id, not the thing name
        assert status["device_id"] == "claim-77"
        assert status["account_id"] == ACCOUNT_ID


async def test_send_timestamp_dates_a_change_seen_offline_to_when_it_was_seen(
    broker: MosquittoBroker,
    shadow_service: ShadowService,
    shadow_client: ShadowClient,
    proxy: FaultProxy,
    tmp_path: Path,
    thing: str,
) -> None:
    updates: list[dict[str, Any]] = []
    async with admin_client(broker) as watcher:
        await watcher.subscribe(f"$aws/things/{thing}/shadow/update")

        async def collect() -> None:
            async for message in watcher.messages:
                updates.append(json.loads(bytes(message.payload)))

        collector = asyncio.create_task(collect())
        extra = "shadow: {send_timestamp: true}\n"
        async with gateway_via(proxy, broker, tmp_path, thing, extra=extra) as running:
            proxy.cut()
            await until(lambda: not running.gateway.shadow.connected)
            pressed_at = time.time()
            running.pin(4).drive_low()  # the button (pull-up) is pressed while offline
            await asyncio.sleep(1.0)
            restored_at = time.time()
            proxy.restore()
            await shadow_client.wait_for(thing, reported("button", True), timeout=10)
        collector.cancel()
        await asyncio.wait({collector})
    first = next(u for u in updates if u["state"].get("reported", {}).get("button") is True)
    assert pressed_at - 0.1 <= first["timestamp"] / 1000 < restored_at
