"""The dev cloud's MindConnect side over real HTTPS and a real mosquitto: token manager,
agentCertificates, the tenant's ACLs, the store of time series and events, and commands."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import ssl
import stat
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.devcloud.mindconnect import (
    MindConnectSide,
    agent_topic,
    write_agent_credentials,
)
from gateway.devcloud.pki import Credentials, client_ssl_context
from gateway.devcloud.web import DevCloud
from tests.integration.test_devcloud_web import page_headers, running_devcloud

pytestmark = pytest.mark.integration

TENANT = "devtenant"
TOKEN_PATH = "api/technicaltokenmanager/v3/oauth/token"
CERTS_PATH = "api/mindconnectmqtt/v3/agentCertificates"


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[DevCloud]:
    async with running_devcloud(tmp_path / "cloud") as running:
        yield running


@pytest.fixture
async def https(cloud: DevCloud) -> AsyncIterator[aiohttp.ClientSession]:
    """A client that trusts only the dev CA, with the dev cloud's HTTPS address as base URL."""
    tls = ssl.create_default_context(cafile=str(cloud.ca.cert_path))
    connector = aiohttp.TCPConnector(ssl=tls)
    async with aiohttp.ClientSession(cloud.provision_url, connector=connector) as session:
        yield session


async def get_token(https: aiohttp.ClientSession, side: MindConnectSide) -> str:
    headers = {"X-SPACE-AUTH-KEY": side.tenant.auth_key()}
    async with https.post(TOKEN_PATH, json=side.tenant.token_request(), headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        token: str = (await resp.json())["access_token"]
        return token


async def new_agent(
    https: aiohttp.ClientSession, side: MindConnectSide, name: str, folder: Path
) -> tuple[str, Credentials]:
    """Obtain an agent certificate over HTTPS and write it as the tests' agent would."""
    token = await get_token(https, side)
    headers = {"Authorization": f"Bearer {token}"}
    async with https.post(CERTS_PATH, json={"name": name}, headers=headers) as response:
        assert response.status == 201, await response.text()
        answer = await response.json()
    creds = await asyncio.to_thread(
        write_agent_credentials, answer, folder / name, broker_ca=side.broker_ca
    )
    return str(answer["clientId"]), creds


def agent_client(side: MindConnectSide, client_id: str, creds: Credentials) -> aiomqtt.Client:
    """An agent as Siemens' sample connects: its client id, clean session false, keepalive 60."""
    return aiomqtt.Client(
        side.broker.host,
        side.broker.port,
        identifier=client_id,
        protocol=aiomqtt.ProtocolVersion.V311,
        tls_context=client_ssl_context(creds),
        clean_session=False,
        keepalive=60,
        socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
    )


def timeseries(*values: tuple[str, str], timestamp: str = "2026-12-01T10:00:00.100Z") -> bytes:
    body = {
        "timeseries": [
            {
                "timestamp": timestamp,
                "values": [
                    {"dataPointId": point, "value": value, "qualityCode": "0"}
                    for point, value in values
                ],
            }
        ]
    }
    return json.dumps(body).encode()


# --- the token manager ---------------------------------------------------------------------------


async def test_token_endpoint_answers_an_access_token_for_the_app_credentials(
    cloud: DevCloud, https: aiohttp.ClientSession
) -> None:
    side = cloud.mindconnect
    headers = {"X-SPACE-AUTH-KEY": side.tenant.auth_key()}
    async with https.post(TOKEN_PATH, json=side.tenant.token_request(), headers=headers) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert isinstance(body["access_token"], str)
    assert len(body["access_token"]) >= 32
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 1800


async def test_token_endpoint_accepts_the_basic_scheme_of_siemens_documentation(
    cloud: DevCloud, https: aiohttp.ClientSession
) -> None:
    side = cloud.mindconnect
    headers = {"X-SPACE-AUTH-KEY": side.tenant.auth_key("Basic")}
    body = {k: v for k, v in side.tenant.token_request().items() if k != "grant_type"}
    async with https.post(TOKEN_PATH, json=body, headers=headers) as resp:
        assert resp.status == 200


async def test_token_endpoint_refuses_a_wrong_app_secret(
    cloud: DevCloud, https: aiohttp.ClientSession
) -> None:
    side = cloud.mindconnect
    wrong = base64.b64encode(f"{side.tenant.app_id}:not-the-secret".encode()).decode()
    headers = {"X-SPACE-AUTH-KEY": f"Bearer {wrong}"}
    async with https.post(TOKEN_PATH, json=side.tenant.token_request(), headers=headers) as resp:
        assert resp.status == 401
        assert "access_token" not in await resp.json()


async def test_token_endpoint_refuses_a_request_without_credentials(
    cloud: DevCloud, https: aiohttp.ClientSession
) -> None:
    async with https.post(TOKEN_PATH, json=cloud.mindconnect.tenant.token_request()) as resp:
        assert resp.status == 401


async def test_token_endpoint_refuses_right_credentials_asking_for_another_tenant(
    cloud: DevCloud, https: aiohttp.ClientSession
) -> None:
    side = cloud.mindconnect
    body = side.tenant.token_request() | {"userTenant": "othertenant"}
    headers = {"X-SPACE-AUTH-KEY": side.tenant.auth_key()}
    async with https.post(TOKEN_PATH, json=body, headers=headers) as resp:
        assert resp.status == 401


async def test_token_endpoint_refuses_another_grant_type(
    cloud: DevCloud, https: aiohttp.ClientSession
) -> None:
    side = cloud.mindconnect
    body = side.tenant.token_request() | {"grant_type": "password"}
    headers = {"X-SPACE-AUTH-KEY": side.tenant.auth_key()}
    async with https.post(TOKEN_PATH, json=body, headers=headers) as resp:
        assert resp.status == 400


# --- agentCertificates ---------------------------------------------------------------------------


async def test_agent_certificates_refuses_a_request_without_a_valid_token(
    cloud: DevCloud, https: aiohttp.ClientSession
) -> None:
    headers = {"Authorization": "Bearer not-a-token"}
    async with https.post(CERTS_PATH, json={"name": "pi1"}, headers=headers) as response:
        assert response.status == 401
        assert "privateKey" not in await response.text()


async def test_agent_certificate_answer_has_the_documented_fields_and_a_matching_pair(
    cloud: DevCloud, https: aiohttp.ClientSession
) -> None:
    side = cloud.mindconnect
    headers = {"Authorization": f"Bearer {await get_token(https, side)}"}
    body = {"name": "pi1", "owner": "dev@example.com"}
    async with https.post(CERTS_PATH, json=body, headers=headers) as response:
        assert response.status == 201
        answer = await response.json()
    assert set(answer) == {
        "id", "name", "agentName", "owner", "agentId", "clientId", "privateKey", "publicKey",
        "status",
    }  # fmt: skip
    assert answer["clientId"] == answer["agentName"] == f"{TENANT}_pi1"
    assert answer["name"] == "pi1"
    assert answer["status"] == "READY"
    cert = x509.load_pem_x509_certificate(answer["publicKey"].encode())
    key = serialization.load_pem_private_key(answer["privateKey"].encode(), password=None)
    assert answer["privateKey"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert key.public_key() == cert.public_key()
    assert cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value == "pi1"
    assert cert.issuer == side.tenant.ca.certificate.subject
    cert.verify_directly_issued_by(side.tenant.ca.certificate)


async def test_agent_certificate_answer_has_the_sample_shape_when_switched(
    tmp_path: Path,
) -> None:
    async with running_devcloud(tmp_path / "cloud", mindconnect_shape="sample") as cloud:
        tls = ssl.create_default_context(cafile=str(cloud.ca.cert_path))
        async with aiohttp.ClientSession(
            cloud.provision_url, connector=aiohttp.TCPConnector(ssl=tls)
        ) as https:
            headers = {"Authorization": f"Bearer {await get_token(https, cloud.mindconnect)}"}
            async with https.post(CERTS_PATH, json={"name": "pi2"}, headers=headers) as response:
                assert response.status == 201
                answer = await response.json()
    assert set(answer) == {"clientId", "credentials"}
    assert set(answer["credentials"]) == {"certificatePem", "privateKey"}
    assert answer["clientId"] == f"{TENANT}_pi2"
    cert = x509.load_pem_x509_certificate(answer["credentials"]["certificatePem"].encode())
    key = serialization.load_pem_private_key(
        answer["credentials"]["privateKey"].encode(), password=None
    )
    assert key.public_key() == cert.public_key()


@pytest.mark.parametrize("name", ["", "a/b", "x+y", "devcloud-admin", "a" * 65, 7])
async def test_agent_certificates_refuses_a_bad_or_reserved_name(
    cloud: DevCloud, https: aiohttp.ClientSession, name: object
) -> None:
    headers = {"Authorization": f"Bearer {await get_token(https, cloud.mindconnect)}"}
    async with https.post(CERTS_PATH, json={"name": name}, headers=headers) as response:
        assert response.status == 400


async def test_written_agent_credentials_keep_the_key_private(
    cloud: DevCloud, https: aiohttp.ClientSession, tmp_path: Path
) -> None:
    _, creds = await new_agent(https, cloud.mindconnect, "pi1", tmp_path / "agents")
    assert stat.S_IMODE(os.stat(creds.key).st_mode) == 0o600
    assert creds.ca.read_bytes() == cloud.ca.cert_path.read_bytes()


# --- the broker, the store and commands ----------------------------------------------------------


async def test_agent_publishes_time_series_on_its_topic_and_the_store_keeps_them(
    cloud: DevCloud, https: aiohttp.ClientSession, tmp_path: Path
) -> None:
    side = cloud.mindconnect
    client_id, creds = await new_agent(https, side, "pi1", tmp_path)
    async with agent_client(side, client_id, creds) as agent:
        topic = agent_topic(TENANT, client_id, "o/mc_v3/ts")
        await agent.publish(topic, timeseries(("button", "true"), ("temp", "21.5")), qos=1)
        points = await side.wait_for_points(client_id, 2, timeout_s=5)
    assert [(p.data_point_id, p.value, p.quality_code) for p in points] == [
        ("button", "true", "0"),
        ("temp", "21.5", "0"),
    ]
    assert side.store.latest(client_id)["temp"].timestamp == "2026-12-01T10:00:00.100Z"
    assert side.store.latest(client_id)["temp"].observed_at.isoformat() == (
        "2026-12-01T10:00:00.100000+00:00"
    )


async def test_latest_value_is_the_last_observed_not_the_last_received(
    cloud: DevCloud, https: aiohttp.ClientSession, tmp_path: Path
) -> None:
    side = cloud.mindconnect
    client_id, creds = await new_agent(https, side, "pi1", tmp_path)
    topic = agent_topic(TENANT, client_id, "o/mc_v3/ts")
    async with agent_client(side, client_id, creds) as agent:
        await agent.publish(topic, timeseries(("t", "2"), timestamp="2026-12-01T10:00:02.000Z"), 1)
        await agent.publish(topic, timeseries(("t", "1"), timestamp="2026-12-01T10:00:01.000Z"), 1)
        await side.wait_for_points(client_id, 2, timeout_s=5)
    assert side.store.latest(client_id)["t"].value == "2"


async def test_agent_events_are_kept(
    cloud: DevCloud, https: aiohttp.ClientSession, tmp_path: Path
) -> None:
    side = cloud.mindconnect
    client_id, creds = await new_agent(https, side, "pi1", tmp_path)
    event = {
        "id": "7c1e6a3e-4a0f-4f5e-9a36-5d1d2b0f7c11",
        "correlationId": "7c1e6a3e4a0f4f5e9a365d1d2b0f7c11",
        "timestamp": "2026-12-01T10:00:00.000Z",
        "severity": "20",
        "type": "ButtonPressed",
        "description": "button pressed",
        "details": {"device": "button"},
    }
    async with agent_client(side, client_id, creds) as agent:
        topic = agent_topic(TENANT, client_id, "o/mc_v3/e")
        await agent.publish(topic, json.dumps({"events": [event]}), qos=1)
        events = await side.wait_for_events(client_id, 1, timeout_s=5)
    assert dict(events[0].fields) == event


@pytest.mark.parametrize(
    "body",
    [
        {"timeseries": [{"timestamp": "2026-12-01T10:00:00Z", "values": [{"dataPointId": "t"}]}]},
        {"timeseries": [{"timestamp": "yesterday", "values": [
            {"dataPointId": "t", "value": "1", "qualityCode": "0"}]}]},
        {"timeseries": [{"timestamp": "2026-12-01T10:00:00Z", "values": [
            {"dataPointId": "t", "value": 1, "qualityCode": "0"}]}]},
        {"timeseries": []},
        [1, 2],
    ],
)  # fmt: skip
async def test_a_time_series_message_of_another_shape_is_refused_with_its_reason(
    cloud: DevCloud, https: aiohttp.ClientSession, tmp_path: Path, body: Any
) -> None:
    side = cloud.mindconnect
    client_id, creds = await new_agent(https, side, "pi1", tmp_path)
    async with agent_client(side, client_id, creds) as agent:
        await agent.publish(agent_topic(TENANT, client_id, "o/mc_v3/ts"), json.dumps(body), 1)
        await side.store.wait_until(lambda: bool(side.store.refusals(client_id)), timeout_s=5)
    assert side.store.points(client_id) == []
    assert side.store.refusals(client_id)[0].reason


async def test_agent_cannot_publish_on_another_agents_topics(
    cloud: DevCloud, https: aiohttp.ClientSession, tmp_path: Path
) -> None:
    side = cloud.mindconnect
    client_a, creds_a = await new_agent(https, side, "pi-a", tmp_path)
    client_b, _ = await new_agent(https, side, "pi-b", tmp_path)
    async with agent_client(side, client_a, creds_a) as agent:
        await agent.publish(agent_topic(TENANT, client_b, "o/mc_v3/ts"), timeseries(("x", "1")), 1)
        # The broker drops a refused publish silently: a later one of its own marks the time.
        await agent.publish(agent_topic(TENANT, client_a, "o/mc_v3/ts"), timeseries(("y", "1")), 1)
        await side.wait_for_points(client_a, 1, timeout_s=5)
    assert side.store.points(client_b) == []
    assert side.store.agents() == [client_a]


async def test_agent_receives_no_command_of_another_agent(
    cloud: DevCloud, https: aiohttp.ClientSession, tmp_path: Path
) -> None:
    side = cloud.mindconnect
    client_a, creds_a = await new_agent(https, side, "pi-a", tmp_path)
    client_b, _ = await new_agent(https, side, "pi-b", tmp_path)
    async with agent_client(side, client_a, creds_a) as agent:
        # mosquitto 2 grants such subscriptions and checks read access on every delivery.
        await agent.subscribe(agent_topic(TENANT, client_b, "i/cmd_v3/c"), 1)
        await agent.subscribe(f"tc/{TENANT}/#", 1)
        await agent.subscribe(agent_topic(TENANT, client_a, "i/cmd_v3/c"), 1)
        await side.send_command(client_b, {"commandType": "set", "device": "led", "value": 1})
        own = await side.send_command(client_a, {"commandType": "set", "device": "x", "value": 0})
        async with asyncio.timeout(5):
            message = await anext(aiter(agent.messages))
    assert message.topic.value == agent_topic(TENANT, client_a, "i/cmd_v3/c")
    assert json.loads(message.payload)["id"] == own.id  # type: ignore[arg-type]


async def test_command_reaches_the_agent_and_its_answer_is_collected(
    cloud: DevCloud, https: aiohttp.ClientSession, tmp_path: Path
) -> None:
    side = cloud.mindconnect
    client_id, creds = await new_agent(https, side, "pi1", tmp_path)
    async with agent_client(side, client_id, creds) as agent:
        await agent.subscribe(agent_topic(TENANT, client_id, "i/cmd_v3/c"), 1)
        payload = {"commandType": "set", "device": "led", "value": True}
        sent = await side.send_command(client_id, payload)
        async with asyncio.timeout(5):
            message = await anext(aiter(agent.messages))
        command = json.loads(message.payload)  # type: ignore[arg-type]
        assert command == {"id": sent.id, "data": {"jobId": sent.job_id, "payload": payload}}
        answer = {
            "id": "a1",
            "requestId": command["id"],
            "data": {
                "timestamp": "2026-12-01T10:00:00.000Z",
                "jobId": command["data"]["jobId"],
                "status": "EXECUTED",
                "response": {"message": "led set to true"},
            },
        }
        await agent.publish(agent_topic(TENANT, client_id, "o/cmd_v3/u"), json.dumps(answer), 1)
        collected = await side.wait_for_answer(sent.id, timeout_s=5)
    assert collected.status == "EXECUTED"
    assert collected.job_id == sent.job_id
    assert collected.response == {"message": "led set to true"}


async def test_sending_a_command_to_another_tenants_client_id_is_refused(
    cloud: DevCloud,
) -> None:
    from gateway.devcloud.mindconnect import MindConnectRequestError

    with pytest.raises(MindConnectRequestError):
        await cloud.mindconnect.send_command("othertenant_pi1", {"commandType": "set"})


async def test_connections_show_client_id_clean_session_and_keepalive(
    cloud: DevCloud, https: aiohttp.ClientSession, tmp_path: Path
) -> None:
    side = cloud.mindconnect
    client_id, creds = await new_agent(https, side, "pi1", tmp_path)
    async with agent_client(side, client_id, creds):
        pass
    connections = await asyncio.to_thread(side.connections)
    assert [(c.client_id, c.username, c.clean_session, c.keepalive) for c in connections] == [
        (client_id, "pi1", False, 60)
    ]
    assert connections[0].client_id_matches


# --- the dashboard's HTTP API ---------------------------------------------------------------------


@pytest.fixture
async def dashboard(cloud: DevCloud) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cloud.dashboard_url) as session:
        yield session


async def test_dashboard_api_lists_the_tenant_and_issued_agents_without_the_app_secret(
    cloud: DevCloud, https: aiohttp.ClientSession, dashboard: aiohttp.ClientSession
) -> None:
    await new_agent(https, cloud.mindconnect, "pi1", cloud.state_dir / "agents")
    async with dashboard.get("/api/mindconnect") as response:
        assert response.status == 200
        text = await response.text()
    summary = json.loads(text)
    assert summary["tenant"] == TENANT
    assert summary["appId"] == cloud.mindconnect.tenant.app_id
    assert [agent["clientId"] for agent in summary["agents"]] == [f"{TENANT}_pi1"]
    assert cloud.mindconnect.tenant.app_secret not in text


async def test_dashboard_api_sends_a_command_to_a_known_agent(
    cloud: DevCloud,
    https: aiohttp.ClientSession,
    dashboard: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    side = cloud.mindconnect
    client_id, creds = await new_agent(https, side, "pi1", tmp_path)
    headers = await page_headers(dashboard, cloud.dashboard_url)
    payload = {"commandType": "set", "device": "relay", "value": False}
    async with agent_client(side, client_id, creds) as agent:
        await agent.subscribe(agent_topic(TENANT, client_id, "i/cmd_v3/c"), 1)
        path = f"/api/mindconnect/agents/{client_id}/commands"
        body = {"payload": payload, "jobId": "job-1"}
        async with dashboard.post(path, json=body, headers=headers) as response:
            assert response.status == 202
            sent = await response.json()
        async with asyncio.timeout(5):
            message = await anext(aiter(agent.messages))
    command = json.loads(message.payload)  # type: ignore[arg-type]
    assert command == {"id": sent["id"], "data": {"jobId": "job-1", "payload": payload}}


async def test_dashboard_api_refuses_a_command_for_an_unknown_agent(
    cloud: DevCloud, dashboard: aiohttp.ClientSession
) -> None:
    headers = await page_headers(dashboard, cloud.dashboard_url)
    path = f"/api/mindconnect/agents/{TENANT}_nobody/commands"
    async with dashboard.post(path, json={"payload": {}}, headers=headers) as response:
        assert response.status == 404
    assert cloud.mindconnect.store.commands(f"{TENANT}_nobody") == []


async def test_dashboard_api_refuses_a_command_without_the_dashboard_token(
    cloud: DevCloud, https: aiohttp.ClientSession, dashboard: aiohttp.ClientSession
) -> None:
    client_id, _ = await new_agent(https, cloud.mindconnect, "pi1", cloud.state_dir / "agents")
    headers = {"Origin": cloud.dashboard_url.rstrip("/")}
    path = f"/api/mindconnect/agents/{client_id}/commands"
    async with dashboard.post(path, json={"payload": {}}, headers=headers) as response:
        assert response.status == 403
    assert cloud.mindconnect.store.commands(client_id) == []


# --- docs/devcloud.md and `edge-gateway devcloud` ----------------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs" / "devcloud.md"


def test_every_mindconnect_route_is_documented(cloud: DevCloud) -> None:
    from aiohttp import web

    from gateway.devcloud.mindconnect import add_mindconnect_routes
    from gateway.devcloud.web.mindconnect import add_dashboard_routes

    text = DOCS.read_text()
    app = web.Application()
    add_mindconnect_routes(app, cloud.mindconnect)
    add_dashboard_routes(app, cloud.mindconnect)
    routes = [
        f"{route.method} {route.resource.canonical}"
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    ]
    assert len(routes) == 6
    assert [route for route in routes if f"`{route}`" not in text] == []


async def test_the_documented_curl_example_obtains_an_agent_certificate(
    cloud: DevCloud, tmp_path: Path
) -> None:
    section = DOCS.read_text().split("### `POST /api/technicaltokenmanager/v3/oauth/token`", 1)[1]
    script = section.split("```sh\n", 1)[1].split("```", 1)[0]
    script = script.replace("https://127.0.0.1:8443", cloud.provision_url.rstrip("/"))
    script = script.replace("$HOME/.local/state/edge-gateway/devcloud", str(cloud.state_dir))
    process = await asyncio.create_subprocess_exec(
        "bash", "-eu", "-o", "pipefail", "-c", script,
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(30):
        output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()
    assert output.decode().strip() == f"{TENANT}_pi1"
    answer = json.loads((tmp_path / "agent.json").read_text())
    assert answer["publicKey"].startswith("-----BEGIN CERTIFICATE-----")


async def test_devcloud_command_runs_the_tenant_and_answer_shape_it_is_given() -> None:
    state = Path(tempfile.mkdtemp(prefix="egw-mc-", dir="/tmp"))
    devcloud = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "gateway", "devcloud", "--state-dir", str(state)],
        *["--http", "127.0.0.1:0", "--https", "127.0.0.1:0", "--mqtt-port", "0"],
        *["--mindconnect-tenant", "acme", "--mindconnect-shape", "sample"],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert devcloud.stdout is not None
    try:
        lines: list[str] = []
        async with asyncio.timeout(20):
            while not lines or "Press Ctrl+C" not in lines[-1]:
                line = (await devcloud.stdout.readline()).decode()
                assert line, f"devcloud exited early: {''.join(lines)}"
                lines.append(line)
        printed = {
            line.split()[0] + " " + line.split()[1]: line.split()[2]
            for line in lines
            if line.startswith("  ") and len(line.split()) > 2
        }
        gateway, app_id = printed["gateway URL"], printed["app id"]
        assert app_id == "acme-devapp-1.0.0"
        secret = json.loads((state / "mindconnect" / "app.json").read_text())["appSecret"]
        key = base64.b64encode(f"{app_id}:{secret}".encode()).decode()
        body = {
            "appName": "devapp",
            "appVersion": "1.0.0",
            "hostTenant": "acme",
            "userTenant": "acme",
        }
        tls = ssl.create_default_context(cafile=str(state / "ca" / "ca.pem"))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls)) as http:
            headers = {"X-SPACE-AUTH-KEY": f"Bearer {key}"}
            async with http.post(f"{gateway}/{TOKEN_PATH}", json=body, headers=headers) as resp:
                assert resp.status == 200
                token = (await resp.json())["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            url = f"{gateway}/{CERTS_PATH}"
            async with http.post(url, json={"name": "pi1"}, headers=headers) as resp:
                assert resp.status == 201
                answer = await resp.json()
        assert answer["clientId"] == "acme_pi1"
        assert set(answer) == {"clientId", "credentials"}
    finally:
        if devcloud.returncode is None:
            devcloud.send_signal(signal.SIGINT)
            try:
                async with asyncio.timeout(10):
                    await devcloud.wait()
            except TimeoutError:
                devcloud.kill()
                await devcloud.wait()
        shutil.rmtree(state, ignore_errors=True)


# --- an environment's own CA ------------------------------------------------------------------


def own_ca(name: str) -> tuple[x509.Certificate, Any, bytes]:
    from gateway.provisioning import certs

    cert_pem, key_pem = certs.create_ca(name)
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    return cert, key, cert_pem


def own_agent(
    ca: x509.Certificate, ca_key: Any, name: str, folder: Path, side: MindConnectSide
) -> Credentials:
    from gateway.provisioning import certs

    key = certs.generate_key()
    cert = certs.issue_certificate(ca, ca_key, name, key.public_key())
    folder.mkdir(parents=True)
    creds = Credentials(ca=side.broker_ca, cert=folder / "cert.pem", key=folder / "privkey.pem")
    creds.cert.write_bytes(certs.certificate_pem(cert))
    creds.key.write_bytes(certs.private_key_pem(key))
    creds.key.chmod(0o600)
    return creds


async def test_an_agent_of_a_registered_own_ca_publishes_to_its_topics(
    cloud: DevCloud, tmp_path: Path
) -> None:
    from gateway.provisioning import certs

    side = cloud.mindconnect
    ca, ca_key, ca_pem = own_ca("devtenant own CA")
    verification, _ = certs.verification_certificate(ca, ca_key, side.tenant.registration_code)
    await side.register_own_ca(ca_pem, verification)
    creds = own_agent(ca, ca_key, "pi7", tmp_path / "pi7", side)
    client_id = f"{TENANT}_pi7"
    async with agent_client(side, client_id, creds) as agent:
        await agent.publish(agent_topic(TENANT, client_id, "o/mc_v3/ts"), timeseries(("t", "1")), 1)
        await side.wait_for_points(client_id, 1, timeout_s=10)
    assert side.store.latest(client_id)["t"].value == "1"


async def test_an_unregistered_own_ca_cannot_connect(cloud: DevCloud, tmp_path: Path) -> None:
    side = cloud.mindconnect
    ca, ca_key, _ = own_ca("someone else's CA")
    creds = own_agent(ca, ca_key, "pi7", tmp_path / "pi7", side)
    # The handshake fails on the broker's side: the client sees an alert, or no CONNACK.
    with pytest.raises((aiomqtt.MqttError, TimeoutError)):
        async with asyncio.timeout(5), agent_client(side, f"{TENANT}_pi7", creds):
            pass
    assert [c for c in await asyncio.to_thread(side.connections) if c.username == "pi7"] == []


@pytest.mark.parametrize("problem", ["wrong code", "other signer", "not a CA"])
async def test_an_own_ca_without_a_valid_verification_is_refused(
    cloud: DevCloud, problem: str
) -> None:
    from gateway.devcloud.mindconnect import MindConnectRequestError
    from gateway.provisioning import certs

    side = cloud.mindconnect
    ca, ca_key, ca_pem = own_ca("my CA")
    code = side.tenant.registration_code
    if problem == "wrong code":
        verification, _ = certs.verification_certificate(ca, ca_key, "not-the-code")
    elif problem == "other signer":
        other, other_key, _ = own_ca("my CA")  # same name, another key
        verification, _ = certs.verification_certificate(other, other_key, code)
    else:
        verification, _ = certs.verification_certificate(ca, ca_key, code)
        ca_pem = verification  # a leaf certificate offered as the CA
    with pytest.raises(MindConnectRequestError):
        await side.register_own_ca(ca_pem, verification)
    assert side.tenant.own_cas() == []


async def test_at_most_two_own_cas_are_registered(cloud: DevCloud) -> None:
    from gateway.devcloud.mindconnect import MindConnectRequestError
    from gateway.provisioning import certs

    side = cloud.mindconnect
    for index in range(3):
        ca, ca_key, ca_pem = own_ca(f"CA {index}")
        verification, _ = certs.verification_certificate(ca, ca_key, side.tenant.registration_code)
        if index < 2:
            await asyncio.to_thread(side.tenant.register_own_ca, ca_pem, verification)
        else:
            with pytest.raises(MindConnectRequestError, match="at most 2"):
                await asyncio.to_thread(side.tenant.register_own_ca, ca_pem, verification)
    assert len(side.tenant.own_cas()) == 2


async def test_the_documented_own_ca_example_registers_a_ca_whose_agent_can_publish(
    cloud: DevCloud, tmp_path: Path
) -> None:
    section = DOCS.read_text().split("### An environment's own CA", 1)[1]
    script = section.split("```sh\n", 1)[1].split("```", 1)[0]
    program = Path(sys.executable).parent / "edge-gateway"
    script = script.replace("http://127.0.0.1:8080", cloud.dashboard_url.rstrip("/"))
    script = script.replace("$HOME/.local/state/edge-gateway/devcloud", str(cloud.state_dir))
    script = script.replace(".venv/bin/edge-gateway", str(program))
    process = await asyncio.create_subprocess_exec(
        "bash", "-eu", "-o", "pipefail", "-c", script,
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(40):
        output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()
    assert output.decode().strip().splitlines()[-1] == "1"
    side = cloud.mindconnect
    folder = tmp_path / "agents" / "pi7"
    creds = Credentials(ca=side.broker_ca, cert=folder / "cert.pem", key=folder / "privkey.pem")
    client_id = f"{TENANT}_pi7"
    async with agent_client(side, client_id, creds) as agent:
        await agent.publish(agent_topic(TENANT, client_id, "o/mc_v3/ts"), timeseries(("t", "7")), 1)
        await side.wait_for_points(client_id, 1, timeout_s=10)
