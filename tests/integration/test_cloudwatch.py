"""Log shipping against moto's CloudWatch Logs server (a real HTTP server on loopback, in a
thread): the group and stream are created, lines arrive in order, survive an outage (a fault
proxy cutting the link) within the buffer's bound, and the oldest are dropped with a counted
warning beyond it; a running gateway ships its own log lines."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import moto.settings
import pytest
import structlog
from moto.server import ThreadedMotoServer
from structlog.testing import capture_logs

from gateway.config.credentials import CloudWatchConfig
from gateway.core.tls import client_context
from gateway.credentials.cloudwatch import CloudWatchError, CloudWatchShipper, LogBuffer
from gateway.credentials.model import AwsCredentials
from gateway.devcloud import MosquittoBroker, ShadowService
from gateway.devcloud.faultproxy import FaultProxy
from gateway.devcloud.pki import DevCA
from gateway.devcloud.provision import ProvisionService
from gateway.ops import logs as log_setup
from gateway.updates.http import HttpClient
from tests.integration.harness import running_gateway, write_config
from tests.integration.test_credentials import TOKEN, provision  # noqa: F401 - fixture

REGION = "us-east-1"
CREDS = AwsCredentials("ASIATESTKEY000000001", "test-secret", "test-token", time.time() + 86_400)


@pytest.fixture(scope="module")
def moto_logs() -> Iterator[tuple[str, int]]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        yield server.get_host_and_port()
    finally:
        server.stop()


@pytest.fixture
async def proxy(moto_logs: tuple[str, int]) -> AsyncIterator[FaultProxy]:
    fault = FaultProxy(*moto_logs)
    await fault.start()
    yield fault
    await fault.stop()


def logs_client(host: str, port: int) -> Any:
    return boto3.client(
        "logs",
        region_name=REGION,
        endpoint_url=f"http://{host}:{port}",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def messages(moto_logs: tuple[str, int], group: str, stream: str) -> list[str]:
    client = logs_client(*moto_logs)
    try:
        answer = client.get_log_events(
            logGroupName=group, logStreamName=stream, startFromHead=True, limit=10_000
        )
    except client.exceptions.ResourceNotFoundException:
        return []
    return [event["message"] for event in answer["events"]]


def shipper_for(port: int, buffer: LogBuffer, group: str) -> CloudWatchShipper:
    settings = CloudWatchConfig(group=group, endpoint=f"http://127.0.0.1:{port}", flush_s=0.05)
    return CloudWatchShipper(
        settings, buffer, stream="pi-kitchen", credentials=lambda: CREDS, region=lambda: REGION
    )


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    async with HttpClient(ssl_context=client_context(None), timeout_s=5) as client:
        yield client


def add_lines(buffer: LogBuffer, first: int, count: int) -> list[str]:
    now = int(time.time() * 1000)
    lines = [json.dumps({"event": "line", "n": n}) for n in range(first, first + count)]
    for offset, line in enumerate(lines):
        buffer.add(line, now + offset)
    return lines


async def test_group_and_stream_are_created_and_lines_arrive_in_order(
    moto_logs: tuple[str, int], http: HttpClient
) -> None:
    group = f"/edge-gateway/{uuid.uuid4().hex[:8]}"
    buffer = LogBuffer(1000, 1 << 20)
    lines = add_lines(buffer, 0, 50)
    shipper = shipper_for(moto_logs[1], buffer, group)
    await shipper.flush(http)
    assert await asyncio.to_thread(messages, moto_logs, group, "pi-kitchen") == lines
    assert len(buffer) == 0 and shipper.sent == 50


async def test_lines_kept_during_an_outage_arrive_in_order_after_it(
    moto_logs: tuple[str, int], proxy: FaultProxy, http: HttpClient
) -> None:
    group = f"/edge-gateway/{uuid.uuid4().hex[:8]}"
    buffer = LogBuffer(1000, 1 << 20)
    shipper = shipper_for(proxy.port, buffer, group)
    before = add_lines(buffer, 0, 5)
    await shipper.flush(http)
    proxy.cut()
    during = add_lines(buffer, 5, 20)
    with pytest.raises(CloudWatchError):
        await shipper.flush(http)
    assert len(buffer) == 20
    proxy.restore()
    await shipper.flush(http)
    got = await asyncio.to_thread(messages, moto_logs, group, "pi-kitchen")
    assert got == before + during


async def test_beyond_the_bound_the_oldest_lines_are_dropped_and_counted(
    moto_logs: tuple[str, int], proxy: FaultProxy, http: HttpClient
) -> None:
    group = f"/edge-gateway/{uuid.uuid4().hex[:8]}"
    buffer = LogBuffer(5, 1 << 20)
    shipper = shipper_for(proxy.port, buffer, group)
    proxy.cut()
    lines = add_lines(buffer, 0, 8)
    with capture_logs() as logs:
        with pytest.raises(CloudWatchError):
            await shipper.flush(http)
        proxy.restore()
        await shipper.flush(http)
    assert await asyncio.to_thread(messages, moto_logs, group, "pi-kitchen") == lines[3:]
    (warning,) = [e for e in logs if e["event"] == "cloudwatch_events_dropped"]
    assert warning["dropped"] == 3 and warning["log_level"] == "warning"


async def test_the_sending_task_ships_what_is_logged_while_it_runs(
    moto_logs: tuple[str, int], proxy: FaultProxy
) -> None:
    group = f"/edge-gateway/{uuid.uuid4().hex[:8]}"
    buffer = LogBuffer(1000, 1 << 20)
    shipper = shipper_for(proxy.port, buffer, group)
    task = asyncio.create_task(shipper.run())
    try:
        first = add_lines(buffer, 0, 3)
        proxy.cut()
        await asyncio.sleep(0.3)  # a few failed flushes
        second = add_lines(buffer, 3, 3)
        proxy.restore()
        async with asyncio.timeout(15):
            while len(await asyncio.to_thread(messages, moto_logs, group, "pi-kitchen")) < 6:
                await asyncio.sleep(0.1)
        got = await asyncio.to_thread(messages, moto_logs, group, "pi-kitchen")
        assert got == first + second
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def assumed_role_credentials(moto_logs: tuple[str, int]) -> AwsCredentials:
    """Temporary credentials of a role allowed to write logs, from moto's IAM and STS."""
    endpoint = f"http://{moto_logs[0]}:{moto_logs[1]}"
    keys = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    iam = boto3.client("iam", region_name=REGION, endpoint_url=endpoint, **keys)
    sts = boto3.client("sts", region_name=REGION, endpoint_url=endpoint, **keys)
    name = f"logs-{uuid.uuid4().hex[:8]}"
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "sts:AssumeRole",
                "Principal": {"Service": "credentials.iot.amazonaws.com"},
            }
        ],
    }
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
    allow = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "logs:*", "Resource": "*"}],
    }
    iam.put_role_policy(RoleName=name, PolicyName="logs", PolicyDocument=json.dumps(allow))
    answer = sts.assume_role(RoleArn=role["Role"]["Arn"], RoleSessionName="pi")["Credentials"]
    return AwsCredentials(
        answer["AccessKeyId"],
        answer["SecretAccessKey"],
        answer["SessionToken"],
        answer["Expiration"].timestamp(),
        REGION,
    )


async def test_moto_verifying_signatures_accepts_ours_and_refuses_a_wrong_secret(
    moto_logs: tuple[str, int], http: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = await asyncio.to_thread(assumed_role_credentials, moto_logs)
    forged = dataclasses.replace(creds, secret_access_key="not-" + creds.secret_access_key)
    group = f"/edge-gateway/{uuid.uuid4().hex[:8]}"
    buffer = LogBuffer(1000, 1 << 20)
    lines = add_lines(buffer, 0, 3)
    settings = CloudWatchConfig(group=group, endpoint=f"http://127.0.0.1:{moto_logs[1]}")
    current = [forged]
    shipper = CloudWatchShipper(
        settings, buffer, stream="pi", credentials=lambda: current[0], region=lambda: REGION
    )
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # check every call
    with pytest.raises(CloudWatchError) as refused:
        await shipper.flush(http)
    assert refused.value.status == 403  # the same call with the right secret passes below
    current[0] = creds
    await shipper.flush(http)
    monkeypatch.undo()
    assert await asyncio.to_thread(messages, moto_logs, group, "pi") == lines


@pytest.fixture
def daemon_logging() -> Iterator[None]:
    """structlog through the standard library, as ``edge-gateway run`` sets it up (restored
    afterwards)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    saved = structlog.get_config()
    configured = log_setup._configured[:]
    log_setup.configure_logging("json", "info", stream=io.StringIO())
    # No caching: a module's logger first used now must not keep this set-up in later tests.
    structlog.configure(cache_logger_on_first_use=False)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**saved)
    log_setup._configured[:] = configured


async def test_a_running_gateway_ships_its_own_log_lines(
    daemon_logging: None,
    provision: tuple[ProvisionService, str, DevCA],  # noqa: F811 - the imported fixture
    moto_logs: tuple[str, int],
    broker: MosquittoBroker,
    shadow_service: ShadowService,
    thing: str,
    tmp_path: Path,
) -> None:
    _, url, ca = provision
    (tmp_path / "token").write_text(TOKEN)
    group = f"/edge-gateway/{uuid.uuid4().hex[:8]}"
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
        """,
    )
    text = path.read_text()
    cloudwatch = f"{{group: {group}, endpoint: 'http://127.0.0.1:{moto_logs[1]}', flush_s: 0.2}}"
    path.write_text(text + f"logging: {{level: info, cloudwatch: {cloudwatch}}}\n")
    async with running_gateway(path, tmp_path / "mock") as running:

        def shipped() -> list[dict[str, Any]]:
            return [json.loads(m) for m in messages(moto_logs, group, thing)]

        async with asyncio.timeout(15):
            while not any(e["event"] == "credentials_refreshed" for e in shipped()):
                await asyncio.sleep(0.2)
        events = [e["event"] for e in shipped()]
        assert events.index("gateway_started") < events.index("credentials_refreshed")
        assert running.gateway.status()["cloudwatch"]["stream"] == thing
        assert all("test-secret" not in json.dumps(e) for e in shipped())
