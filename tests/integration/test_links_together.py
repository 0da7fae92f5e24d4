"""The shadow link and the MindConnect link in one gateway, against the dev cloud (its shadow
service and its MindConnect side share one real mosquitto): a value one link sets through the
device core reaches the other at once, and neither link reports its own value twice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_config
from gateway.core.values import codec_for
from gateway.devcloud.web import DevCloud
from tests.integration.harness import RunningGateway, running_config, until
from tests.integration.test_devcloud_web import running_devcloud
from tests.integration.test_mindconnect import AGENT, agent_cert

pytestmark = pytest.mark.integration

THING = "pi-both"
SETTLE_S = 1.0  # long enough for a second report or point (coalescing is 50 ms and 100 ms)


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[DevCloud]:
    async with running_devcloud(tmp_path / "cloud") as running:
        yield running


@pytest.fixture
async def both(cloud: DevCloud, tmp_path: Path) -> AsyncIterator[tuple[RunningGateway, str]]:
    """A gateway with the shadow link and the MindConnect link, both connected and idle."""
    assert await agent_cert(cloud, tmp_path / "state") == 0
    creds = await asyncio.to_thread(cloud.broker.credentials, THING)
    side = cloud.mindconnect
    path = tmp_path / "gateway.yaml"
    path.write_text(
        f"""\
thing: {THING}
mqtt: {{host: {cloud.broker.host}, port: {cloud.broker.port}, ca: {creds.ca},
       cert: {creds.cert}, key: {creds.key}}}
gpio: {{pin_factory: mock}}
state_dir: {tmp_path / "state"}
admin_socket: {tmp_path / "admin.sock"}
mindconnect:
  tenant: {side.tenant.name}
  host: {side.broker.host}
  port: {side.broker.port}
  ca: {side.broker_ca}
  publish_interval_ms: 100
devices:
  led: {{type: LED, pin: 17, datapoint: Lamp}}
  fan: {{type: PWMLED, pin: 18}}
"""
    )
    config = load_config(path, codec_for=codec_for)
    client_id = side.tenant.client_id(AGENT)
    async with running_config(config, tmp_path) as running:
        await until(lambda: running.gateway.links["mindconnect"].connected)
        await side.wait_for_points(client_id, 1, data_point_id="fan")  # the values at start
        await until(lambda: reported_value(cloud, "led") is False)
        yield running, client_id


def document(cloud: DevCloud) -> dict[str, Any]:
    return cloud.service.store.document(THING) or {}


def reported_value(cloud: DevCloud, name: str) -> Any:
    return document(cloud).get("state", {}).get("reported", {}).get(name)


async def test_a_mindconnect_command_shows_in_the_shadows_reported(
    cloud: DevCloud, both: tuple[RunningGateway, str]
) -> None:
    running, client_id = both
    side = cloud.mindconnect
    sent = await side.send_command(
        client_id, {"commandType": "set", "device": "led", "value": True}
    )
    assert (await side.wait_for_answer(sent.id)).status == "EXECUTED"
    await until(lambda: reported_value(cloud, "led") is True, timeout=2)
    assert running.pin(17).state == 1


async def test_a_mindconnect_command_is_one_point_not_two(
    cloud: DevCloud, both: tuple[RunningGateway, str]
) -> None:
    _, client_id = both
    side = cloud.mindconnect
    sent = await side.send_command(
        client_id, {"commandType": "set", "device": "led", "value": True}
    )
    await side.wait_for_answer(sent.id)
    await until(lambda: any(p.value == "true" for p in side.store.points(client_id, "Lamp")))
    await asyncio.sleep(SETTLE_S)
    assert [p.value for p in side.store.points(client_id, "Lamp")] == ["false", "true"]


async def test_a_shadow_delta_reaches_mindconnect_as_a_point_stamped_when_applied(
    cloud: DevCloud, both: tuple[RunningGateway, str]
) -> None:
    running, client_id = both
    side = cloud.mindconnect
    assert "mindconnect_watch" not in running.gateway._tasks  # nothing polls the values
    before = time.time()
    await cloud.hub.update_desired(THING, {"fan": 0.5})
    await until(lambda: any(p.value == "0.5" for p in side.store.points(client_id, "fan")), 2)
    point = next(p for p in side.store.points(client_id, "fan") if p.value == "0.5")
    assert before - 0.01 <= point.observed_at.timestamp() <= time.time()
    assert running.pin(18).state == pytest.approx(0.5)


async def test_a_shadow_delta_is_reported_once(
    cloud: DevCloud, both: tuple[RunningGateway, str]
) -> None:
    _, client_id = both
    start = document(cloud)["version"]
    version = await cloud.hub.update_desired(THING, {"fan": 0.5})
    assert version == start + 1
    await until(lambda: reported_value(cloud, "fan") == 0.5, timeout=2)
    answered = document(cloud)["version"]
    await until(lambda: any(p.value == "0.5" for p in cloud.mindconnect.store.points(client_id)))
    await asyncio.sleep(SETTLE_S)
    assert answered == version + 1  # one update answered the delta
    assert document(cloud)["version"] == answered  # and no second report of the same value
