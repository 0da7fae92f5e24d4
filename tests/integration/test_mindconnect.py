"""The gateway as a MindConnect MQTT agent against the dev cloud's MindConnect side, over real
HTTPS and a real mosquitto: the agent certificate from an app credential, the connection with
the right client id, devices out as time series with their observation times, commands in,
and nothing lost while the broker is away."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from gateway.app import Gateway, build_gateway
from gateway.cli.main import main
from gateway.config import load_config
from gateway.core.values import codec_for
from gateway.devcloud.faultproxy import FaultProxy
from gateway.devcloud.mindconnect import MindConnectSide
from gateway.devcloud.web import DevCloud
from gateway.devices.gpio import make_pin_factory
from tests.integration.harness import until
from tests.integration.test_devcloud_web import running_devcloud

pytestmark = pytest.mark.integration

AGENT = "pi-mc"
DEVICES = """\
devices:
  led: {type: LED, pin: 17, datapoint: Lamp}
  fan: {type: PWMLED, pin: 18}
  button: {type: Button, pin: 4, pull_up: true, events: true}
  temp: {type: CPUTemperature, interval_s: 0.1, datapoint: CpuTemp}
"""


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[DevCloud]:
    async with running_devcloud(tmp_path / "cloud") as running:
        yield running


async def agent_cert(
    cloud: DevCloud, state_dir: Path, *extra: str, app_secret: str | None = None
) -> int:
    """``edge-gateway mindconnect agent-cert`` with the dev tenant's app credential."""
    side = cloud.mindconnect
    secret = state_dir.parent / "app-secret"
    secret.write_text((app_secret or side.tenant.app_secret) + "\n")
    argv = [
        "mindconnect",
        "agent-cert",
        "--name",
        AGENT,
        "--app-id",
        side.tenant.app_id,
        "--app-secret-file",
        str(secret),
        "--tenant",
        side.tenant.name,
        "--gateway-url",
        cloud.provision_url,
        "--ca",
        str(cloud.ca.cert_path),
        "--state-dir",
        str(state_dir),
        *extra,
    ]
    return await asyncio.to_thread(main, argv)


def write_config(directory: Path, side: MindConnectSide, port: int | None = None) -> Path:
    """A MindConnect-only gateway: no thing, no mqtt block."""
    path = directory / "gateway.yaml"
    path.write_text(
        f"""\
gpio: {{pin_factory: mock}}
state_dir: {directory / "state"}
admin_socket: {directory / "admin.sock"}
mindconnect:
  tenant: {side.tenant.name}
  host: {side.broker.host}
  port: {port or side.broker.port}
  ca: {side.broker_ca}
  publish_interval_ms: 100
{DEVICES}"""
    )
    return path


@asynccontextmanager
async def running(path: Path, mock_dir: Path) -> AsyncIterator[tuple[Gateway, Any]]:
    config = load_config(path, codec_for=codec_for)
    factory = make_pin_factory("mock")
    gateway = build_gateway(config, pin_factory=factory, mock_dir=mock_dir)
    task = asyncio.ensure_future(gateway.run())
    try:
        await until(lambda: gateway.links["mindconnect"].connected or task.done())
        if task.done():
            task.result()
        yield gateway, factory
    finally:
        gateway.stop()
        await asyncio.wait_for(task, timeout=10)
        factory.close()


@asynccontextmanager
async def behind_a_proxy(cloud: DevCloud, tmp_path: Path) -> AsyncIterator[tuple[FaultProxy, Path]]:
    """An agent certificate, a fault proxy in front of the broker, and a config through it."""
    side = cloud.mindconnect
    assert await agent_cert(cloud, tmp_path / "state") == 0
    proxy = FaultProxy(side.broker.host, side.broker.port)
    await proxy.start()
    try:
        yield proxy, write_config(tmp_path, side, port=proxy.port)
    finally:
        await proxy.stop()


@pytest.fixture
async def agent(cloud: DevCloud, tmp_path: Path) -> AsyncIterator[tuple[Gateway, Any, str]]:
    """A MindConnect-only gateway with an agent certificate from the dev cloud, connected."""
    assert await agent_cert(cloud, tmp_path / "state") == 0
    async with running(write_config(tmp_path, cloud.mindconnect), tmp_path) as (gw, factory):
        yield gw, factory, cloud.mindconnect.tenant.client_id(AGENT)


def observed(point: Any) -> float:
    stamp: float = point.observed_at.timestamp()
    return stamp


async def test_the_agent_certificate_comes_from_an_app_credential_and_is_installed_0600(
    cloud: DevCloud, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    assert await agent_cert(cloud, state) == 0
    key = state / "certs" / "mindconnect-privkey.pem"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert b"BEGIN CERTIFICATE" in (state / "certs" / "mindconnect-cert.pem").read_bytes()
    assert await agent_cert(cloud, state) == 1  # installed already: only with --force
    assert await agent_cert(cloud, state, "--force") == 0


async def test_a_wrong_app_secret_is_refused_and_nothing_is_installed(
    cloud: DevCloud, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    code = await agent_cert(cloud, state, app_secret="not-the-secret")
    assert code == 1
    assert not (state / "certs" / "mindconnect-privkey.pem").exists()


async def test_the_agent_connects_with_its_client_id_and_a_persistent_session(
    cloud: DevCloud, agent: tuple[Gateway, Any, str]
) -> None:
    gateway, _, client_id = agent
    status = gateway.status()["links"]["mindconnect"]
    assert status["connected"] is True
    assert status["client_id"] == client_id == "devtenant_pi-mc"
    assert "shadow" not in gateway.links  # MindConnect alone: no thing, no mqtt block
    connections = await asyncio.to_thread(cloud.mindconnect.connections)
    mine = [c for c in connections if c.client_id == client_id]
    assert mine and mine[-1].client_id_matches
    assert (mine[-1].clean_session, mine[-1].keepalive) == (False, 60)


async def test_a_press_and_a_sensor_change_arrive_as_time_series_with_observation_times(
    cloud: DevCloud, agent: tuple[Gateway, Any, str]
) -> None:
    gateway, factory, client_id = agent
    side = cloud.mindconnect
    await side.wait_for_points(client_id, 1, data_point_id="button")  # the value at start
    before = time.time()
    factory.pin(4).drive_low()  # pressed (pull-up)
    gateway.bank.drive_mock_input("temp", 47.5)
    pressed = await side.wait_for_points(client_id, 2, data_point_id="button")
    temps = await side.wait_for_points(client_id, 1, data_point_id="CpuTemp")
    await until(lambda: any(p.value == "47.5" for p in side.store.points(client_id, "CpuTemp")))
    press = pressed[-1]
    assert press.value == "true" and press.quality_code == "0"
    assert before - 0.01 <= observed(press) <= time.time()
    assert press.timestamp.endswith("Z") and len(press.timestamp) == len("2026-12-01T00:00:00.000Z")
    assert observed(press) < press.received_at  # stamped when seen, not when sent
    temp = next(p for p in side.store.points(client_id, "CpuTemp") if p.value == "47.5")
    assert before - 0.01 <= observed(temp) <= time.time()
    assert temps  # the sensor's data point is its configured name
    # button has events: true: its press is an event too (after the one of its value at start)
    await until(
        lambda: any(
            e.fields["description"] == "button changed to true"
            for e in side.store.events(client_id)
        )
    )


async def test_a_command_sets_an_output_and_is_answered_executed(
    cloud: DevCloud, agent: tuple[Gateway, Any, str]
) -> None:
    gateway, factory, client_id = agent
    side = cloud.mindconnect
    sent = await side.send_command(
        client_id, {"commandType": "set", "device": "led", "value": True}
    )
    answer = await side.wait_for_answer(sent.id)
    assert answer.status == "EXECUTED"
    assert answer.job_id == sent.job_id
    assert factory.pin(17).state == 1  # the LED is on
    await until(lambda: any(p.value == "true" for p in side.store.points(client_id, "Lamp")))
    status = gateway.status()["links"]["mindconnect"]
    assert status["commands_executed"] == 1


async def test_a_bad_command_is_answered_failed_and_leaves_the_pin_alone(
    cloud: DevCloud, agent: tuple[Gateway, Any, str]
) -> None:
    gateway, factory, client_id = agent
    side = cloud.mindconnect
    fan = factory.pin(18).state
    bad = [
        {"commandType": "set", "device": "fan", "value": 7},
        {"commandType": "set", "device": "fan", "value": "half"},
        {"commandType": "reboot"},
        {"commandType": "set", "device": "nosuch", "value": 1},
    ]
    for payload in bad:
        sent = await side.send_command(client_id, payload)
        answer = await side.wait_for_answer(sent.id)
        assert answer.status == "FAILED"
        assert answer.response["message"]
    assert factory.pin(18).state == fan
    assert gateway.links["mindconnect"].connected
    assert gateway.status()["links"]["mindconnect"]["commands_failed"] == len(bad)


async def test_presses_while_the_broker_is_away_all_arrive_in_order(
    cloud: DevCloud, tmp_path: Path
) -> None:
    side = cloud.mindconnect
    client_id = side.tenant.client_id(AGENT)
    async with (
        behind_a_proxy(cloud, tmp_path) as (proxy, path),
        running(path, tmp_path) as (gateway, factory),
    ):
        link = gateway.links["mindconnect"]
        await side.wait_for_points(client_id, 1, data_point_id="button")
        proxy.cut()
        await until(lambda: not link.connected)
        stamps = []
        for step in range(6):
            if step % 2 == 0:
                factory.pin(4).drive_low()
            else:
                factory.pin(4).drive_high()
            stamps.append(time.time())
            await asyncio.sleep(0.05)
        await until(lambda: gateway.status()["links"]["mindconnect"]["queue_depth"] >= 6)
        proxy.restore()
        points = await side.wait_for_points(client_id, 7, timeout_s=20, data_point_id="button")
    after = [p for p in points if observed(p) >= stamps[0] - 0.01]
    assert [p.value for p in after] == ["true", "false"] * 3
    times = [observed(p) for p in after]
    assert times == sorted(times)
    for stamp, point_time in zip(stamps, times, strict=True):
        assert abs(point_time - stamp) < 0.05  # when pressed, not when the link came back


async def test_an_agent_certificate_of_the_own_tenant_ca_connects_presenting_its_chain(
    cloud: DevCloud, tmp_path: Path
) -> None:
    """The registration-code path: the tenant CA issues the agent's certificate (``certs
    issue``); the agent presents it with the tenant CA as its chain."""
    side = cloud.mindconnect
    ca_dir = side.tenant.ca.cert_path.parent
    argv = ["certs", "issue", "--thing", "pi-own", "--ca-dir", str(ca_dir), "-o", str(tmp_path)]
    assert await asyncio.to_thread(main, argv) == 0
    folder = tmp_path / "pi-own"
    path = write_config(tmp_path, side)
    text = path.read_text().replace(
        "  publish_interval_ms: 100\n",
        f"  publish_interval_ms: 100\n  cert: {folder / 'cert.pem'}\n"
        f"  key: {folder / 'privkey.pem'}\n  chain: {folder / 'issuing-ca.pem'}\n",
    )
    path.write_text(text)
    async with running(path, tmp_path) as (gateway, factory):
        client_id = gateway.status()["links"]["mindconnect"]["client_id"]
        assert client_id == "devtenant_pi-own"
        await side.wait_for_points(client_id, 1, data_point_id="button")  # its value at start
        factory.pin(4).drive_low()
        points = await side.wait_for_points(client_id, 2, data_point_id="button")
    assert points[-1].value == "true"


async def test_the_sample_applications_answer_shape_installs_a_working_certificate(
    tmp_path: Path,
) -> None:
    async with running_devcloud(tmp_path / "cloud", mindconnect_shape="sample") as cloud:
        assert await agent_cert(cloud, tmp_path / "state") == 0
        path = write_config(tmp_path, cloud.mindconnect)
        async with running(path, tmp_path) as (gateway, _):
            assert gateway.links["mindconnect"].connected


async def test_kill_9_with_points_waiting_loses_none_of_them(
    cloud: DevCloud, tmp_path: Path
) -> None:
    from tests.integration.test_resilience import GatewayProcesses

    side = cloud.mindconnect
    client_id = side.tenant.client_id(AGENT)
    async with (
        behind_a_proxy(cloud, tmp_path) as (proxy, config),
        GatewayProcesses(config, tmp_path) as gateways,
    ):

        def link() -> dict[str, Any]:
            status: dict[str, Any] = gateways.admin({"cmd": "status"})
            return dict(status["links"]["mindconnect"])

        first = await gateways.start()
        await side.wait_for_points(client_id, 1, timeout_s=15, data_point_id="button")
        proxy.cut()
        await until(lambda: not link()["connected"])
        for step in range(6):
            gateways.admin({"cmd": "mock_set", "name": "button", "value": step % 2 == 0})
            await asyncio.sleep(0.05)
        await until(lambda: link()["queue_depth"] >= 6)  # persisted, not yet sent
        await gateways.kill_9(first)
        proxy.restore()
        second = await gateways.start()
        await until(
            lambda: (
                len({(p.value, p.timestamp) for p in side.store.points(client_id, "button")}) >= 7
            ),
            timeout=20,
        )
        points = side.store.points(client_id, "button")
        assert await gateways.stop(second) == 0
    # At least once: a message whose acknowledgement the cut swallowed comes again (the same
    # point, same observation time); every press is there once, in order.
    unique = list(dict.fromkeys((p.value, p.timestamp) for p in points))
    presses = unique[1:7]
    assert [value for value, _ in presses] == ["true", "false"] * 3
    assert [stamp for _, stamp in presses] == sorted(stamp for _, stamp in presses)


async def test_hostile_commands_are_dropped_and_never_touch_a_pin(
    cloud: DevCloud, agent: tuple[Gateway, Any, str]
) -> None:
    from tests.integration.harness import admin_client

    gateway, factory, client_id = agent
    side = cloud.mindconnect
    before = {pin: factory.pin(pin).state for pin in (17, 18)}
    topic = f"tc/{side.tenant.name}/{client_id}/i/cmd_v3/c"
    hostile = [
        b"[" * 200_000,  # nesting far beyond any bound
        b"{" + b'"a":' * 5000 + b"1",
        b"\xff\xfe\x00garbage",
        b'{"data": {"jobId": "j", "payload": {"commandType": "set", "device": "led"}}}',
        b" " * 100_000,
    ]
    async with admin_client(side.broker) as admin:
        for payload in hostile:
            await admin.publish(topic, payload, qos=1)
    link = gateway.links["mindconnect"]
    await until(lambda: link.status()["commands_dropped"] == len(hostile))
    assert link.connected
    assert {pin: factory.pin(pin).state for pin in (17, 18)} == before
    sent = await side.send_command(
        client_id, {"commandType": "set", "device": "led", "value": True}
    )
    assert (await side.wait_for_answer(sent.id)).status == "EXECUTED"  # still serving


async def test_agent_cert_takes_tenant_and_state_dir_from_the_config(
    cloud: DevCloud, tmp_path: Path
) -> None:
    side = cloud.mindconnect
    config = write_config(tmp_path, side)
    secret = tmp_path / "app-secret"
    secret.write_text(side.tenant.app_secret)
    argv = ["mindconnect", "agent-cert", "--name", AGENT, "--app-id", side.tenant.app_id]
    argv += ["--app-secret-file", str(secret), "--gateway-url", cloud.provision_url]
    argv += ["--ca", str(cloud.ca.cert_path), "-c", str(config)]
    assert await asyncio.to_thread(main, argv) == 0
    assert (tmp_path / "state" / "certs" / "mindconnect-cert.pem").is_file()
    async with running(config, tmp_path) as (gateway, _):
        assert gateway.status()["links"]["mindconnect"]["client_id"] == "devtenant_pi-mc"
