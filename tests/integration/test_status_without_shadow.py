"""``edge-gateway status`` of a real gateway that runs MindConnect alone (no shadow link), read
through its admin socket as the command reads it: the clouds that run instead of a thing, and
the device values the device core holds."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from gateway.app import Gateway
from gateway.cli.main import status_lines
from gateway.ops.adminclient import request
from tests.integration.harness import until
from tests.integration.test_mindconnect import agent, cloud  # noqa: F401 (its fixtures)

pytestmark = pytest.mark.integration


async def test_status_of_a_mindconnect_only_gateway_names_its_cloud_and_devices(
    agent: tuple[Gateway, Any, str],  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    gateway, factory, client_id = agent
    factory.pin(4).drive_low()  # press the button (pull-up)
    await until(lambda: gateway.engine.values.get("button") is True)
    reply = await asyncio.to_thread(request, tmp_path / "admin.sock", {"cmd": "status"})
    lines = status_lines(reply)
    assert lines[0] == "no AWS IoT shadow; clouds: mindconnect"
    assert lines[2] == "healthy"
    assert lines[3].startswith(f"mindconnect: connected, client id {client_id}, points sent ")
    assert f"  {'button':<16} true" in lines
    assert f"  {'led':<16} false" in lines
    assert not any("None" in line for line in lines), lines
