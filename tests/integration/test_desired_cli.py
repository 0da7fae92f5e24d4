"""``edge-gateway desired`` against real mosquitto, the dev cloud's shadow service and an
in-process gateway: a value the gateway would refuse is refused before sending (with the
gateway's own words) when the devices are known, and otherwise the gateway's answer is
awaited and printed."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.devcloud import MosquittoBroker, ShadowClient, ShadowService
from tests.integration.harness import reported

pytestmark = pytest.mark.integration
GATEWAY = [sys.executable, "-m", "gateway"]


def discovery(folder: Path, broker: MosquittoBroker, thing: str, config: Path | None) -> Path:
    """The discovery file a demo writes, for the test broker (config: the gateway's)."""
    folder.mkdir(parents=True, exist_ok=True)
    creds = broker.credentials(broker.admin_identities[0])
    info: dict[str, Any] = {
        "host": broker.host,
        "port": broker.port,
        "ca": str(creds.ca),
        "cert": str(creds.cert),
        "key": str(creds.key),
        "thing": thing,
        "shadow": None,
    }
    if config is not None:
        info["config"] = str(config)
    (folder / "devcloud.json").write_text(json.dumps(info))
    return folder


async def desired(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [*GATEWAY, "desired", "--workdir", str(workdir), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def errors_of(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["state"].get("reported", {}).get("gateway", {}).get("errors", {}) or {}


async def test_bad_values_are_refused_before_sending_in_the_gateways_words(
    broker: MosquittoBroker,
    shadow_service: ShadowService,
    shadow_client: ShadowClient,
    start_gateway: Any,
    thing: str,
    tmp_path: Path,
) -> None:
    async with start_gateway(thing):
        # What the gateway itself says about these values.
        await shadow_client.update(thing, {"desired": {"led": "maybe", "fan": 7}})
        doc = await shadow_client.wait_for(
            thing, lambda d: {"led", "fan"} <= set(errors_of(d)), timeout=5
        )
        gateway_says = errors_of(doc)
        await shadow_client.update(thing, {"desired": {"led": None, "fan": None}})
        workdir = discovery(tmp_path / "demo", broker, thing, tmp_path / "gateway.yaml")
        result = await desired(workdir, "led=maybe", "fan=7", "nosuchdevice=1")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "nothing sent" in result.stderr
    assert f"  led: {gateway_says['led']}" in result.stderr
    assert f"  fan: {gateway_says['fan']}" in result.stderr
    assert "  nosuchdevice: unknown resource" in result.stderr
    after = await shadow_client.get(thing)
    assert after is not None
    assert not after["state"].get("desired")  # nothing was sent


async def test_without_the_config_the_gateways_rejection_is_awaited_and_printed(
    broker: MosquittoBroker,
    shadow_service: ShadowService,
    shadow_client: ShadowClient,
    start_gateway: Any,
    thing: str,
    tmp_path: Path,
) -> None:
    workdir = discovery(tmp_path / "cloud", broker, thing, None)
    async with start_gateway(thing):
        result = await desired(workdir, "fan=7", "nosuchdevice=1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the gateway refused" in result.stderr
    assert "  fan: 7 is out of range" in result.stderr
    assert "  nosuchdevice: unknown resource" in result.stderr


async def test_a_good_value_is_sent_and_applied(
    broker: MosquittoBroker,
    shadow_service: ShadowService,
    shadow_client: ShadowClient,
    start_gateway: Any,
    thing: str,
    tmp_path: Path,
) -> None:
    async with start_gateway(thing) as running:
        workdir = discovery(tmp_path / "demo", broker, thing, tmp_path / "gateway.yaml")
        result = await desired(workdir, "led=true")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "desired state updated"
        await shadow_client.wait_for(thing, reported("led", True), timeout=5)
        assert running.pin(17).state == 1


async def test_a_devcloud_things_own_config_is_used_to_refuse(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    workdir = tmp_path / "devcloud"
    folder = workdir / "things" / "thing-001"
    folder.mkdir(parents=True)
    (folder / "gateway.yaml").write_text(
        "thing: thing-001\nmqtt: {host: h, ca: ca.pem, cert: cert.pem, key: privkey.pem}\n"
        "devices:\n  fan: {type: PWMLED, pin: 18}\n"
    )
    discovery(workdir, broker, "unused", None)
    info = json.loads((workdir / "devcloud.json").read_text())
    del info["thing"], info["shadow"]  # a devcloud serves a batch, not one demo thing
    (workdir / "devcloud.json").write_text(json.dumps(info))
    result = await desired(workdir, "--thing", "thing-001", "fan=7")
    assert result.returncode == 1
    assert "refused (nothing sent)" in result.stderr
    assert "  fan: 7 is out of range" in result.stderr
