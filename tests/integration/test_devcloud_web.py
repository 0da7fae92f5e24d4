"""The dev cloud's HTTP side without a browser: the Provision API and artifacts over real HTTPS
(server certificate from the dev CA), the dashboard's JSON API and live feed, and persistence."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from gateway.devcloud import ShadowClient
from gateway.devcloud.web import DevCloud

pytestmark = pytest.mark.integration
LOOPBACK_ANY_PORT = ("127.0.0.1", 0)


@asynccontextmanager
async def running_devcloud(state_dir: Path, **options: Any) -> AsyncIterator[DevCloud]:
    """A started DevCloud on free loopback ports, its services running until the block ends."""
    cloud = DevCloud(
        state_dir, http=LOOPBACK_ANY_PORT, https=LOOPBACK_ANY_PORT, mqtt_port=0, **options
    )
    async with cloud:
        task = asyncio.create_task(cloud.run(), name="devcloud_under_test")
        try:
            ready = asyncio.create_task(cloud.ready.wait())
            await asyncio.wait({task, ready}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
            if not cloud.ready.is_set():
                ready.cancel()
                if task.done():
                    task.result()
                pytest.fail("dev cloud did not become ready within 10 s")
            yield cloud
        finally:
            task.cancel()
            await asyncio.wait({task})


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[DevCloud]:
    async with running_devcloud(tmp_path / "cloud", claims={"claim-1": "pi-claimed"}) as running:
        yield running


@pytest.fixture
async def https(cloud: DevCloud) -> AsyncIterator[aiohttp.ClientSession]:
    """A client that trusts only the dev CA, with the Provision API as base URL."""
    tls = ssl.create_default_context(cafile=str(cloud.ca.cert_path))
    connector = aiohttp.TCPConnector(ssl=tls)
    async with aiohttp.ClientSession(cloud.provision_url, connector=connector) as session:
        yield session


@pytest.fixture
async def http(cloud: DevCloud) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cloud.dashboard_url) as session:
        yield session


async def page_headers(session: aiohttp.ClientSession, origin: str) -> dict[str, str]:
    """What the dashboard's own page sends with a change: its Origin and the token it carries."""
    async with session.get("/") as response:
        page = await response.text()
    found = re.search(r'<meta name="dashboard-token" content="([^"]*)">', page)
    return {"Origin": origin.rstrip("/"), "X-Dashboard-Token": found[1] if found else ""}


def write_offers(cloud: DevCloud, offers: dict[str, Any]) -> None:
    (cloud.state_dir / "provision" / "offers.json").write_text(json.dumps(offers))


# --- Provision API ------------------------------------------------------------------------------


async def test_get_certs_issues_a_dev_ca_certificate_for_a_known_claim(
    cloud: DevCloud, https: aiohttp.ClientSession
) -> None:
    async with https.post("/provision/getCerts", json={"id": "claim-1"}) as response:
        assert response.status == 200
        body = await response.json()
    assert body["id"] == "claim-1" and body["thing"] == "pi-claimed"
    assert body["endpoint"] == cloud.broker.host and body["port"] == cloud.broker.port
    assert body["accountId"]
    cert = x509.load_pem_x509_certificate(body["certificate"].encode())
    key = serialization.load_pem_private_key(body["key"].encode(), password=None)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "pi-claimed"
    assert cert.issuer == cloud.ca.certificate.subject
    assert key.public_key() == cert.public_key()
    issued = json.loads((cloud.state_dir / "provision" / "issued.json").read_text())
    assert issued["pi-claimed"][0]["claim"] == "claim-1"


async def test_get_certs_refuses_an_unknown_claim_with_404(https: aiohttp.ClientSession) -> None:
    async with https.post("/provision/getCerts", json={"id": "nobody"}) as response:
        assert response.status == 404
        assert "unknown claim" in (await response.json())["error"]


async def test_get_certs_rejects_a_body_without_a_claim_id_with_400(
    https: aiohttp.ClientSession,
) -> None:
    async with https.post("/provision/getCerts", data=b"[1, 2]") as response:
        assert response.status == 400


async def test_provision_api_is_https_verified_by_the_dev_ca_only(cloud: DevCloud) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await session.post(f"{cloud.provision_url}provision/checkin", json={})


async def test_checkin_answers_the_products_offer_with_the_artifacts_checksum(
    cloud: DevCloud, https: aiohttp.ClientSession
) -> None:
    firmware = b"new firmware" * 100
    (cloud.provision.artifacts_dir / "gw-1.1.tar.gz").write_bytes(firmware)
    write_offers(cloud, {"gw": {"version": "1.1", "url": "/artifacts/gw-1.1.tar.gz"}})
    request = {"id": "pi-1", "productId": "gw", "test": False, "version": "1.0"}
    async with https.post("/provision/checkin", json=request) as response:
        assert response.status == 200
        offer = await response.json()
    assert offer == {
        "version": "1.1",
        "url": f"{cloud.provision_url}artifacts/gw-1.1.tar.gz",
        "checksum": hashlib.sha256(firmware).hexdigest(),
    }


async def test_checkin_of_a_test_device_gets_the_test_offer(
    cloud: DevCloud, https: aiohttp.ClientSession
) -> None:
    test_offer = {"version": "1.2-rc1", "url": "https://example.test/rc", "checksum": "ab"}
    write_offers(
        cloud,
        {"gw": {"version": "1.1", "url": "https://example.test/1.1", "test": test_offer}},
    )
    request = {"id": "pi-1", "productId": "gw", "test": True, "version": "1.0"}
    async with https.post("/provision/checkin", json=request) as response:
        assert await response.json() == test_offer


async def test_checkin_without_an_offer_answers_an_empty_object(
    https: aiohttp.ClientSession,
) -> None:
    request = {"id": "pi-1", "productId": "unknown-product", "test": False, "version": "1.0"}
    async with https.post("/provision/checkin", json=request) as response:
        assert response.status == 200
        assert await response.json() == {}


async def test_artifact_download_honours_range_requests(
    cloud: DevCloud, https: aiohttp.ClientSession
) -> None:
    (cloud.provision.artifacts_dir / "blob.bin").write_bytes(bytes(range(256)) * 4)
    async with https.get("/artifacts/blob.bin", headers={"Range": "bytes=1000-"}) as response:
        assert response.status == 206
        assert await response.read() == (bytes(range(256)) * 4)[1000:]
        assert response.headers["Content-Range"] == "bytes 1000-1023/1024"


async def test_artifact_names_cannot_leave_the_artifacts_folder(
    https: aiohttp.ClientSession,
) -> None:
    async with https.get("/artifacts/..%2Fclaims.json") as response:
        assert response.status == 404
    async with https.get("/artifacts/.hidden") as response:
        assert response.status == 404


# --- dashboard API ------------------------------------------------------------------------------


async def _next_message(response: aiohttp.ClientResponse) -> dict[str, Any]:
    async with asyncio.timeout(5):
        while True:
            line = await response.content.readline()
            if line.startswith(b"data: "):
                message: dict[str, Any] = json.loads(line[6:])
                return message


async def test_live_feed_starts_with_a_snapshot_then_pushes_a_checkin(
    cloud: DevCloud, http: aiohttp.ClientSession, https: aiohttp.ClientSession
) -> None:
    await cloud.create_things(2)
    async with http.get("/api/events") as feed:
        assert feed.headers["Content-Type"] == "text/event-stream"
        snapshot = await _next_message(feed)
        assert snapshot["type"] == "snapshot"
        assert [t["thing"] for t in snapshot["things"]] == ["thing-001", "thing-002"]
        assert snapshot["things"][0]["status"] == "unknown"
        request = {"id": "thing-002", "productId": "gw", "test": False, "version": "1.0"}
        async with https.post("/provision/checkin", json=request) as response:
            assert response.status == 200
        messages = [await _next_message(feed), await _next_message(feed)]
    event = next(m for m in messages if m["type"] == "event")
    assert event["thing"] == "thing-002" and "check-in at version 1.0" in event["event"]["text"]
    update = next(m for m in messages if m["type"] == "thing")
    assert update["thing"]["checkin"]["productId"] == "gw"


async def test_setting_desired_through_the_dashboard_updates_the_shadow(
    cloud: DevCloud, http: aiohttp.ClientSession
) -> None:
    await cloud.create_things(1)  # an unknown thing is 404 (tests/integration/test_devcloud_api)
    desired = {"desired": {"led": True, "fan": 0.5}, "shadow": None}
    headers = await page_headers(http, cloud.dashboard_url)
    url = "/api/things/thing-001/desired"
    async with http.post(url, json=desired, headers=headers) as response:
        assert response.status == 200
        assert (await response.json())["version"] == 1
    admin = cloud.broker.credentials(cloud.broker.admin_identities[0])
    async with ShadowClient(cloud.broker.host, cloud.broker.port, admin) as client:
        document = await client.get("thing-001")
    assert document is not None
    assert document["state"]["desired"] == {"led": True, "fan": 0.5}


async def test_setting_desired_with_an_empty_object_is_refused_with_400(
    cloud: DevCloud, http: aiohttp.ClientSession
) -> None:
    await cloud.create_things(1)
    headers = await page_headers(http, cloud.dashboard_url)
    body = {"desired": {}}
    url = "/api/things/thing-001/desired"
    async with http.post(url, json=body, headers=headers) as response:
        assert response.status == 400


async def test_a_restarted_devcloud_keeps_its_shadows_ca_and_things(tmp_path: Path) -> None:
    state = tmp_path / "state"
    async with running_devcloud(state) as cloud:
        await cloud.create_things(1)
        await cloud.hub.update_desired("thing-001", {"led": True})
        ca_pem = cloud.ca.cert_path.read_bytes()
    async with running_devcloud(state) as cloud:
        assert cloud.ca.cert_path.read_bytes() == ca_pem
        thing = cloud.hub.thing("thing-001")
        assert thing is not None
        assert thing["shadows"][""]["desired"] == {"led": True}


async def test_devcloud_command_prints_a_ready_to_run_config_for_each_thing(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "gateway", "devcloud", "--things", "2"],
        *["--state-dir", str(state), "--http", "127.0.0.1:0", "--https", "127.0.0.1:0"],
        *["--mqtt-port", "0", "--claim", "claim-9=pi-nine"],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    output = []
    try:
        async with asyncio.timeout(20):
            while not output or "Press Ctrl+C" not in output[-1]:
                line = (await process.stdout.readline()).decode()
                assert line, f"devcloud exited early: {''.join(output)}"
                output.append(line)
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(10):
            await process.stdout.read()
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = "".join(output)
    for name in ("thing-001", "thing-002"):
        folder = state / "things" / name
        assert f"edge-gateway run --mock-gpio -c {folder / 'gateway.yaml'}" in text
        assert {"ca.pem", "cert.pem", "privkey.pem", "gateway.yaml"} <= {
            p.name for p in folder.iterdir()
        }
    assert "dashboard      http://127.0.0.1:" in text
    assert json.loads((state / "provision" / "claims.json").read_text()) == {"claim-9": "pi-nine"}
    check = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "gateway", "check-config", "-c"],
        str(state / "things" / "thing-001" / "gateway.yaml"),
        stdout=asyncio.subprocess.PIPE,
    )
    assert await check.wait() == 0
