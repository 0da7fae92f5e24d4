"""A thing cannot grow the dev cloud's chart history without bound: many keys get at most
MAX_SERIES charts, a flapping key keeps at most MAX_POINTS points (a real thing connection
through mosquitto, the real shadow service and the dashboard's feed)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.devcloud.web import DevCloud
from gateway.devcloud.web.history import MAX_POINTS, MAX_SERIES
from tests.integration.test_devcloud import thing_client
from tests.integration.test_devcloud_web import running_devcloud

pytestmark = pytest.mark.integration
THING = "pi-flood"


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[DevCloud]:
    async with running_devcloud(tmp_path / "cloud") as running:
        yield running


async def report(cloud: DevCloud, updates: list[dict[str, Any]]) -> None:
    """Publish each reported state as the thing, then wait until the dashboard saw the last."""
    async with thing_client(cloud.broker, THING) as device:
        for reported in updates:
            body = json.dumps({"state": {"reported": reported}}).encode()
            await device.publish(f"$aws/things/{THING}/shadow/update", body, qos=1)
    want = updates[-1]
    async with asyncio.timeout(20):
        while True:
            seen = cloud.hub.thing(THING)
            shadow = seen["shadows"].get("") if seen is not None else None
            if shadow is not None and all(shadow["reported"].get(k) == v for k, v in want.items()):
                return
            await asyncio.sleep(0.05)


async def test_a_thing_reporting_hundreds_of_keys_gets_a_bounded_number_of_charts(
    cloud: DevCloud,
) -> None:
    await report(cloud, [{f"k{i}": i for i in range(300)}])
    thing = cloud.hub.thing(THING)
    assert thing is not None
    assert len(thing["history"][""]) == MAX_SERIES


async def test_a_flapping_key_keeps_only_the_newest_points(cloud: DevCloud) -> None:
    flips = [{"flap": index % 2 == 0, "n": index} for index in range(MAX_POINTS + 100)]
    await report(cloud, flips)
    thing = cloud.hub.thing(THING)
    assert thing is not None
    points = thing["history"][""]["n"]["reported"]
    assert len(points) == MAX_POINTS
    assert [value for _, value in points[-3:]] == [
        float(MAX_POINTS + 97),
        MAX_POINTS + 98.0,
        MAX_POINTS + 99.0,
    ]
    assert len(thing["history"][""]["flap"]["reported"]) == MAX_POINTS
