"""Temporary AWS credentials end to end: Ioto's getCreds (the dev cloud's Provision API) and
AWS IoT's role-alias credentials provider (a local server demanding mutual TLS), both over
real HTTPS; refreshing on an injected clock; the stored copy; and the ways local programs get
them, checked with a real botocore session: ``credential_process`` and the container
credential provider's loopback endpoint."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from aiohttp import web
from botocore.exceptions import CredentialRetrievalError
from structlog.testing import capture_logs

from gateway.config.credentials import CredentialsRetryConfig, GetCredsConfig, RoleAliasConfig
from gateway.core.tls import server_context
from gateway.credentials import store
from gateway.credentials.model import AwsCredentials, CredentialsError, iso8601
from gateway.credentials.provider import CredentialsAuthError, CredentialsProvider
from gateway.credentials.serving import CREDENTIALS_PATH, CredentialsServer
from gateway.devcloud import MosquittoBroker, ShadowService
from gateway.devcloud.pki import Credentials, DevCA
from gateway.devcloud.provision import ProvisionService, provision_app, server_ssl_context
from tests.integration.harness import running_gateway, write_config

TOKEN = "device-token-7f3c0042"
EDGE_GATEWAY = str(Path(sys.executable).parent / "edge-gateway")


class FakeTime:
    """A wall clock the provider reads, moved on by the provider's own sleeps."""

    def __init__(self) -> None:
        self.now = time.time()
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0.005)  # let the test look between two steps


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def until(condition: Callable[[], bool], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.fixture
async def provision(tmp_path: Path) -> AsyncIterator[tuple[ProvisionService, str, DevCA]]:
    """The dev cloud's Provision API over HTTPS, requiring TOKEN on getCreds."""
    ca = DevCA.load_or_create(tmp_path / "ca")
    server = ca.issue("localhost", tmp_path / "server", server=True)
    service = ProvisionService(tmp_path / "provision", ca, endpoint="127.0.0.1", port=8883)
    service.prepare()
    service.creds_token = TOKEN
    runner = web.AppRunner(provision_app(service), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl_context(server))
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield service, f"https://127.0.0.1:{port}/provision/getCreds", ca
    finally:
        await runner.cleanup()


def getcreds_provider(
    tmp_path: Path, url: str, ca: DevCA, fake: FakeTime | None = None, token: str = TOKEN
) -> CredentialsProvider:
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    settings = GetCredsConfig(
        source="getcreds",
        url=url,
        token_file=token_file,
        ca=ca.cert_path,
        retry=CredentialsRetryConfig(min_s=5, max_s=300),
    )
    options: dict[str, Any] = {} if fake is None else {"clock": fake.clock, "sleep": fake.sleep}
    return CredentialsProvider(
        settings,
        thing="pi-kitchen",
        tls_files=(tmp_path / "none.pem", tmp_path / "none.key"),
        mqtt_ca=ca.cert_path,
        state_dir=tmp_path / "state",
        **options,
    )


async def test_getcreds_answer_becomes_the_current_credentials(
    provision: tuple[ProvisionService, str, DevCA], tmp_path: Path
) -> None:
    service, url, ca = provision
    provider = getcreds_provider(tmp_path, url, ca)
    creds = await provider.fetch()
    assert creds.access_key_id == service.creds_issued[-1]
    assert creds.region == "us-east-1"
    assert 3500 < creds.expiration - time.time() <= 3600


async def test_no_log_line_holds_a_secret_or_the_token(
    provision: tuple[ProvisionService, str, DevCA], tmp_path: Path
) -> None:
    _, url, ca = provision
    provider = getcreds_provider(tmp_path, url, ca)
    with capture_logs() as logs:
        task = asyncio.create_task(provider.run())
        try:
            await until(lambda: provider.current() is not None)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    creds = provider.current()
    assert creds is not None
    text = json.dumps(logs, default=str)
    assert "credentials_refreshed" in text
    for secret in (creds.secret_access_key, creds.session_token, creds.access_key_id, TOKEN):
        assert secret not in text


async def test_getcreds_with_a_wrong_token_is_an_auth_failure(
    provision: tuple[ProvisionService, str, DevCA], tmp_path: Path
) -> None:
    service, url, ca = provision
    provider = getcreds_provider(tmp_path, url, ca, token="not-the-token")
    with pytest.raises(CredentialsAuthError):
        await provider.fetch()
    assert service.creds_issued == []


@pytest.mark.parametrize(
    "answer",
    [
        {"accessKeyId": "../../etc/passwd", "secretAccessKey": "s", "sessionToken": "t"},
        {**{k: "x" * 20 for k in ("accessKeyId", "secretAccessKey", "sessionToken")}},
        [1, 2, 3],
        {"accessKeyId": "ASIAEXAMPLEKEY000001", "secretAccessKey": "s\r\nX-Evil: 1"},
    ],
    ids=["path-as-key-id", "no-expiry", "not-an-object", "header-injection"],
)
async def test_a_malformed_answer_is_refused_and_the_current_credentials_stay(
    provision: tuple[ProvisionService, str, DevCA],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    answer: Any,
) -> None:
    service, url, ca = provision
    provider = getcreds_provider(tmp_path, url, ca)
    provider.accept(await provider.fetch())
    before = provider.current()
    monkeypatch.setattr(service, "issue_credentials", lambda: answer)
    with pytest.raises(CredentialsError) as refused:
        await provider.fetch()
    assert str(refused.value).startswith(("getCreds answer", "credentials provider answer"))
    assert "X-Evil" not in str(refused.value) and "passwd" not in str(refused.value)
    assert provider.current() == before


async def test_credentials_are_refreshed_twenty_minutes_before_they_expire(
    provision: tuple[ProvisionService, str, DevCA], tmp_path: Path
) -> None:
    service, url, ca = provision
    fake = FakeTime()
    provider = getcreds_provider(tmp_path, url, ca, fake)
    task = asyncio.create_task(provider.run())
    try:
        await until(lambda: provider.fetches >= 2)
        first_wait = fake.sleeps[0]
        assert 3600 - 1200 - 5 <= first_wait <= 3600 - 1200
        current = provider.current()
        assert current is not None
        assert current.access_key_id in service.creds_issued[1:]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_expired_credentials_are_never_served_while_the_source_fails(
    provision: tuple[ProvisionService, str, DevCA], tmp_path: Path
) -> None:
    service, url, ca = provision
    fake = FakeTime()
    provider = getcreds_provider(tmp_path, url, ca, fake)
    task = asyncio.create_task(provider.run())
    try:
        await until(lambda: provider.current() is not None)
        first = provider.current()
        assert first is not None
        service.misbehaviour.getcreds_status = 500
        with capture_logs() as logs:
            await until(lambda: fake.now > first.expiration)
            assert provider.current() is None
            assert provider.snapshot()["credentials"]["valid"] is False
        failures = [e for e in logs if e["event"] == "credentials_fetch_failed"]
        assert failures and all(e["retry_in_s"] <= 300 for e in failures)
        service.creds_lifetime_s = 30 * 86_400  # valid on the fake clock, which ran ahead
        service.misbehaviour.getcreds_status = None
        await until(lambda: provider.current() is not None)
        renewed = provider.current()
        assert renewed is not None and renewed.access_key_id != first.access_key_id
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_refreshed_credentials_are_stored_0600_and_loaded_at_restart(
    provision: tuple[ProvisionService, str, DevCA], tmp_path: Path
) -> None:
    service, url, ca = provision
    provider = getcreds_provider(tmp_path, url, ca)
    task = asyncio.create_task(provider.run())
    try:
        path = store.credentials_path(tmp_path / "state")
        await until(path.exists)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    restarted = getcreds_provider(tmp_path, url, ca)
    task = asyncio.create_task(restarted.run())
    try:
        await until(lambda: restarted.current() is not None)
        current = restarted.current()
        assert current is not None and current.access_key_id == service.creds_issued[0]
        assert len(service.creds_issued) == 1  # no fetch: the stored ones are fresh
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# -- AWS IoT's credentials provider: a role alias over mutual TLS -----------------------------


@pytest.fixture
async def role_alias_server(
    tmp_path: Path,
) -> AsyncIterator[tuple[str, DevCA, list[dict[str, str]]]]:
    """GET /role-aliases/<alias>/credentials, only to a client certificate of the CA whose
    subject is the thing named in x-amzn-iot-thingname (as AWS checks the attachment)."""
    ca = DevCA.load_or_create(tmp_path / "iot-ca")
    server = ca.issue("localhost", tmp_path / "iot-server", server=True)
    seen: list[dict[str, str]] = []

    async def credentials(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        subject = dict(item[0] for item in (peer or {}).get("subject", ()))
        thing = request.headers.get("x-amzn-iot-thingname", "")
        seen.append({"alias": request.match_info["alias"], "thing": thing})
        if subject.get("commonName") != thing:
            return web.json_response({"message": "Access Denied"}, status=403)
        expiration = iso8601(time.time() + 3600)
        answer = {
            "credentials": {
                "accessKeyId": "ASIAROLEALIAS0000001",
                "secretAccessKey": "role-alias-secret",
                "sessionToken": "role-alias-session-token",
                "expiration": expiration,
            }
        }
        return web.json_response(answer)

    app = web.Application()
    app.router.add_get("/role-aliases/{alias}/credentials", credentials)
    context = server_context(server.cert, server.key)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=str(ca.cert_path))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    try:
        yield f"127.0.0.1:{runner.addresses[0][1]}", ca, seen
    finally:
        await runner.cleanup()


def role_alias_provider(
    tmp_path: Path, endpoint: str, ca: DevCA, thing: str, device: Credentials
) -> CredentialsProvider:
    settings = RoleAliasConfig(
        source="role_alias", endpoint=endpoint, role_alias="pi-logs", region="eu-west-1"
    )
    return CredentialsProvider(
        settings,
        thing=thing,
        tls_files=(device.cert, device.key),
        mqtt_ca=ca.cert_path,
        state_dir=tmp_path / "state",
    )


async def test_role_alias_credentials_come_over_mutual_tls_for_the_named_thing(
    role_alias_server: tuple[str, DevCA, list[dict[str, str]]], tmp_path: Path
) -> None:
    endpoint, ca, seen = role_alias_server
    device = ca.issue("pi-kitchen", tmp_path / "device")
    creds = await role_alias_provider(tmp_path, endpoint, ca, "pi-kitchen", device).fetch()
    assert creds.access_key_id == "ASIAROLEALIAS0000001"
    assert creds.session_token == "role-alias-session-token"
    assert creds.region == "eu-west-1"
    assert seen == [{"alias": "pi-logs", "thing": "pi-kitchen"}]


async def test_role_alias_refuses_a_thing_the_certificate_does_not_belong_to(
    role_alias_server: tuple[str, DevCA, list[dict[str, str]]], tmp_path: Path
) -> None:
    endpoint, ca, _ = role_alias_server
    device = ca.issue("pi-kitchen", tmp_path / "device")
    provider = role_alias_provider(tmp_path, endpoint, ca, "pi-garage", device)
    with pytest.raises(CredentialsAuthError):
        await provider.fetch()


async def test_role_alias_without_a_trusted_client_certificate_gets_nothing(
    role_alias_server: tuple[str, DevCA, list[dict[str, str]]], tmp_path: Path
) -> None:
    endpoint, ca, seen = role_alias_server
    stranger = DevCA.load_or_create(tmp_path / "other-ca").issue("pi-kitchen", tmp_path / "x")
    provider = role_alias_provider(tmp_path, endpoint, ca, "pi-kitchen", stranger)
    with pytest.raises(CredentialsError):
        await provider.fetch()
    assert seen == []  # the TLS handshake failed before any request


# -- credential_process: a real botocore session runs `edge-gateway credentials` -------------


def minimal_config(tmp_path: Path, state_dir: Path) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "thing: pi-kitchen\n"
        "mqtt: {host: localhost, ca: ca.pem, cert: cert.pem, key: key.pem}\n"
        f"state_dir: {state_dir}\n"
        f"admin_socket: {tmp_path / 'admin.sock'}\n"
    )
    return path


def botocore_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> botocore.session.Session:
    aws_config = tmp_path / "aws-config"
    aws_config.write_text(f"[profile gw]\ncredential_process = {command}\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(aws_config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    return botocore.session.Session(profile="gw")


def test_credential_process_gives_a_botocore_session_the_stored_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    creds = AwsCredentials("ASIASTOREDKEY0000001", "s3cr3t", "tok3n", time.time() + 3600, None)
    store.save(store.credentials_path(state), creds)
    config = minimal_config(tmp_path, state)
    session = botocore_profile(tmp_path, monkeypatch, f"{EDGE_GATEWAY} credentials -c {config}")
    frozen = session.get_credentials().get_frozen_credentials()
    assert (frozen.access_key, frozen.secret_key, frozen.token) == (
        "ASIASTOREDKEY0000001",
        "s3cr3t",
        "tok3n",
    )


def test_credential_process_with_expired_credentials_fails_with_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    creds = AwsCredentials("ASIASTOREDKEY0000001", "s3cr3t", "tok3n", time.time() - 10, None)
    store.save(store.credentials_path(state), creds)
    config = minimal_config(tmp_path, state)
    result = subprocess.run(
        [EDGE_GATEWAY, "credentials", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "expired" in result.stderr
    assert "Traceback" not in result.stderr and "s3cr3t" not in result.stderr
    session = botocore_profile(tmp_path, monkeypatch, f"{EDGE_GATEWAY} credentials -c {config}")
    with pytest.raises(CredentialRetrievalError):
        session.get_credentials()


def test_the_credentials_command_loads_no_asyncio_aiohttp_or_cryptography(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    creds = AwsCredentials("ASIASTOREDKEY0000001", "s3cr3t", "tok3n", time.time() + 3600, None)
    store.save(store.credentials_path(state), creds)
    config = minimal_config(tmp_path, state)
    probe = (
        "import sys\nfrom gateway.cli.main import main\n"
        f"code = main(['credentials', '-c', {str(config)!r}])\n"
        "heavy = sorted(m for m in ('asyncio', 'aiohttp', 'cryptography') if m in sys.modules)\n"
        "print(heavy, file=sys.stderr)\nsys.exit(code)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0
    assert json.loads(result.stdout)["AccessKeyId"] == "ASIASTOREDKEY0000001"
    assert result.stderr.strip() == "[]"


# -- the container credential provider's endpoint ----------------------------------------------


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, Path, AwsCredentials]]:
    creds = AwsCredentials("ASIASERVEDKEY0000001", "served-secret", "st", time.time() + 3600, None)
    token_file = tmp_path / "token"
    token_file.write_text("a-token-of-sixteen-or-more")
    server = CredentialsServer("a-token-of-sixteen-or-more", lambda: creds)
    ready = asyncio.Event()
    task = asyncio.create_task(server.serve("127.0.0.1", 0, ready))
    await asyncio.wait_for(ready.wait(), 5)
    try:
        yield f"http://127.0.0.1:{server.port}{CREDENTIALS_PATH}", token_file, creds
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_container_endpoint_gives_botocore_the_credentials_with_the_token(
    served: tuple[str, Path, AwsCredentials], monkeypatch: pytest.MonkeyPatch
) -> None:
    uri, token_file, creds = served
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri)
    monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", str(token_file))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(token_file.parent / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(token_file.parent / "no-creds"))

    def resolve() -> Any:
        return botocore.session.Session().get_credentials().get_frozen_credentials()

    frozen = await asyncio.to_thread(resolve)
    assert (frozen.access_key, frozen.secret_key, frozen.token) == (
        creds.access_key_id,
        creds.secret_access_key,
        creds.session_token,
    )


async def raw_get(uri: str, headers: str = "") -> tuple[int, bytes]:
    host, port = uri.split("//")[1].split("/", maxsplit=1)[0].split(":")
    path = "/" + uri.split("//")[1].split("/", 1)[1]
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n".encode())
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return int(answer.split(b" ")[1]), answer.split(b"\r\n\r\n", 1)[1]


@pytest.mark.parametrize(
    ("headers", "status"),
    [("", 401), ("Authorization: wrong-token-wrong-token\r\n", 403)],
    ids=["no-token", "wrong-token"],
)
async def test_container_endpoint_refuses_a_request_without_the_token(
    served: tuple[str, Path, AwsCredentials], headers: str, status: int
) -> None:
    uri, _, creds = served
    code, body = await raw_get(uri, headers)
    assert code == status
    assert creds.secret_access_key.encode() not in body
    assert set(json.loads(body)) == {"code", "message"}


async def test_container_endpoint_answers_only_its_own_path(
    served: tuple[str, Path, AwsCredentials],
) -> None:
    uri, token_file, _ = served
    token = token_file.read_text().strip()
    other = uri.replace(CREDENTIALS_PATH, "/latest/meta-data/")
    code, _ = await raw_get(other, f"Authorization: {token}\r\n")
    assert code == 404


async def test_container_endpoint_refuses_an_oversized_request_unread(
    served: tuple[str, Path, AwsCredentials],
) -> None:
    uri, _, creds = served
    code, body = await raw_get(uri, "X-Padding: " + "a" * 9000 + "\r\n")
    assert code == 431 and creds.secret_access_key.encode() not in body


async def test_container_endpoint_refuses_to_listen_beyond_loopback() -> None:
    server = CredentialsServer("a-token-of-sixteen-or-more", lambda: None)
    with pytest.raises(CredentialsError):
        await server.serve("10.0.0.1", 0)


# -- in the running gateway: getCreds, the admin socket, the loopback endpoint ----------------


async def test_running_gateway_serves_its_credentials_to_the_cli_and_the_endpoint(
    provision: tuple[ProvisionService, str, DevCA],
    broker: MosquittoBroker,
    shadow_service: ShadowService,
    thing: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service, url, ca = provision
    (tmp_path / "token").write_text(TOKEN)
    path = write_config(
        tmp_path,
        broker,
        thing,
        extra=f"""
        credentials:
          source: getcreds
          url: {url}
          token_file: {tmp_path / "token"}
          ca: {ca.cert_path}
          http: {{listen: "127.0.0.1:{free_port()}"}}
        """,
    )
    async with running_gateway(path, tmp_path / "mock") as running:
        gateway = running.gateway
        await until(lambda: gateway.status()["credentials"]["valid"])
        key_id = service.creds_issued[-1]
        # Only the socket named: the CLI asks the daemon.
        result = await asyncio.to_thread(
            subprocess.run,
            [EDGE_GATEWAY, "credentials", "--socket", str(tmp_path / "admin.sock")],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["AccessKeyId"] == key_id
        await asyncio.wait_for(gateway.aws.http_ready.wait(), 5)
        server = gateway.aws.server
        assert server is not None
        token_file = tmp_path / "state" / "aws-credentials.token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o640
        uri = f"http://127.0.0.1:{server.port}{CREDENTIALS_PATH}"
        code, body = await raw_get(uri, f"Authorization: {token_file.read_text().strip()}\r\n")
        assert code == 200 and json.loads(body)["AccessKeyId"] == key_id
        assert "secret" not in json.dumps(gateway.status()["credentials"]).lower()
