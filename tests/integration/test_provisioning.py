"""Provisioning and renewal end to end: the dev cloud (real mosquitto, its Provision API over
HTTPS, its fleet-provisioning responder) and the gateway on mock GPIO.

claim -> provisioned -> connected -> shadow synced, for the Provision API and for fleet
provisioning by claim (CSR); renewal while running; every failure leaves no credentials; and
no captured log line ever holds key material."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from aiohttp import web
from cryptography import x509
from structlog.testing import capture_logs

from gateway.app import Gateway
from gateway.config import GatewayConfig, load_config, load_provision_setup
from gateway.devcloud import ShadowClient
from gateway.devcloud.pki import client_ssl_context
from gateway.devcloud.provision import server_ssl_context
from gateway.devcloud.web import DevCloud
from gateway.errors import ProvisioningError
from gateway.provisioning import certs
from gateway.provisioning.provision import provision, provision_at_start
from tests.integration.harness import reported, running_config
from tests.integration.test_devcloud_web import running_devcloud

pytestmark = pytest.mark.integration

DEVICES = """\
devices:
  led:    {type: LED, pin: 17}
  button: {type: Button, pin: 4, pull_up: true}
"""
TEMPLATE = "pi-template"


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[DevCloud]:
    async with running_devcloud(
        tmp_path / "cloud",
        claims={"claim-1": "pi-claimed"},
        fleet_templates={TEMPLATE: "pi-{SerialNumber}"},
    ) as running:
        yield running


@pytest.fixture
async def cloud_app(cloud: DevCloud) -> AsyncIterator[ShadowClient]:
    admin = cloud.broker.credentials(cloud.broker.admin_identities[0])
    async with ShadowClient(cloud.broker.host, cloud.broker.port, admin) as client:
        yield client


def getcerts_config(directory: Path, cloud: DevCloud, claim: str = "claim-1") -> Path:
    """Only a claim id and the devices: thing, endpoint and certificate come from the cloud."""
    path = directory / "gateway.yaml"
    path.write_text(
        f"""\
provision:
  getcerts:
    url: {cloud.provision_url}
    claim_id: {claim}
    ca: {cloud.ca.cert_path}
    timeout_s: 5
mqtt:
  ca: {cloud.ca.cert_path}
  keepalive_s: 30
gpio: {{pin_factory: mock}}
state_dir: state
admin_socket: {directory / "admin.sock"}
{DEVICES}"""
    )
    return path


def fleet_config(
    directory: Path,
    cloud: DevCloud,
    claim: tuple[Path, Path],
    *,
    serial: str | None = "0001",
    template: str = TEMPLATE,
    certs_block: str = "",
    port: int | None = None,
) -> Path:
    """Only a claim certificate, the endpoint and the devices."""
    parameters = f"    parameters: {{SerialNumber: '{serial}'}}\n" if serial else ""
    path = directory / "gateway.yaml"
    path.write_text(
        f"""\
provision:
  fleet:
    template: {template}
    claim_cert: {claim[0]}
    claim_key: {claim[1]}
    timeout_s: 3
{parameters}mqtt:
  host: {cloud.broker.host}
  port: {port or cloud.broker.port}
  ca: {cloud.ca.cert_path}
  keepalive_s: 30
{certs_block}gpio: {{pin_factory: mock}}
state_dir: state
admin_socket: {directory / "admin.sock"}
{DEVICES}"""
    )
    return path


def issue_claim(cloud: DevCloud, directory: Path, name: str = "claim-batch-1") -> tuple[Path, Path]:
    creds = cloud.fleet.issue_claim(name, directory / "claim")
    return creds.cert, creds.key


@asynccontextmanager
async def running_gateway(config: GatewayConfig, directory: Path) -> AsyncIterator[Gateway]:
    async with running_config(config, directory / "mock") as running:
        yield running.gateway


def no_credentials(state_dir: Path) -> bool:
    leftovers = list((state_dir / "certs").glob("*")) if (state_dir / "certs").exists() else []
    return not leftovers and not (state_dir / "provisioned.yaml").exists()


def assert_no_key_material(logs: list[dict[str, Any]]) -> None:
    text = json.dumps(logs, default=str)
    assert "PRIVATE KEY" not in text
    assert "certificateOwnershipToken" not in text


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


# --- Provision API --------------------------------------------------------------------------


async def test_claim_id_to_synced_thing_via_the_provision_api(
    cloud: DevCloud, cloud_app: ShadowClient, tmp_path: Path
) -> None:
    path = getcerts_config(tmp_path, cloud)
    setup = load_provision_setup(path)
    assert setup.needs_provisioning
    with capture_logs() as logs:
        await provision_at_start(setup)
        state = tmp_path / "state"
        key = state / "certs" / "privkey.pem"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assigned = (state / "provisioned.yaml").read_text()
        assert "thing: pi-claimed" in assigned and str(cloud.broker.port) in assigned
        config = load_config(path)  # provisioned.yaml completes the config
        assert config.thing == "pi-claimed" and config.mqtt.host == cloud.broker.host
        assert not load_provision_setup(path).needs_provisioning
        async with running_gateway(config, tmp_path) as gateway:
            await cloud_app.update("pi-claimed", {"desired": {"led": True}})
            await cloud_app.wait_for("pi-claimed", reported("led", True), timeout=5)
            assert gateway.bank.read("led") is True
    assert_no_key_material(logs)


async def test_explicit_config_wins_over_provisioned_yaml(cloud: DevCloud, tmp_path: Path) -> None:
    path = getcerts_config(tmp_path, cloud)
    await provision_at_start(load_provision_setup(path))
    path.write_text(path.read_text() + "thing: my-own-name\n")
    assert load_config(path).thing == "my-own-name"


async def test_unknown_claim_id_is_a_clear_error_and_writes_nothing(
    cloud: DevCloud, tmp_path: Path
) -> None:
    setup = load_provision_setup(getcerts_config(tmp_path, cloud, claim="nobody"))
    with capture_logs() as logs, pytest.raises(ProvisioningError, match=r"claim id 'nobody'.*404"):
        await provision(setup)
    assert no_credentials(tmp_path / "state")
    assert_no_key_material(logs)


@asynccontextmanager
async def fake_provision_api(cloud: DevCloud, tmp_path: Path, handler: Any) -> AsyncIterator[str]:
    """An HTTPS server (dev CA certificate) answering getCerts with ``handler``."""
    creds = await asyncio.to_thread(cloud.ca.issue, "fake-api", tmp_path / "fake", server=True)
    app = web.Application()
    app.router.add_post("/provision/getCerts", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl_context(creds))
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("status", "expected"),
    [(500, "server error \\(HTTP 500\\)"), (403, "not authorised"), (400, "request refused")],
)
async def test_http_errors_are_clear_and_write_nothing(
    cloud: DevCloud, tmp_path: Path, status: int, expected: str
) -> None:
    async def answer(_: web.Request) -> web.Response:
        return web.json_response({"error": "nope"}, status=status)

    async with fake_provision_api(cloud, tmp_path, answer) as url:
        path = getcerts_config(tmp_path, cloud)
        path.write_text(path.read_text().replace(cloud.provision_url, url))
        with pytest.raises(ProvisioningError, match=expected):
            await provision(load_provision_setup(path))
    assert no_credentials(tmp_path / "state")


async def test_an_answer_whose_key_does_not_match_writes_nothing(
    cloud: DevCloud, tmp_path: Path
) -> None:
    real = await asyncio.to_thread(cloud.provision.issue_for_claim, "claim-1")
    assert real is not None
    real["key"] = certs.private_key_pem(certs.generate_key()).decode()

    async def answer(_: web.Request) -> web.Response:
        return web.json_response(real)

    async with fake_provision_api(cloud, tmp_path, answer) as url:
        path = getcerts_config(tmp_path, cloud)
        path.write_text(path.read_text().replace(cloud.provision_url, url))
        with capture_logs() as logs, pytest.raises(ProvisioningError, match="does not match"):
            await provision(load_provision_setup(path))
    assert no_credentials(tmp_path / "state")
    assert_no_key_material(logs)


async def test_a_provision_api_that_never_answers_times_out(
    cloud: DevCloud, tmp_path: Path
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers the TLS handshake

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    path = getcerts_config(tmp_path, cloud)
    text = path.read_text().replace(cloud.provision_url, f"https://127.0.0.1:{port}/")
    path.write_text(text.replace("timeout_s: 5", "timeout_s: 0.5"))
    async with server:
        with pytest.raises(ProvisioningError, match=r"no answer within 0\.5 s"):
            await provision(load_provision_setup(path))
    assert no_credentials(tmp_path / "state")


# --- fleet provisioning by claim ------------------------------------------------------------


async def test_claim_certificate_to_synced_thing_via_fleet_provisioning(
    cloud: DevCloud, cloud_app: ShadowClient, tmp_path: Path
) -> None:
    claim = issue_claim(cloud, tmp_path)
    path = fleet_config(tmp_path, cloud, claim)
    setup = load_provision_setup(path)
    # Listen to every provisioning message on the broker: the key must never travel.
    admin = cloud.broker.credentials(cloud.broker.admin_identities[0])
    seen: list[bytes] = []
    tls = await asyncio.to_thread(client_ssl_context, admin)
    async with aiomqtt.Client(cloud.broker.host, cloud.broker.port, tls_context=tls) as spy:
        await spy.subscribe([("$aws/certificates/#", 1), ("$aws/provisioning-templates/#", 1)])

        async def record() -> None:
            async for message in spy.messages:
                seen.append(bytes(message.payload))  # type: ignore[arg-type]

        recorder = asyncio.create_task(record())
        with capture_logs() as logs:
            await provision_at_start(setup)
        await until(lambda: len(seen) >= 4)
        recorder.cancel()
    assert any(b"CERTIFICATE REQUEST" in payload for payload in seen)
    assert not any(b"PRIVATE KEY" in payload for payload in seen)
    assert_no_key_material(logs)

    state = tmp_path / "state"
    cert_pem = (state / "certs" / "cert.pem").read_bytes()
    key_pem = (state / "certs" / "privkey.pem").read_bytes()
    assert certs.key_matches(
        certs.load_certificate(cert_pem, "cert"), certs.load_private_key(key_pem, "key")
    )
    assert certs.key_type(certs.load_private_key(key_pem, "key")) == "EC secp256r1"
    config = load_config(path)
    assert config.thing == "pi-0001"
    async with running_gateway(config, tmp_path) as gateway:
        await cloud_app.update("pi-0001", {"desired": {"led": True}})
        await cloud_app.wait_for("pi-0001", reported("led", True), timeout=5)
        assert gateway.bank.read("led") is True


async def test_the_claim_certificate_cannot_touch_shadows(cloud: DevCloud, tmp_path: Path) -> None:
    creds = cloud.fleet.issue_claim("claim-nosy", tmp_path / "claim")
    admin = cloud.broker.credentials(cloud.broker.admin_identities[0])
    claim_tls = await asyncio.to_thread(client_ssl_context, creds)
    admin_tls = await asyncio.to_thread(client_ssl_context, admin)
    host, port = cloud.broker.host, cloud.broker.port
    async with (
        aiomqtt.Client(host, port, tls_context=admin_tls) as spy,
        aiomqtt.Client(host, port, tls_context=claim_tls) as claim,
    ):
        await spy.subscribe([("$aws/things/pi-0001/shadow/update", 1), ("$aws/certificates/#", 1)])
        await claim.publish("$aws/things/pi-0001/shadow/update", b'{"state": {}}', qos=1)
        await claim.publish("$aws/certificates/create-from-csr/json", b"{}", qos=1)
        async with asyncio.timeout(5):
            message = await anext(aiter(spy.messages))
    # mosquitto drops what the ACL denies: only the provisioning request got through.
    assert message.topic.value == "$aws/certificates/create-from-csr/json"


@pytest.mark.parametrize(
    ("template", "serial", "expected"),
    [
        ("no-such-template", "0001", "RegisterThing.*404 ResourceNotFound"),
        (TEMPLATE, None, "RegisterThing.*400 InvalidParameters.*SerialNumber"),
    ],
)
async def test_rejected_registration_is_clear_and_writes_nothing(
    cloud: DevCloud, tmp_path: Path, template: str, serial: str | None, expected: str
) -> None:
    claim = issue_claim(cloud, tmp_path)
    path = fleet_config(tmp_path, cloud, claim, template=template, serial=serial)
    with capture_logs() as logs, pytest.raises(ProvisioningError, match=expected):
        await provision(load_provision_setup(path))
    assert no_credentials(tmp_path / "state")
    assert_no_key_material(logs)


async def test_no_answer_to_the_csr_times_out_and_writes_nothing(
    cloud: DevCloud, tmp_path: Path
) -> None:
    claim = issue_claim(cloud, tmp_path)
    # An identity the broker does not know as a claim: its requests go nowhere.
    stranger = await asyncio.to_thread(cloud.ca.issue, "stranger", tmp_path / "stranger")
    path = fleet_config(tmp_path, cloud, (stranger.cert, stranger.key))
    assert claim  # the real claim exists but is not used
    with pytest.raises(ProvisioningError, match=r"CreateCertificateFromCsr: no answer.*3 s"):
        await provision(load_provision_setup(path))
    assert no_credentials(tmp_path / "state")


async def test_an_unknown_claim_certificate_is_refused_by_the_broker(
    cloud: DevCloud, tmp_path: Path
) -> None:
    other_ca = certs.create_ca("someone else's CA")
    ca_cert = certs.load_certificate(other_ca[0], "ca")
    ca_key = certs.load_private_key(other_ca[1], "ca key")
    [thing] = certs.thing_batch(ca_cert, ca_key, ["claim-forged"])
    (tmp_path / "forged.pem").write_bytes(thing.cert_pem)
    key = tmp_path / "forged.key"
    key.write_bytes(thing.key_pem)
    key.chmod(0o600)
    path = fleet_config(tmp_path, cloud, (tmp_path / "forged.pem", key))
    with pytest.raises(ProvisioningError, match="fleet provisioning"):
        await provision(load_provision_setup(path))
    assert no_credentials(tmp_path / "state")


# --- renewal --------------------------------------------------------------------------------


async def test_renewal_while_running_swaps_the_pair_and_loses_no_delta(
    cloud: DevCloud, cloud_app: ShadowClient, tmp_path: Path
) -> None:
    claim = issue_claim(cloud, tmp_path)
    # A short-lived first certificate: a day, renewed 2 days before expiry, so at once.
    cloud.fleet.cert_days = 1
    path = fleet_config(
        tmp_path, cloud, claim, certs_block="certs: {renew_before_days: 2, retry_s: 1}\n"
    )
    await provision_at_start(load_provision_setup(path))
    cloud.fleet.cert_days = 365
    config = load_config(path)
    cert_path = config.mqtt.cert
    first = certs.load_certificate(cert_path.read_bytes(), "first")
    with capture_logs() as logs:
        async with running_gateway(config, tmp_path) as gateway:
            # A delta while the renewal runs (it started with the gateway).
            await cloud_app.update("pi-0001", {"desired": {"led": True}})
            await until(lambda: any(e["event"] == "certificate_renewed" for e in logs), 20)
            await cloud_app.wait_for("pi-0001", reported("led", True), timeout=10)
            # ...and one after it, over the new connection.
            await cloud_app.update("pi-0001", {"desired": {"button": None, "led": False}})
            await cloud_app.wait_for("pi-0001", reported("led", False), timeout=10)
            assert gateway.bank.read("led") is False
            status = gateway.status()
            assert status["certificate_days_left"] > 300

            def warning_cleared(doc: dict[str, Any]) -> bool:
                return "cert_expires" not in doc["state"]["reported"].get("gateway", {})

            await cloud_app.wait_for("pi-0001", warning_cleared, timeout=10)
    second = certs.load_certificate(cert_path.read_bytes(), "second")
    assert certs.fingerprint(second) != certs.fingerprint(first)
    assert second.not_valid_after_utc > first.not_valid_after_utc
    assert not cert_path.with_name("cert.pem.old").exists()  # dropped once the new one connected
    assert stat.S_IMODE(config.mqtt.key.stat().st_mode) == 0o600
    events = [e["event"] for e in logs]
    assert "certificate_expires_soon" in events
    started = events.index("certificate_renewal_started")
    assert "mqtt_connected" in events[started:]
    assert_no_key_material(logs)


# --- one command ----------------------------------------------------------------------------


async def test_one_command_takes_a_new_pi_from_claim_to_synced_thing(
    cloud: DevCloud, cloud_app: ShadowClient, tmp_path: Path
) -> None:
    claim = issue_claim(cloud, tmp_path)
    path = fleet_config(tmp_path, cloud, claim, serial="cli-7")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "run",
        "--mock-gpio",
        "-c",
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "NOTIFY_SOCKET": ""},
    )
    try:
        await cloud_app.update("pi-cli-7", {"desired": {"led": True}})
        await cloud_app.wait_for("pi-cli-7", reported("led", True), timeout=30)
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(process.communicate(), timeout=15)
    assert process.returncode == 0, output.decode()
    text = output.decode()
    assert "provisioned" in text and "PRIVATE KEY" not in text


async def test_cli_provision_getcerts_writes_the_pair(cloud: DevCloud, tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "provision",
        "getcerts",
        "--url",
        cloud.provision_url,
        "--claim-id",
        "claim-1",
        "--ca",
        str(cloud.ca.cert_path),
        "--state-dir",
        str(tmp_path / "state"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, err.decode()
    assert "provisioned thing 'pi-claimed'" in out.decode()
    assert b"PRIVATE KEY" not in out + err
    cert = x509.load_pem_x509_certificate((tmp_path / "state/certs/cert.pem").read_bytes())
    assert cert.issuer == cloud.ca.certificate.subject
    # Again without --force: refused, the pair stays.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "provision",
        "getcerts",
        "--url",
        cloud.provision_url,
        "--claim-id",
        "claim-1",
        "--state-dir",
        str(tmp_path / "state"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 1 and "--force" in err.decode()
