"""Issue 19, provisioning and certificates: hostile getCerts and fleet answers, a Provision API
whose certificates never leave the renewal window, a 3 GB "certificate", a TLS 1.1-only broker.

Every attack runs against real parts: a real HTTPS server (aiohttp, TLS from the dev CA)
answering exactly as the Provision API does but with one hostile field, the dev cloud's fleet
responder on real mosquitto, the gateway itself (in-process or as ``python -m gateway run``),
and a real TLS socket that speaks nothing newer than TLS 1.1."""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from gateway.app import build_gateway
from gateway.cli.main import main
from gateway.config import load_config, load_provision_setup
from gateway.devcloud import DevCA, MosquittoBroker, ShadowClient, ShadowService
from gateway.devcloud.provision import server_ssl_context
from gateway.devices.gpio import make_pin_factory
from gateway.errors import ConfigError, ProvisioningError
from gateway.provisioning.provision import provision
from tests.integration.harness import FAST_RECONNECT, reported, running_config, write_config
from tests.integration.test_devcloud_web import running_devcloud

pytestmark = pytest.mark.integration

DEVICES = "devices:\n  led: {type: LED, pin: 17}\n"


# --- a Provision API that answers as documented, with one field chosen by the test ----------


@dataclass
class FakeProvisionApi:
    """``POST /provision/getCerts`` over HTTPS (dev CA): a fresh certificate from the dev CA
    for ``cn``, in the Provision API's answer shape, with ``overrides`` laid over it."""

    ca: DevCA
    directory: Path
    cn: str = "pi-hostile"
    endpoint: str = "127.0.0.1"
    port: int = 8883
    days: float = 365
    overrides: dict[str, Any] = field(default_factory=dict)
    raw: bytes | None = None  # answer these bytes instead (streamed, no Content-Length)
    calls: int = 0
    url: str = ""

    def answer(self) -> dict[str, Any]:
        creds = self.ca.issue(self.cn, self.directory / f"issued-{self.calls}", days=self.days)
        return {
            "accountId": "devcloud",
            "certificate": creds.cert.read_text(),
            "key": creds.key.read_text(),
            "endpoint": self.endpoint,
            "id": "claim-1",
            "port": self.port,
            "thing": self.cn,
            **self.overrides,
        }

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        if self.raw is not None:
            response = web.StreamResponse()
            response.content_type = "application/json"
            response.enable_chunked_encoding()
            await response.prepare(request)
            for start in range(0, len(self.raw), 256 * 1024):
                await response.write(self.raw[start : start + 256 * 1024])
            return response
        return web.json_response(await asyncio.to_thread(self.answer))


@asynccontextmanager
async def provision_api(
    ca: DevCA, directory: Path, **options: Any
) -> AsyncIterator[FakeProvisionApi]:
    api = FakeProvisionApi(ca, directory, **options)
    server = await asyncio.to_thread(ca.issue, "fake-api", directory / "server", server=True)
    app = web.Application()
    app.router.add_post("/provision/getCerts", api.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl_context(server))
    await site.start()
    api.url = f"https://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield api
    finally:
        await runner.cleanup()


def getcerts_config(directory: Path, api: FakeProvisionApi, ca: DevCA) -> Path:
    path = directory / "gateway.yaml"
    path.write_text(
        f"""\
provision:
  getcerts: {{url: "{api.url}", claim_id: claim-1, ca: "{ca.cert_path}", timeout_s: 5}}
mqtt:
  ca: {ca.cert_path}
gpio: {{pin_factory: mock}}
state_dir: state
admin_socket: {directory / "admin.sock"}
{DEVICES}"""
    )
    return path


def nothing_installed(state_dir: Path) -> bool:
    certs = list((state_dir / "certs").glob("*")) if (state_dir / "certs").exists() else []
    return not certs and not (state_dir / "provisioned.yaml").exists()


ANSWER_FROM = r"getCerts answer from https://127\.0\.0\.1:\d+/provision/getCerts"
ANSWER = ANSWER_FROM + ": "  # a field of the answer is at fault


# --- 1. getCerts answers validated before anything is installed -----------------------------


@pytest.mark.parametrize("thing", ["a/b", "#", "+", "..", "x" * 5000, "", 42])
async def test_getcerts_hostile_thing_name_is_refused_naming_the_answer_and_installs_nothing(
    dev_ca: DevCA, tmp_path: Path, thing: Any
) -> None:
    async with provision_api(dev_ca, tmp_path, overrides={"thing": thing}) as api:
        path = getcerts_config(tmp_path, api, dev_ca)
        with pytest.raises(ProvisioningError) as caught:
            await provision(load_provision_setup(path))
    message = str(caught.value)
    assert api.calls == 1
    expected = "has no 'thing'" if thing == "" else "is not a valid thing name"
    assert re.match(ANSWER, message) and expected in message, message  # the answer is named
    assert "gateway.yaml" not in message and len(message) < 300  # 5 KB is not echoed
    assert nothing_installed(tmp_path / "state")


@pytest.mark.parametrize("port", [True, False, 1.0, 8883.0, "8883", 0, 65_536, -1, [8883]])
async def test_getcerts_port_that_is_not_an_integer_port_is_refused_and_installs_nothing(
    dev_ca: DevCA, tmp_path: Path, port: Any
) -> None:
    async with provision_api(dev_ca, tmp_path, overrides={"port": port}) as api:
        path = getcerts_config(tmp_path, api, dev_ca)
        with pytest.raises(ProvisioningError, match=ANSWER + r"port .* is not a TCP port"):
            await provision(load_provision_setup(path))
    assert nothing_installed(tmp_path / "state")


@pytest.mark.parametrize("endpoint", ["evil host", "h/../x", "a" * 300, "-x.example", 7])
async def test_getcerts_endpoint_that_is_not_a_host_name_is_refused_and_installs_nothing(
    dev_ca: DevCA, tmp_path: Path, endpoint: Any
) -> None:
    async with provision_api(dev_ca, tmp_path, overrides={"endpoint": endpoint}) as api:
        path = getcerts_config(tmp_path, api, dev_ca)
        with pytest.raises(ProvisioningError, match=ANSWER + r"endpoint .* not a valid host"):
            await provision(load_provision_setup(path))
    assert nothing_installed(tmp_path / "state")


async def test_getcerts_refusal_leaves_the_next_start_free_to_provision(
    dev_ca: DevCA, tmp_path: Path
) -> None:
    """The run that met the hostile answer exits naming the answer (not exit 2 on the user's
    config); once the API answers properly the next start provisions as if nothing happened."""
    async with provision_api(dev_ca, tmp_path, overrides={"thing": "a/b", "port": True}) as api:
        path = getcerts_config(tmp_path, api, dev_ca)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "run",
            "--mock-gpio",
            "-c",
            str(path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "NOTIFY_SOCKET": ""},
        )
        _, err = await asyncio.wait_for(process.communicate(), timeout=30)
        assert process.returncode == 1, err.decode()
        assert "getCerts answer from" in err.decode() and "'a/b'" in err.decode()
        assert "Traceback" not in err.decode()
        assert nothing_installed(tmp_path / "state")
        assert main(["check-config", "-c", str(path)]) == 2  # still unprovisioned, nothing more
        api.overrides = {}
        new = await provision(load_provision_setup(path))
    assert new.thing == "pi-hostile" and new.port == 8883
    assert load_config(path).thing == "pi-hostile"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"thing": "' + b"x" * (5 * 1024 * 1024) + b'"}', "is longer than the 1048576 bytes"),
        (b"[" * 100_000 + b"]" * 100_000, "nests deeper than 8 levels"),
        (b'{"a": ' * 50 + b"1" + b"}" * 50, "nests deeper than 8 levels"),
        (b"[1, 2]", "is not a JSON object"),
    ],
    ids=["5MB", "100k-deep", "50-deep-object", "array"],
)
async def test_getcerts_answer_too_large_or_too_deep_is_refused_before_parsing(
    dev_ca: DevCA, tmp_path: Path, raw: bytes, expected: str
) -> None:
    async with provision_api(dev_ca, tmp_path, raw=raw) as api:
        path = getcerts_config(tmp_path, api, dev_ca)
        started = time.monotonic()
        with pytest.raises(ProvisioningError, match=f"{ANSWER_FROM} {expected}"):
            await provision(load_provision_setup(path))
    assert time.monotonic() - started < 5
    assert nothing_installed(tmp_path / "state")


@pytest.mark.parametrize("thing", ["a/b", "#", "x" * 5000])
async def test_fleet_registration_with_a_hostile_thing_name_installs_nothing(
    tmp_path: Path, thing: str
) -> None:
    async with running_devcloud(
        tmp_path / "cloud", fleet_templates={"pi": "pi-{SerialNumber}"}
    ) as cloud:
        claim = cloud.fleet.issue_claim("claim-batch-1", tmp_path / "claim")
        cloud.fleet.register_answer_overrides = {"thingName": thing}
        path = tmp_path / "gateway.yaml"
        path.write_text(
            f"""\
provision:
  fleet: {{template: pi, claim_cert: {claim.cert}, claim_key: {claim.key}, timeout_s: 5,
          parameters: {{SerialNumber: "0001"}}}}
mqtt: {{host: {cloud.broker.host}, port: {cloud.broker.port}, ca: {cloud.ca.cert_path}}}
gpio: {{pin_factory: mock}}
state_dir: state
{DEVICES}"""
        )
        with pytest.raises(ProvisioningError) as caught:
            await provision(load_provision_setup(path))
    message = str(caught.value)
    assert message.startswith("RegisterThing answer on $aws/provisioning-templates/pi/")
    assert "thingName" in message and "is not a valid thing name" in message
    assert len(message) < 300
    assert nothing_installed(tmp_path / "state")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("thing: a/b\n", "thing 'a/b' is not a valid thing name"),
        ("thing: pi-1\nmqtt: {host: h.example, port: true}\n", "mqtt.port True is not a TCP port"),
        ("thing: pi-1\nmqtt: {host: 'a b'}\n", "mqtt.host 'a b' is not a valid host"),
        ("thing: pi-1\ndevices: {x: {type: LED, pin: 2}}\n", "unexpected key 'devices'"),
    ],
)
def test_a_bad_provisioned_yaml_is_blamed_on_itself_not_on_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, problem: str
) -> None:
    (tmp_path / "ca.pem").write_text("placeholder")
    path = tmp_path / "gateway.yaml"
    path.write_text(
        'provision:\n  getcerts: {url: "https://p.example/", claim_id: c}\n'
        f"mqtt: {{ca: ca.pem}}\nstate_dir: state\n{DEVICES}"
    )
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "provisioned.yaml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [line] = caught.value.problems
    assert line.startswith(f"{tmp_path / 'state' / 'provisioned.yaml'}: ") and problem in line
    assert "gateway.yaml" not in line
    assert main(["check-config", "-c", str(path)]) == 2
    assert "provisioned.yaml" in capsys.readouterr().err


# --- 2. renewal never loops -------------------------------------------------------------------


async def test_renewal_with_certificates_no_longer_than_the_window_does_not_loop(
    broker: MosquittoBroker,
    dev_ca: DevCA,
    shadow_service: ShadowService,
    shadow_client: ShadowClient,
    tmp_path: Path,
    thing: str,
) -> None:
    """A Provision API issuing 30-day certificates with the default 30-day window: main renewed
    every ~20 ms forever. Now: one renewal, then retries after retry_s, doubling; one warning."""
    async with provision_api(
        dev_ca, tmp_path, cn=thing, endpoint=broker.host, port=broker.port, days=30
    ) as api:
        first = await asyncio.to_thread(dev_ca.issue, thing, tmp_path / "first", days=30)
        path = write_config(tmp_path, broker, thing)
        text = path.read_text().replace(str(broker.credentials(thing).cert), str(first.cert))
        text = text.replace(str(broker.credentials(thing).key), str(first.key))
        text += (
            f'provision:\n  getcerts: {{url: "{api.url}", claim_id: c, ca: "{dev_ca.cert_path}"}}\n'
            "certs: {renew_before_days: 30, retry_s: 0.25}\n"
        )
        path.write_text(text)
        with capture_logs() as logs:
            async with running_config(load_config(path), tmp_path / "mock") as running:
                await asyncio.sleep(2.0)
                calls = api.calls
                at_two_seconds = [entry["event"] for entry in logs]
                # The daemon lives and its pins follow the shadow.
                await shadow_client.update(thing, {"desired": {"led": True}})
                await shadow_client.wait_for(thing, reported("led", True), timeout=10)
                assert running.pin(17).state == 1
    # Renewals at about 0, 0.25, 0.75 and 1.75 s (each plus its reconnect); main: ~20.
    assert 1 <= calls <= 5, calls
    renewed = at_two_seconds.count("certificate_renewed")
    assert calls - 1 <= renewed <= calls  # one may be in flight at the 2 s mark
    assert at_two_seconds.count("mqtt_connected") <= calls + 2
    assert [entry["event"] for entry in logs].count("renewal_window_exceeds_lifetime") == 1
    warning = next(e for e in logs if e["event"] == "renewal_window_exceeds_lifetime")
    assert warning["renew_before_days"] == 30 and warning["lifetime_days"] <= 31.1


# --- 3. certificate files size-checked before reading ---------------------------------------


def sparse_file(path: Path, size: int = 3 * 1024**3) -> Path:
    with path.open("wb") as fh:
        fh.truncate(size)  # no disk used: a hole of 3 GB
    path.chmod(0o600)
    return path


def run_with_rusage(argv: list[str], limit_bytes: int) -> tuple[int, str, int]:
    """Run ``argv`` with its address space capped (so the old code fails with MemoryError
    instead of taking the machine's memory); (exit code, stderr, peak RSS in KB)."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    process = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=cap,  # noqa: PLW1509 - a plain setrlimit before exec
        env={**os.environ, "NOTIFY_SOCKET": ""},
    )
    assert process.stderr is not None
    err = process.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, err, usage.ru_maxrss


@pytest.mark.parametrize("which", ["cert", "key", "ca"])
async def test_a_3gb_certificate_file_is_refused_by_name_without_being_read(
    broker: MosquittoBroker, tmp_path: Path, thing: str, which: str
) -> None:
    path = write_config(tmp_path, broker, thing)
    creds = broker.credentials(thing)
    original = {"cert": creds.cert, "key": creds.key, "ca": creds.ca}[which]
    huge = sparse_file(tmp_path / f"huge-{which}.pem")
    path.write_text(path.read_text().replace(f": {original}\n", f": {huge}\n"))
    argv = [sys.executable, "-m", "gateway", "run", "--mock-gpio", "-c", str(path)]
    code, err, peak_kb = await asyncio.to_thread(run_with_rusage, argv, 2 * 1024**3)
    assert code == 1, err
    assert str(huge) in err and "3 GB" in err and "at most 1 MB" in err, err
    assert "Traceback" not in err and "MemoryError" not in err
    assert peak_kb < 300 * 1024  # a few tens of MB: the file was never read


async def test_a_3gb_provision_api_ca_bundle_is_refused_by_name(
    dev_ca: DevCA, tmp_path: Path
) -> None:
    huge = sparse_file(tmp_path / "huge-ca.pem")
    async with provision_api(dev_ca, tmp_path) as api:
        path = getcerts_config(tmp_path, api, dev_ca)
        path.write_text(path.read_text().replace(f'ca: "{dev_ca.cert_path}"', f'ca: "{huge}"'))
        started = time.monotonic()
        with pytest.raises(ProvisioningError, match=f"CA bundle {huge} is 3 GB"):
            await provision(load_provision_setup(path))
    assert time.monotonic() - started < 2 and api.calls == 0
    assert nothing_installed(tmp_path / "state")


# --- 4. TLS protocol failures are not certificate refusals -----------------------------------


@contextmanager
def tls_server(ca: DevCA, directory: Path, maximum: ssl.TLSVersion) -> Iterator[int]:
    """A real TLS server on a loopback socket speaking at most ``maximum``; every connection
    gets a handshake (and its alert) from OpenSSL itself. Yields the port."""
    creds = ca.issue("old-broker", directory / "old-broker", server=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(creds.cert, creds.key)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 refuses TLS < 1.2 at level 1+
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    context.maximum_version = maximum
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                pass  # the handshake fails: that is the point
            finally:
                conn.close()

    thread = threading.Thread(target=serve, name="tls-1.1-server", daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


async def until(condition: Callable[[], bool], timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
async def test_a_tls_1_1_only_broker_is_logged_as_a_protocol_failure_not_a_rejected_certificate(
    broker: MosquittoBroker, dev_ca: DevCA, tmp_path: Path, thing: str
) -> None:
    with tls_server(dev_ca, tmp_path, ssl.TLSVersion.TLSv1_1) as port:
        path = write_config(
            tmp_path,
            broker,
            thing,
            port=port,
            mqtt_extra=FAST_RECONNECT + "  connect_timeout_s: 3\n",
        )
        config = load_config(path)
        factory = make_pin_factory("mock")
        gateway = build_gateway(config, pin_factory=factory)
        with capture_logs() as logs:
            task = asyncio.ensure_future(gateway.run())
            try:
                await until(
                    lambda: sum(e["event"] == "mqtt_tls_protocol_failed" for e in logs) >= 2
                )
            finally:
                gateway.stop()
                await asyncio.wait_for(task, 10)
                factory.close()
    events = [entry["event"] for entry in logs]
    assert "mqtt_certificate_rejected" not in events
    failure = next(e for e in logs if e["event"] == "mqtt_tls_protocol_failed")
    assert failure["reason"] == "TLSV1_ALERT_PROTOCOL_VERSION" and failure["port"] == port
    failed = [e for e in logs if e["event"] == "mqtt_connection_failed"]
    assert failed and "not a certificate" in failed[0]["error"]
    assert json.dumps(logs, default=str).count("PRIVATE KEY") == 0
