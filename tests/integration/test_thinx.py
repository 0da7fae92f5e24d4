"""THiNX end to end: the dev cloud's THiNX server over real HTTPS, its mosquitto logging devices
in with user name = udid and password = API key (password file, per-device ACLs), and a
mock-GPIO gateway in-process whose shadow link runs beside the THiNX link on the session broker.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import stat
import sys
import tarfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from gateway import __version__
from gateway.devcloud import DevCA, MosquittoBroker, ShadowClient, ShadowService
from gateway.devcloud.provision import server_ssl_context
from gateway.devcloud.thinx import (
    ThinxBroker,
    ThinxService,
    mosquitto_password_hash,
    thinx_app,
)
from gateway.updates.signing import generate_keypair, sign_release
from tests.integration.harness import RunningGateway, reported, running_gateway, write_config

pytestmark = pytest.mark.integration
OWNER = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"
MAC = "B8:27:EB:00:00:15"
FIRMWARE = bytes(range(256)) * 16  # 4 KiB (THiNX refuses artifacts under 1000 bytes)


@dataclass
class ThinxCloud:
    service: ThinxService
    broker: ThinxBroker
    url: str
    ca: Path
    key_file: Path

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


@asynccontextmanager
async def thinx_server(directory: Path, ca: DevCA) -> AsyncIterator[ThinxCloud]:
    broker = ThinxBroker(directory / "broker", ca)
    await asyncio.to_thread(broker.start)
    service = ThinxService(directory / "state", broker)
    await asyncio.to_thread(service.prepare)
    key_file = directory / "apikey"
    await asyncio.to_thread(service.create_api_key, OWNER, key_file)
    creds = await asyncio.to_thread(ca.issue, "thinx-api", directory / "api", server=True)
    runner = web.AppRunner(thinx_app(service), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl_context(creds))
    await site.start()
    port = runner.addresses[0][1]
    ready = asyncio.Event()
    listening = asyncio.ensure_future(service.run(ready))
    try:
        async with asyncio.timeout(10):
            await ready.wait()
        yield ThinxCloud(service, broker, f"https://127.0.0.1:{port}", ca.cert_path, key_file)
    finally:
        listening.cancel()
        await asyncio.wait({listening})
        await runner.cleanup()
        await asyncio.to_thread(broker.stop)


@pytest.fixture
async def thinx(tmp_path: Path, dev_ca: DevCA) -> AsyncIterator[ThinxCloud]:
    async with thinx_server(tmp_path / "thinx", dev_ca) as cloud:
        yield cloud


def thinx_block(cloud: ThinxCloud, *, url: str | None = None, extra: str = "") -> str:
    return f"""\
thinx:
  url: {url or cloud.url}
  owner: "{OWNER}"
  api_key_file: {cloud.key_file}
  alias: test-pi
  mac: "{MAC}"
  ca: {cloud.ca}
  checkin_interval_s: 3600
  timeout_s: 3
  retry: {{min_s: 0.1, max_s: 0.5}}
  status: "led {{led}}, button {{button}}"
  mqtt: {{host: 127.0.0.1, port: {cloud.broker.port}, ca: {cloud.ca}}}
{extra}"""


def command_ota(folder: Path, public_key: Path | None = None) -> str:
    """``command`` mode: a script that copies the artifact to flashed.bin (an MCU flasher)."""
    script = folder / "flash.py"
    script.write_text("import shutil, sys\nshutil.copyfile(sys.argv[1], sys.argv[2])\n")
    key = f"  public_key: {public_key}\n" if public_key else ""
    return f"""\
ota:
  mode: command
  command: [{sys.executable}, {script}, "{{artifact}}", {folder / "flashed.bin"}]
  command_timeout_s: 30
{key}"""


@asynccontextmanager
async def gateway_with_thinx(
    tmp_path: Path, broker: MosquittoBroker, thing: str, text: str
) -> AsyncIterator[RunningGateway]:
    path = write_config(tmp_path, broker, thing, extra=text)
    async with running_gateway(path, tmp_path / "mock") as running:
        yield running


async def until(condition: Callable[[], bool], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


def thinx_of(running: RunningGateway) -> Any:
    return running.gateway.links["thinx"]


def statuses(cloud: ThinxCloud, udid: str) -> list[str]:
    return [m["status"] for m in cloud.service.statuses.get(udid, []) if "status" in m]


def signed_release(tmp_path: Path, private_key: Path, version: str) -> bytes:
    """What a THiNX user uploads with ota.public_key set: a tar of the signed release."""
    folder = tmp_path / "release"
    folder.mkdir()
    artifact = folder / "app.bin"
    artifact.write_bytes(FIRMWARE)
    sign_release(private_key.read_bytes(), artifact, product="edge-gateway", version=version)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in ("app.bin", "app.bin.manifest", "app.bin.manifest.sig"):
            tar.add(folder / name, arcname=name)
    return buffer.getvalue()


# -- registration, status, configuration ----------------------------------------------------------


async def test_first_registration_stores_the_udid_and_logs_in_to_mqtt(
    shadow_service: ShadowService,
    broker: MosquittoBroker,
    thinx: ThinxCloud,
    tmp_path: Path,
    thing: str,
) -> None:
    with capture_logs() as logs:
        async with gateway_with_thinx(tmp_path, broker, thing, thinx_block(thinx)) as running:
            link = thinx_of(running)
            await until(lambda: link.connected)
            udid = link.registration.udid
            status = running.gateway.status()["links"]["thinx"]
    first = thinx.service.checkins[0]
    assert first["udid"] == "" and first["mac"] == MAC and first["owner"] == OWNER
    assert first["firmware"] == f"edge-gateway-{__version__}" and first["version"] == __version__
    assert first["alias"] == "test-pi" and first["platform"].startswith("python:")
    saved = tmp_path / "state" / "thinx" / "registration.json"
    assert json.loads(saved.read_text())["udid"] == udid
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert udid in thinx.service.devices()
    assert status["registered"] and status["udid"] == udid and status["connected"]
    assert any(e["event"] == "thinx_registered" and e["udid"] == udid for e in logs)
    key = thinx.key_file.read_text().strip()
    assert key not in repr(logs)


def stamped(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    return {**event, "at": time.monotonic()}


def first_at(logs: list[dict[str, Any]], name: str) -> float:
    return float(next(e["at"] for e in logs if e["event"] == name))


async def test_the_first_login_follows_the_first_registration_at_once_without_a_warning(
    shadow_service: ShadowService,
    broker: MosquittoBroker,
    thinx: ThinxCloud,
    tmp_path: Path,
    thing: str,
) -> None:
    # A backoff after a failed attempt would wait up to 5 s here.
    slow = "  reconnect: {min_s: 5, max_s: 10, reset_after_s: 60}\n"
    path = write_config(tmp_path, broker, thing, extra=thinx_block(thinx), mqtt_extra=slow)
    with capture_logs(processors=[stamped]) as logs:
        async with running_gateway(path, tmp_path / "mock") as running:
            await until(lambda: thinx_of(running).connected)
    assert not any(e["event"] == "mqtt_connection_failed" for e in logs)
    assert first_at(logs, "thinx_mqtt_connected") - first_at(logs, "thinx_registered") < 1.0


async def test_a_new_udid_from_the_server_logs_in_again_at_once(
    shadow_service: ShadowService,
    broker: MosquittoBroker,
    thinx: ThinxCloud,
    tmp_path: Path,
    thing: str,
) -> None:
    async with gateway_with_thinx(tmp_path, broker, thing, thinx_block(thinx)) as running:
        link = thinx_of(running)
        await until(lambda: link.connected)
        old = link.registration.udid
        await asyncio.to_thread(thinx.service.forget_device, old)
        with capture_logs(processors=[stamped]) as logs:
            async with link._http() as http:
                await link.check_in(http)  # answered with a new udid
            new = link.registration.udid
            assert new != old
            await until(lambda: any(e["event"] == "thinx_mqtt_connected" for e in logs), 2)
        await until(lambda: bool(statuses(thinx, new)), timeout=2)  # publishing as the new one
    login = next(e for e in logs if e["event"] == "thinx_mqtt_connected")
    assert login["udid"] == new
    assert login["at"] - first_at(logs, "thinx_udid_changed") < 1.0
    assert not any(e["event"] == "mqtt_connection_failed" for e in logs)


async def test_status_is_published_and_follows_a_device_change(
    shadow_service: ShadowService,
    broker: MosquittoBroker,
    thinx: ThinxCloud,
    tmp_path: Path,
    thing: str,
) -> None:
    async with gateway_with_thinx(tmp_path, broker, thing, thinx_block(thinx)) as running:
        link = thinx_of(running)
        await until(lambda: link.connected)
        udid = link.registration.udid
        await until(lambda: "led off, button off" in statuses(thinx, udid))
        # Right after connecting: the check-in JSON on the status topic (THiNXLib).
        assert "registration" in thinx.service.statuses[udid][0]
        running.pin(4).drive_low()  # pull-up button: pressed
        await until(lambda: "led off, button on" in statuses(thinx, udid), timeout=5)
    devices = thinx.service.devices()
    assert devices[udid]["status"] in ("led off, button on", "disconnected")


async def test_status_marks_a_main_link_down_with_w(
    shadow_service: ShadowService,
    broker: MosquittoBroker,
    thinx: ThinxCloud,
    tmp_path: Path,
    thing: str,
) -> None:
    async with gateway_with_thinx(tmp_path, broker, thing, thinx_block(thinx)) as running:
        link = thinx_of(running)
        await until(lambda: link.connected)
        udid = link.registration.udid
        running.gateway.shadow.connected = False  # as the shadow link says while it is down
        await until(lambda: "led off, button off #w" in statuses(thinx, udid), timeout=5)


async def test_status_marks_device_errors_in_the_shadow_with_e(
    shadow_service: ShadowService,
    shadow_client: ShadowClient,
    broker: MosquittoBroker,
    thinx: ThinxCloud,
    tmp_path: Path,
    thing: str,
) -> None:
    async with gateway_with_thinx(tmp_path, broker, thing, thinx_block(thinx)) as running:
        link = thinx_of(running)
        await until(lambda: link.connected)
        udid = link.registration.udid
        await shadow_client.update(thing, {"desired": {"led": "banana"}})  # refused: an error
        await until(lambda: "led off, button off #e" in statuses(thinx, udid), timeout=5)
        assert running.gateway.shadow.reconciler.errors


async def test_configuration_push_plain_and_double_encoded_is_stored_and_handed_over(
    shadow_service: ShadowService,
    broker: MosquittoBroker,
    thinx: ThinxCloud,
    tmp_path: Path,
    thing: str,
) -> None:
    received = tmp_path / "received.jsonl"
    hook = tmp_path / "hook.py"
    hook.write_text(f"import sys\nopen({str(received)!r}, 'a').write(sys.stdin.read() + '\\n')\n")
    extra = f"  on_configuration: [{sys.executable}, {hook}]\n"
    with capture_logs() as logs:
        async with gateway_with_thinx(
            tmp_path, broker, thing, thinx_block(thinx, extra=extra)
        ) as running:
            link = thinx_of(running)
            await until(lambda: link.connected)
            udid = link.registration.udid
            await thinx.service.push_configuration(
                OWNER, udid, {"THINX_ENV_SSID": "plain-secret"}, double_encoded=False
            )
            await until(lambda: link.configuration == {"THINX_ENV_SSID": "plain-secret"})
            await thinx.service.push_configuration(OWNER, udid, {"MODE": "double-secret"})
            await until(lambda: link.configuration == {"MODE": "double-secret"})
            await until(lambda: received.exists() and len(received.read_text().splitlines()) == 2)
            await thinx.service.publish_raw(f"/{OWNER}/{udid}", b"\x00not json")
            await asyncio.sleep(0.2)
            status = running.gateway.status()["links"]["thinx"]
    lines = [json.loads(line) for line in received.read_text().splitlines()]
    assert lines == [
        {"configuration": {"THINX_ENV_SSID": "plain-secret"}},
        {"configuration": {"MODE": "double-secret"}},
    ]
    stored = tmp_path / "state" / "thinx" / "configuration.json"
    assert json.loads(stored.read_text())["configuration"] == {"MODE": "double-secret"}
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert status["configuration_keys"] == ["MODE"]
    events = [e for e in logs if e["event"] == "thinx_configuration_received"]
    assert [e["keys"] for e in events] == [["THINX_ENV_SSID"], ["MODE"]]
    assert "secret" not in repr(events)  # values are never logged
    assert any(e["event"] == "thinx_message_dropped" for e in logs)


# -- firmware --------------------------------------------------------------------------------------


async def test_signed_firmware_is_downloaded_verified_applied_and_checked_in(
    shadow_service: ShadowService,
    shadow_client: ShadowClient,
    broker: MosquittoBroker,
    thinx: ThinxCloud,
    tmp_path: Path,
    thing: str,
) -> None:
    private, public = tmp_path / "signing.pem", tmp_path / "signing.pub.pem"
    generate_keypair(private, public)
    thinx.service.offer_firmware(OWNER, signed_release(tmp_path, private, "2.0"), "2.0")
    text = thinx_block(thinx) + command_ota(tmp_path, public)
    async with gateway_with_thinx(tmp_path, broker, thing, text) as running:
        link = thinx_of(running)
        await until(lambda: running.gateway.updater.status["state"] == "applied", timeout=15)
        await until(lambda: thinx.service.checkins[-1]["version"] == "2.0")
        await shadow_client.wait_for(
            thing,
            lambda doc: (
                doc["state"]["reported"].get("gateway", {}).get("ota", {}).get("state") == "applied"
            ),
            timeout=5,
        )
        udid = link.registration.udid
    assert (tmp_path / "flashed.bin").read_bytes() == FIRMWARE
    assert thinx.service.devices()[udid]["version"] == "2.0"
    versions = [c["version"] for c in thinx.service.checkins]
    assert versions[0] == __version__ and versions[-1] == "2.0"


async def test_unsigned_firmware_is_applied_when_no_key_is_configured(
    shadow_service: ShadowService,
    broker: MosquittoBroker,
    thinx: ThinxCloud,
    tmp_path: Path,
    thing: str,
) -> None:
    thinx.service.offer_firmware(OWNER, FIRMWARE, "2.0")
    text = thinx_block(thinx) + command_ota(tmp_path)
    async with gateway_with_thinx(tmp_path, broker, thing, text) as running:
        await until(lambda: running.gateway.updater.status["state"] == "applied", timeout=15)
        await until(lambda: thinx.service.checkins[-1]["version"] == "2.0")
    assert (tmp_path / "flashed.bin").read_bytes() == FIRMWARE


async def test_without_an_ott_the_firmware_is_fetched_by_post_with_the_api_key(
    shadow_service: ShadowService,
    broker: MosquittoBroker,
    thinx: ThinxCloud,
    tmp_path: Path,
    thing: str,
) -> None:
    thinx.service.offer_firmware(OWNER, FIRMWARE, "2.0")
    thinx.service.misbehaviour.omit_ott = True
    text = thinx_block(thinx) + command_ota(tmp_path)
    async with gateway_with_thinx(tmp_path, broker, thing, text) as running:
        await until(lambda: running.gateway.updater.status["state"] == "applied", timeout=15)
        await until(lambda: thinx.service.checkins[-1]["version"] == "2.0")
    assert (tmp_path / "flashed.bin").read_bytes() == FIRMWARE


async def test_a_raw_answer_to_the_firmware_post_is_taken_too(
    shadow_service: ShadowService,
    broker: MosquittoBroker,
    thinx: ThinxCloud,
    tmp_path: Path,
    thing: str,
) -> None:
    # THiNX's own server wraps the artifact in JSON on this route (the test above); a server
    # that answers like the OTT route (raw bytes and x-MD5) works as well.
    thinx.service.offer_firmware(OWNER, FIRMWARE, "2.0")
    thinx.service.misbehaviour.omit_ott = True
    thinx.service.misbehaviour.raw_post_firmware = True
    text = thinx_block(thinx) + command_ota(tmp_path)
    async with gateway_with_thinx(tmp_path, broker, thing, text) as running:
        await until(lambda: running.gateway.updater.status["state"] == "applied", timeout=15)
    assert (tmp_path / "flashed.bin").read_bytes() == FIRMWARE


async def test_retained_status_reaches_a_late_subscriber(
    shadow_service: ShadowService,
    broker: MosquittoBroker,
    thinx: ThinxCloud,
    tmp_path: Path,
    thing: str,
) -> None:
    text = thinx_block(thinx).replace(
        "ca: " + str(thinx.ca) + "}", f"ca: {thinx.ca}, retain_status: true}}"
    )
    async with gateway_with_thinx(tmp_path, broker, thing, text) as running:
        link = thinx_of(running)
        await until(lambda: link.published_status == "led off, button off")
        udid = link.registration.udid
        async with thinx.service._client() as client:  # subscribes after the publish
            await client.subscribe(f"/{OWNER}/{udid}/status")
            async with asyncio.timeout(5):
                message = await anext(aiter(client.messages))
    assert message.retain and json.loads(message.payload) == {"status": "led off, button off"}


async def test_a_device_may_not_read_another_devices_topic(
    shadow_service: ShadowService,
    broker: MosquittoBroker,
    thinx: ThinxCloud,
    tmp_path: Path,
    thing: str,
) -> None:
    import ssl

    import aiomqtt

    async with gateway_with_thinx(tmp_path, broker, thing, thinx_block(thinx)) as running:
        link = thinx_of(running)
        await until(lambda: link.connected)
        udid = link.registration.udid
    key = thinx.key_file.read_text().strip()
    context = ssl.create_default_context(cafile=str(thinx.ca))
    async with aiomqtt.Client(
        "127.0.0.1", thinx.broker.port, username=udid, password=key, tls_context=context
    ) as client:
        await client.subscribe(f"/{OWNER}/someone-else")
        await client.subscribe(f"/{OWNER}/{udid}")
        await thinx.service.publish_raw(f"/{OWNER}/someone-else", b"not for you")
        await thinx.service.publish_raw(f"/{OWNER}/{udid}", b"yours")
        async with asyncio.timeout(5):
            message = await anext(aiter(client.messages))
    # The ACL lets mosquitto deliver only the device's own topic (checked on delivery).
    assert message.topic.value == f"/{OWNER}/{udid}" and message.payload == b"yours"


async def test_an_md5_mismatch_deletes_the_artifact_and_never_applies_it(
    shadow_service: ShadowService,
    broker: MosquittoBroker,
    thinx: ThinxCloud,
    tmp_path: Path,
    thing: str,
) -> None:
    thinx.service.offer_firmware(OWNER, FIRMWARE, "2.0")
    thinx.service.misbehaviour.wrong_md5 = True
    text = thinx_block(thinx) + command_ota(tmp_path)
    async with gateway_with_thinx(tmp_path, broker, thing, text) as running:
        await until(lambda: running.gateway.updater.status["state"] == "failed", timeout=15)
        error = running.gateway.updater.status["error"]
    assert "MD5" in error
    assert not (tmp_path / "flashed.bin").exists()
    assert not any((tmp_path / "state" / "ota" / "thinx").glob("*"))


async def test_an_unsigned_artifact_is_refused_when_a_public_key_is_set(
    shadow_service: ShadowService,
    broker: MosquittoBroker,
    thinx: ThinxCloud,
    tmp_path: Path,
    thing: str,
) -> None:
    private, public = tmp_path / "signing.pem", tmp_path / "signing.pub.pem"
    generate_keypair(private, public)
    thinx.service.offer_firmware(OWNER, FIRMWARE, "2.0")  # the bare artifact, no manifest
    text = thinx_block(thinx) + command_ota(tmp_path, public)
    async with gateway_with_thinx(tmp_path, broker, thing, text) as running:
        await until(lambda: running.gateway.updater.status["state"] == "failed", timeout=15)
        error = running.gateway.updater.status["error"]
    assert "unsigned" in error
    assert not (tmp_path / "flashed.bin").exists()


# -- failures ---------------------------------------------------------------------------------


async def test_a_wrong_api_key_is_an_auth_failure_naming_the_servers_reason(
    shadow_service: ShadowService,
    broker: MosquittoBroker,
    thinx: ThinxCloud,
    tmp_path: Path,
    thing: str,
) -> None:
    thinx.key_file.write_text("f" * 64 + "\n")
    with capture_logs() as logs:
        async with gateway_with_thinx(tmp_path, broker, thing, thinx_block(thinx)) as running:
            link = thinx_of(running)
            await until(lambda: any(e["event"] == "thinx_auth_failed" for e in logs))
            assert not link.registered.is_set()
            assert (
                "owner_found_but_no_key"
                in running.gateway.status()["links"]["thinx"]["checkin_error"]
            )
    failure = next(e for e in logs if e["event"] == "thinx_auth_failed")
    assert failure["reason"] == "owner_found_but_no_key"
    assert 0.25 <= failure["retry_in_s"] <= 0.5  # at the cap: retrying sooner cannot fix a key
    assert "f" * 64 not in repr(logs)


async def test_an_unknown_owner_is_an_auth_failure(
    shadow_service: ShadowService,
    broker: MosquittoBroker,
    thinx: ThinxCloud,
    tmp_path: Path,
    thing: str,
) -> None:
    text = thinx_block(thinx).replace(f'owner: "{OWNER}"', 'owner: "nobody"')
    with capture_logs() as logs:
        async with gateway_with_thinx(tmp_path, broker, thing, text):
            await until(lambda: any(e["event"] == "thinx_auth_failed" for e in logs))
    failure = next(e for e in logs if e["event"] == "thinx_auth_failed")
    assert failure["reason"] == "apikey_not_found"


async def test_a_refused_mqtt_password_is_an_auth_failure_not_a_network_error(
    shadow_service: ShadowService,
    broker: MosquittoBroker,
    thinx: ThinxCloud,
    tmp_path: Path,
    thing: str,
) -> None:
    async with gateway_with_thinx(tmp_path, broker, thing, thinx_block(thinx)) as running:
        link = thinx_of(running)
        await until(lambda: link.connected)
        udid = link.registration.udid
    # The broker now holds another password for this udid (a key revoked in THiNX's console).
    await asyncio.to_thread(thinx.broker.set_login, udid, mosquitto_password_hash("revoked"), OWNER)
    with capture_logs() as logs:
        async with gateway_with_thinx(tmp_path, broker, thing, thinx_block(thinx)) as running:
            await until(lambda: any(e["event"] == "mqtt_auth_failed" for e in logs))
            assert not thinx_of(running).connected
    failure = next(e for e in logs if e["event"] == "mqtt_auth_failed")
    assert "user name or password" in failure["error"]
    assert not any(e["event"] == "mqtt_connection_failed" for e in logs)


async def test_a_server_that_is_down_backs_off_while_the_shadow_keeps_syncing(
    shadow_service: ShadowService,
    shadow_client: ShadowClient,
    broker: MosquittoBroker,
    thinx: ThinxCloud,
    tmp_path: Path,
    thing: str,
) -> None:
    down = f"https://127.0.0.1:{_closed_port()}"
    with capture_logs() as logs:
        async with gateway_with_thinx(
            tmp_path, broker, thing, thinx_block(thinx, url=down)
        ) as running:
            await until(lambda: sum(e["event"] == "thinx_checkin_failed" for e in logs) >= 2)
            await shadow_client.update(thing, {"desired": {"led": True}})
            await shadow_client.wait_for(thing, reported("led", True), timeout=5)
            assert running.pin(17).state
            assert running.gateway.status()["links"]["thinx"]["checkin_error"] is not None
            assert not thinx_of(running).registered.is_set()
    failures = [e for e in logs if e["event"] == "thinx_checkin_failed"]
    assert all(0 <= e["retry_in_s"] <= 0.5 for e in failures)
    # An unregistered link (no MQTT login yet) stops at once with the gateway.
    assert not any(e["event"] == "shutdown_timed_out" for e in logs)


@pytest.mark.parametrize(
    "body",
    [b"<html>not json</html>", b"[" * 5000, b'{"registration": {"status": "OK"}}', b"x" * 70_000],
    ids=["html", "deeply-nested", "no-udid", "oversized"],
)
async def test_a_hostile_registration_answer_backs_off_and_changes_nothing(
    shadow_service: ShadowService,
    broker: MosquittoBroker,
    thinx: ThinxCloud,
    tmp_path: Path,
    thing: str,
    body: bytes,
) -> None:
    thinx.service.misbehaviour.register_body = body
    with capture_logs() as logs:
        async with gateway_with_thinx(tmp_path, broker, thing, thinx_block(thinx)) as running:
            await until(lambda: sum(e["event"] == "thinx_checkin_failed" for e in logs) >= 2)
            assert not thinx_of(running).registered.is_set()
            assert running.gateway.healthy()
    assert not (tmp_path / "state" / "thinx" / "registration.json").exists()
    failures = [e for e in logs if e["event"] == "thinx_checkin_failed"]
    assert all(len(e["error"]) <= 300 for e in failures)


async def test_an_oversized_configuration_push_is_dropped_and_nothing_is_stored(
    shadow_service: ShadowService,
    broker: MosquittoBroker,
    thinx: ThinxCloud,
    tmp_path: Path,
    thing: str,
) -> None:
    with capture_logs() as logs:
        async with gateway_with_thinx(tmp_path, broker, thing, thinx_block(thinx)) as running:
            link = thinx_of(running)
            await until(lambda: link.connected)
            udid = link.registration.udid
            huge = {"configuration": {"BLOB": "x" * 100_000}}
            await thinx.service.publish_raw(f"/{OWNER}/{udid}", json.dumps(huge).encode())
            await until(lambda: any(e["event"] == "thinx_message_dropped" for e in logs))
            assert link.connected and link.configuration is None
    assert not (tmp_path / "state" / "thinx" / "configuration.json").exists()


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_the_api_key_file_must_not_be_readable_by_others(tmp_path: Path) -> None:
    from gateway.links.thinx.link import ThinxApiKeyError, read_api_key

    key = tmp_path / "key"
    key.write_text("abc\n")
    os.chmod(key, 0o644)
    with pytest.raises(ThinxApiKeyError, match="chmod 600"):
        read_api_key(key)
    os.chmod(key, 0o600)
    assert read_api_key(key) == "abc"


# -- the dev cloud, as docs/thinx.md uses it by hand --------------------------------------------


async def test_the_dev_cloud_serves_thinx_with_a_dev_owner_and_push_files(tmp_path: Path) -> None:
    from gateway.config import load_config
    from tests.integration.harness import running_config
    from tests.integration.test_devcloud_web import running_devcloud

    async with running_devcloud(tmp_path / "cloud") as cloud:
        (batch,) = await cloud.create_things(1, prefix="thx")
        owner, key_file = cloud.thinx.dev_owner()
        discovery = json.loads((cloud.state_dir / "devcloud.json").read_text())["thinx"]
        config = (
            batch.config.read_text()
            + f"""\
thinx:
  url: {discovery["url"]}
  owner: "{discovery["owner"]}"
  api_key_file: {discovery["api_key_file"]}
  ca: {discovery["ca"]}
  status: "relay {{relay}}"
  retry: {{min_s: 0.1, max_s: 0.5}}
  mqtt: {{host: {discovery["mqtt_host"]}, port: {discovery["mqtt_port"]}, ca: {discovery["ca"]}}}
"""
        )
        batch.config.write_text(config)
        loaded = load_config(batch.config)
        async with running_config(loaded, tmp_path / "mock") as running:
            link = thinx_of(running)
            await until(lambda: link.connected)
            udid = link.registration.udid
            push = cloud.thinx.state_dir / "push" / "one.json"
            push.write_text(json.dumps({"udid": udid, "configuration": {"LEVEL": "3"}}))
            await until(lambda: link.configuration == {"LEVEL": "3"})
            await until(lambda: cloud.thinx.devices()[udid].get("status") == "relay off")
    assert owner == discovery["owner"] and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not push.exists()


async def test_a_thinx_only_gateway_registers_and_reports_without_the_shadow(
    thinx: ThinxCloud, tmp_path: Path
) -> None:
    from gateway.app import build_gateway
    from gateway.config import load_config
    from gateway.devices.gpio import make_pin_factory

    path = tmp_path / "gateway.yaml"
    path.write_text(
        f"""\
gpio: {{pin_factory: mock}}
state_dir: {tmp_path / "state"}
admin_socket: {tmp_path / "admin.sock"}
devices:
  led: {{type: LED, pin: 17}}
  button: {{type: Button, pin: 4, pull_up: true}}
{thinx_block(thinx)}"""
    )
    config = load_config(path)
    assert config.mqtt is None and config.thing is None
    factory = make_pin_factory("mock")
    gateway = build_gateway(config, pin_factory=factory, mock_dir=tmp_path / "mock")
    task = asyncio.ensure_future(gateway.run())
    try:
        link = gateway.links["thinx"]
        await until(lambda: link.connected)
        udid = link.registration.udid
        # No main link to be down: no " #w" mark.
        await until(lambda: "led off, button off" in statuses(thinx, udid))
        factory.pin(4).drive_low()
        await until(lambda: "led off, button on" in statuses(thinx, udid), timeout=5)
        assert gateway.status()["links"]["thinx"]["registered"]
    finally:
        gateway.stop()
        await asyncio.wait_for(task, timeout=10)
        factory.close()
